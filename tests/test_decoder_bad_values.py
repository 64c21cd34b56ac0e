"""Issue 10, items 2 and 3 (decoder): bad values and names an attacker picks.

A float32 all-NaN frame between valid ones must be rejected before it touches any state
(counted and logged), later activity and reconstructions must be what they would have been
without it, and state that bad values reach some other way must recover by itself. The
decoder's per-frame and per-name structures stay bounded.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import zmq

from cortexcast.core.events import ImagingFrame, SyncEvent, from_message
from cortexcast.core.message import Message
from cortexcast.core.rois import ROIError, from_pixel_lists, save_rois
from cortexcast.decoder.live.loop_stats import MAX_FORWARDED_STAMPS, BusyTimes
from cortexcast.core.runtime import StopSignals
from cortexcast.stream.pubsub import Publisher, Sockets, Subscriber

H = W = 32
N = 20


def _files(tmp_path: Path) -> tuple[Path, Path]:
    from cortexcast.decoder.training.synthetic import write_linear_model

    rng = np.random.default_rng(0)
    ys = [rng.integers(0, H, 4) for _ in range(N)]
    xs = [rng.integers(0, W, 4) for _ in range(N)]
    save_rois(tmp_path / "rois.npz", from_pixel_lists(ys, xs, None, (H, W), block_px=8))
    return tmp_path / "rois.npz", write_linear_model(tmp_path / "m.onnx", neurons=N, window=4,
                                                      lag=2)


def _frames(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(100, 400, (H, W)).astype(np.uint16) for _ in range(n)]


def _settings(tmp_path: Path, **kw):
    from cortexcast.decoder.live.process import DecoderSettings

    rois, model = _files(tmp_path)
    return DecoderSettings(rois=str(rois), model=str(model), **kw)


NAN_FRAME = np.full((H, W), np.nan, np.float32)


@pytest.mark.parametrize("activity", ["dff", "deconvolved"])
def test_feature_pipeline_rejects_a_nan_frame_and_is_unchanged_by_it(tmp_path, activity) -> None:
    from cortexcast.core.rois import load_rois
    from cortexcast.decoder.live.process import feature_pipeline

    settings = _settings(tmp_path, activity=activity)
    rois = load_rois(settings.rois)
    frames = _frames(60)
    clean, dirty = feature_pipeline(settings, rois), feature_pipeline(settings, rois)
    want = [clean(f) for f in frames]
    got = []
    for i, f in enumerate(frames):
        if i == 20:
            with pytest.raises(ROIError, match="not finite"):
                dirty(NAN_FRAME)
            with pytest.raises(ROIError):
                dirty(np.full((H, W), np.inf, np.float64))
        got.append(dirty(f))
    assert all(np.isfinite(a).all() for a in got)
    np.testing.assert_array_equal(np.stack(got), np.stack(want))


def test_feature_pipeline_accepts_finite_float_and_integer_frames_only(tmp_path) -> None:
    from cortexcast.core.rois import load_rois
    from cortexcast.decoder.live.process import feature_pipeline

    settings = _settings(tmp_path)
    fp = feature_pipeline(settings, load_rois(settings.rois))
    f = _frames(1)[0]
    for ok in (f, f.astype(np.int32), f.astype(np.float32), f.astype(np.float64)):
        assert np.isfinite(fp(ok)).all()
    for bad in (f.astype(bool), f.astype(np.complex64), f.astype(object)):
        with pytest.raises(ROIError, match="dtype"):
            fp(bad)
    with pytest.raises(ROIError):
        fp(np.zeros((H, W + 1), np.uint16))


def test_extractor_recovers_from_a_frame_with_some_nan_pixels(tmp_path) -> None:
    from cortexcast.core.rois import load_rois
    from cortexcast.decoder.live.extraction import ActivityExtractor

    rois = load_rois(_settings(tmp_path).rois)
    frames = [f.astype(np.float32) for f in _frames(300)]
    clean, dirty = ActivityExtractor(rois, 30.0), ActivityExtractor(rois, 30.0)
    got, want = [], []
    for i, f in enumerate(frames):
        g = f.copy()
        if i == 30:
            g[5:9, 5:9] = np.nan  # a few bad pixels that got past a check
        if i == 31:
            g[0, 0] = np.inf
        got.append(dirty(g))
        want.append(clean(f))
    assert all(np.isfinite(a).all() for a in got)
    assert np.isfinite(dirty._f0).all()
    # the baseline of neurons that held at frames 30-31 catches up (the time constants)
    diff = np.abs(np.stack(got) - np.stack(want)).max(axis=1)
    assert diff[:30].max() == 0
    assert diff[-20:].max() < 0.05 * max(diff[30:40].max(), 1e-6) or diff[-20:].max() < 1e-3


def test_extractor_resets_a_baseline_that_became_non_finite(tmp_path) -> None:
    from cortexcast.core.rois import load_rois
    from cortexcast.decoder.live.extraction import ActivityExtractor

    rois = load_rois(_settings(tmp_path).rois)
    ex = ActivityExtractor(rois, 30.0)
    frames = _frames(10)
    ex(frames[0])
    ex._f0[:3] = np.nan  # however it got there
    ex._f0[3] = np.inf
    out = [ex(f) for f in frames[1:]]
    assert np.isfinite(ex._f0).all() and all(np.isfinite(a).all() for a in out)


def test_deconvolver_state_stays_finite_after_extreme_values() -> None:
    from cortexcast.decoder.live.deconvolution import OnlineDeconvolver

    rng = np.random.default_rng(3)
    dec = OnlineDeconvolver(5, 30.0)
    for _ in range(30):
        dec(rng.normal(0, 0.1, 5).astype(np.float32))
    dec(np.full(5, 3e38, np.float32))
    dec(np.full(5, -3e38, np.float32))
    dec(np.array([np.nan, np.inf, -np.inf, 0, 0], np.float32))
    outs = [dec(rng.normal(0, 0.1, 5).astype(np.float32)) for _ in range(200)]
    assert np.isfinite(dec.c).all() and np.isfinite(dec._mad).all()
    assert all(np.isfinite(o).all() for o in outs)
    assert np.all(dec.noise_sd < 1.0)  # the noise estimate came back to the input's scale


def test_frame_decoder_reconstructions_unchanged_by_a_rejected_nan_frame(tmp_path) -> None:
    from cortexcast.decoder.live.process import FrameDecoder

    settings = _settings(tmp_path)
    clean, dirty = FrameDecoder(settings), FrameDecoder(settings)
    frames = _frames(40)
    want = [clean(i, f).frame for i, f in enumerate(frames)]
    got = []
    for i, f in enumerate(frames):
        if i == 10:
            with pytest.raises(ROIError):
                dirty(i, NAN_FRAME)
        got.append(dirty(i, f).frame)
    assert all(np.isfinite(g).all() for g in got)
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    # bad activity that reaches decode() some other way: the window recovers
    d = dirty.decode(40, np.full(N, np.nan, np.float32))
    assert np.isfinite(d.frame).all()
    later = [dirty(41 + i, f).frame for i, f in enumerate(frames[:8])]
    assert all(np.isfinite(g).all() for g in later)


def test_frame_decoder_nan_behaviour_keeps_reconstructions_finite(tmp_path) -> None:
    from cortexcast.decoder.live.process import FrameDecoder

    dec = FrameDecoder(_settings(tmp_path))
    for i, f in enumerate(_frames(10)):
        dec.sync.add(i, i, {"pupil": float("nan"), "running": float("inf")})
        assert np.isfinite(dec(i, f).frame).all()


# ----------------------------------------------------------------- the process loop

@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.term()


def test_decoder_loop_counts_a_nan_frame_and_goes_on(tmp_path, ctx) -> None:
    from cortexcast.decoder.live.process import run_decoder

    settings = _settings(tmp_path, frames_from="inproc://daq", publish="inproc://decoder",
                         wait_for=("reconstruction",), sync_wait_s=0,
                         stats_out=str(tmp_path / "decoder.json"))
    stop = StopSignals()
    daq = Publisher("inproc://daq", "daq", context=ctx)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            run_decoder(settings, sockets=Sockets(ctx), stop=stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    sub = Subscriber("inproc://decoder", ["reconstruction"], context=ctx)
    frames = _frames(12)
    try:
        assert daq.wait_for_subscribers({"frames": 1, "sync": 1}, 30), errors
        for i, f in enumerate(frames):
            if i == 5:
                daq.publish_event(ImagingFrame(100, 0.0, NAN_FRAME.copy()))
            daq.publish_event(SyncEvent(i, i / 30, 100 + i))
            daq.publish_event(ImagingFrame(i, i / 30, f))
        got = []
        while len(got) < len(frames) and (msg := sub.recv(timeout_s=20)) is not None:
            got.append(from_message(msg))
    finally:
        stop.request()
        thread.join(30)
        sub.close()
        daq.close()
    assert not thread.is_alive() and not errors
    assert [r.imaging_frame for r in got] == list(range(len(frames)))
    assert all(np.isfinite(r.pixels).all() for r in got)
    stats = json.loads((tmp_path / "decoder.json").read_text())
    assert stats["bad_frames"] == 1 and stats["nonfinite_frames"] == 1
    assert stats["frames_in"] == len(frames) + 1
    assert stats["reconstructions_out"] == len(frames)


class _Pub:
    """Stands in for the decoder's Publisher: keeps what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[object, tuple]] = []

    def publish_event(self, event, *, stamps=(), stage=None) -> None:
        self.sent.append((event, tuple(stamps)))


def _frame_msg(i: int, pixels: np.ndarray, stamps=(), source: str = "daq") -> Message:
    from cortexcast.core.events import to_message

    p = to_message(ImagingFrame(i, i / 30, pixels))
    return Message(p.topic, p.kind, i, source, p.t_acq, p.arrays, tuple(stamps), p.meta)


def test_decoder_loop_structures_stay_bounded(tmp_path, caplog) -> None:
    from cortexcast.decoder.live import process as proc

    settings = _settings(tmp_path, sync_wait_s=0)
    dec = proc.FrameDecoder(settings)
    pub = _Pub()
    counts = {"frames_in": 0, "reconstructions_out": 0, "bad_frames": 0, "bad_sync": 0}
    busy = BusyTimes()
    loop = proc.DecoderLoop(dec, pub, settings, counts, busy)
    frame = _frames(1)[0]
    n = BusyTimes.KEEP + 500
    for i in range(n):
        stamps = tuple((f"evil{i}-{k}" * 3, k) for k in range(50)) + (("daq.pub", 1),)
        loop.on_message(_frame_msg(i, frame, stamps, source=f"src{i}"))
    assert counts["frames_in"] == n
    assert len(busy) == BusyTimes.KEEP
    assert busy.total == n
    pct = busy.percentiles_ms()
    assert pct["n"] == n and pct["p50"] >= 0
    # forwarded stamps: a bounded number, whatever the sender put on the frame
    assert all(len(stamps) <= MAX_FORWARDED_STAMPS + 3 for _, stamps in pub.sent)
    names = {name for _, stamps in pub.sent for name, _ in stamps}
    assert len(names) <= 16, sorted(names)[:20]
    assert len(counts) <= 8, counts
    # bad frames from many sources: counted, logged a bounded number of times
    caplog.clear()
    for i in range(2000):
        loop.on_message(_frame_msg(i, NAN_FRAME, source=f"x{i}"))
    assert counts["bad_frames"] == 2000 and counts["nonfinite_frames"] == 2000
    assert len(counts) <= 8, counts
    assert len([r for r in caplog.records if "not finite" in r.getMessage()]) <= 3
