"""The decoder wired to the rig-frame features: suite2p/CaImAn ROIs, motion correction,
deconvolved activity, and the model card's activity kind."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from scipy import ndimage

from cortexcast.core.config import ConfigError, settings_from_table
from cortexcast.decoder.live.process import DecoderSettings, FrameDecoder
from cortexcast.core.rois import ROIError

from test_motion import _image as field_of_view
from test_roi_loaders import write_caiman, write_suite2p_plane

pytest.importorskip("onnx")


def _model(tmp_path, neurons: int, activity_kind: str | None = None):
    from cortexcast.decoder.training.synthetic import write_linear_model

    path = write_linear_model(tmp_path / "m.onnx", neurons=neurons, window=3, lag=1)
    if activity_kind is not None:
        card_path = path.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card.setdefault("extra", {})["activity_kind"] = activity_kind
        card_path.write_text(json.dumps(card))
    return path


def test_decoder_reads_a_suite2p_folder_and_corrects_motion_with_its_mean_image(tmp_path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    write_suite2p_plane(plane, 128, 160, [(15, 15), (30, 40), (50, 20)], [1, 1, 1])
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    ops["meanImg"] = field_of_view()  # somata on neuropil, as a registered mean image is
    np.save(plane / "ops.npy", ops, allow_pickle=True)
    s = settings_from_table(DecoderSettings, {"rois": str(plane),
                                              "model": str(_model(tmp_path, 3)),
                                              "motion": {"enabled": True, "max_shift_px": 8}})
    dec = FrameDecoder(s)
    assert dec.rois.n_neurons == 3 and dec.motion is not None and dec.motion.ready
    moved = ndimage.shift(ops["meanImg"], (2.0, -3.0), order=1, mode="nearest")
    out = dec(0, moved.astype(np.uint16))
    assert dec.motion.shift == pytest.approx((2.0, -3.0), abs=0.2)
    assert out.activity.shape == (3,) and out.frame.shape == (36, 64)
    with pytest.raises(ROIError, match=r"frames are \(512, 512\) .*plane0.* \(128, 160\)"):
        dec(1, np.zeros((512, 512), np.uint16))


def test_decoder_reads_caiman_and_feeds_deconvolved_activity(tmp_path, caplog) -> None:
    masks = []
    for cy, cx in [(5, 5), (20, 40)]:
        m = np.zeros((32, 48))
        m[cy:cy + 3, cx:cx + 3] = 1.0
        masks.append(m)
    write_caiman(tmp_path / "cnm.hdf5", masks)
    model = _model(tmp_path, 2, activity_kind="dff")
    with caplog.at_level(logging.WARNING, logger="decoder"):
        dec = FrameDecoder(DecoderSettings(rois=str(tmp_path / "cnm.hdf5"), model=str(model),
                                           activity="deconvolved"))
    assert "trained on 'dff' activity but the decoder feeds it 'deconvolved'" in caplog.text
    frame = np.full((32, 48), 200, np.uint16)
    outs = [dec(i, frame).activity for i in range(40)]
    spike = frame.copy()
    spike[5:8, 5:8] = 320  # a transient in neuron 0 only
    out = dec(40, spike).activity
    assert np.allclose(outs[-1], 0) and out[0] > 0.3 and out[1] == 0


def test_no_warning_when_the_activity_kinds_agree(tmp_path, caplog) -> None:
    masks = [np.pad(np.ones((3, 3)), ((2, 27), (2, 43)))]
    write_caiman(tmp_path / "cnm.hdf5", masks)
    with caplog.at_level(logging.WARNING, logger="decoder"):
        FrameDecoder(DecoderSettings(rois=str(tmp_path / "cnm.hdf5"),
                                     model=str(_model(tmp_path, 1, activity_kind="dff"))))
    assert "trained on" not in caplog.text


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ConfigError, match="activity must be"):
        settings_from_table(DecoderSettings, {"rois": "x.npz", "activity": "spikes"})
    with pytest.raises(ConfigError, match="rois_format must be one of"):
        settings_from_table(DecoderSettings, {"rois": "x.npz", "rois_format": "mat"})
    with pytest.raises(ConfigError, match="tau_s"):
        settings_from_table(DecoderSettings, {"rois": "x.npz",
                                              "deconvolution": {"tau_s": -1.0}})
    with pytest.raises(ConfigError, match="unknown key"):
        settings_from_table(DecoderSettings, {"rois": "x.npz", "motion": {"enable": True}})


def test_motion_reference_of_the_wrong_size_is_a_startup_error(tmp_path) -> None:
    masks = [np.pad(np.ones((3, 3)), ((2, 27), (2, 43)))]
    write_caiman(tmp_path / "cnm.hdf5", masks)
    np.save(tmp_path / "ref.npy", np.zeros((64, 64), np.float32))
    with pytest.raises(ROIError, match=r"ref.npy is 64x64 but the ROIs/frames are 32x48"):
        FrameDecoder(settings_from_table(DecoderSettings, {
            "rois": str(tmp_path / "cnm.hdf5"), "model": str(_model(tmp_path, 1)),
            "motion": {"enabled": True, "reference": str(tmp_path / "ref.npy")}}))
