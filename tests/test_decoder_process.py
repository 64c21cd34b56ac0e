"""The decoder process's plain parts: sync bookkeeping and frame decoding without sockets."""

from __future__ import annotations

import numpy as np
import pytest

from decoder.process import DecoderSettings, FrameDecoder, SyncTracker


def test_sync_tracker_maps_known_frames_and_extrapolates() -> None:
    s = SyncTracker()
    assert s.stim_at(5) == -1
    s.add(10, 100)
    s.add(11, 101)
    assert s.stim_at(10) == 100 and s.stim_at(11) == 101
    assert s.stim_at(13) == 103  # not arrived yet: extrapolated at 1 stimulus/imaging frame
    half = SyncTracker(stim_per_imaging=0.25)
    half.add(0, 0)
    assert half.stim_at(8) == 2


def test_sync_tracker_forgets_old_frames() -> None:
    s = SyncTracker(keep=10)
    for i in range(100):
        s.add(i, i + 1000)
    assert s.stim_at(99) == 1099 and len(s._map) == 10


def test_decoder_settings_need_rois() -> None:
    with pytest.raises(ValueError, match="rois"):
        DecoderSettings()


def test_frame_decoder_end_to_end_without_sockets(tmp_path) -> None:
    from decoder.rois import from_pixel_lists, save_rois
    from decoder.training.synthetic import write_linear_model

    n, h, w = 20, 32, 32
    rng = np.random.default_rng(0)
    ys = [rng.integers(0, h, 4) for _ in range(n)]
    xs = [rng.integers(0, w, 4) for _ in range(n)]
    save_rois(tmp_path / "rois.npz", from_pixel_lists(ys, xs, None, (h, w), block_px=8))
    model = write_linear_model(tmp_path / "m.onnx", neurons=n, window=4, lag=2)
    dec = FrameDecoder(DecoderSettings(rois=str(tmp_path / "rois.npz"), model=str(model)))
    dec.sync.add(0, 50)
    out = dec(0, rng.integers(100, 200, (h, w)).astype(np.uint16))
    assert out.activity.shape == (n,) and out.frame.shape == (36, 64)
    assert out.stim_frame == 50 - 2
    assert out.t_extract_ns <= out.t_infer_ns


def test_frame_decoder_rejects_model_roi_mismatch(tmp_path) -> None:
    from decoder.rois import from_pixel_lists, save_rois
    from decoder.training.synthetic import write_linear_model

    save_rois(tmp_path / "rois.npz",
              from_pixel_lists([np.array([1])], [np.array([1])], None, (8, 8), block_px=8))
    model = write_linear_model(tmp_path / "m.onnx", neurons=5, window=2, lag=1)
    with pytest.raises(ValueError, match="expects 5 neurons"):
        FrameDecoder(DecoderSettings(rois=str(tmp_path / "rois.npz"), model=str(model)))
