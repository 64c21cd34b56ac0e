"""The decoder process's plain parts: sync bookkeeping and frame decoding without sockets."""

from __future__ import annotations

import numpy as np
import pytest

from cortexcast.decoder.live.process import DecoderSettings, FrameDecoder, SyncTracker


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
    from cortexcast.core.rois import from_pixel_lists, save_rois
    from cortexcast.decoder.training.synthetic import write_linear_model

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
    from cortexcast.core.rois import from_pixel_lists, save_rois
    from cortexcast.decoder.training.synthetic import write_linear_model

    save_rois(tmp_path / "rois.npz",
              from_pixel_lists([np.array([1])], [np.array([1])], None, (8, 8), block_px=8))
    model = write_linear_model(tmp_path / "m.onnx", neurons=5, window=2, lag=1)
    with pytest.raises(ValueError, match="expects 5 neurons"):
        FrameDecoder(DecoderSettings(rois=str(tmp_path / "rois.npz"), model=str(model)))


# ------------------------------------------------- behaviour and slow (volumetric) imaging
def _slow_rig(tmp_path, rate_hz: float = 8.0, duration_s: float = 4.0):
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.settings import SimSettings
    from cortexcast.core.rois import save_rois
    from cortexcast.decoder.training.synthetic import write_linear_model

    rig = SimulatedRig(SimSettings(n_neurons=100, frame_height=64, frame_width=64,
                                   imaging_rate_hz=rate_hz, paced=False, duration_s=duration_s))
    save_rois(tmp_path / "rois.npz", rig.rois())
    model = write_linear_model(tmp_path / "m.onnx", neurons=rig.n_neurons, window=6, lag=3,
                               behavior=True)
    return rig, tmp_path / "rois.npz", model


def _decode_rig_in_order(rig, dec: FrameDecoder):
    """Feed the rig's events as the decoder process sees them: each frame is decoded once its
    sync (which the rig sends just before it) has arrived. Also returns the training-data view:
    stimulus frame -> (activity, behaviour) of the imaging frame on whose mid-point it was on."""
    from cortexcast.core.events import ImagingFrame, SyncEvent
    from cortexcast.decoder.live.extraction import ActivityExtractor

    ref_extract = ActivityExtractor(rig.rois(), rig.settings.imaging_rate_hz)
    sync, live, rows, n_frames = None, [], {}, 0
    with rig:
        for ev in rig.events():
            if isinstance(ev, SyncEvent):
                sync = ev
                dec.sync.add(ev.imaging_frame, ev.stim_frame, ev.behavior)
            elif isinstance(ev, ImagingFrame):
                act = ref_extract(ev.pixels)
                n_frames += 1
                out = dec(ev.index, ev.pixels)
                live.extend(out.outputs)
                if sync.stim_frame >= 0:
                    rows[sync.stim_frame] = (act, dec.pixels.behavior_vector(sync.behavior))
    return live, rows, n_frames


def test_slow_imaging_feeds_the_model_the_training_datas_30hz_sequence(tmp_path) -> None:
    """At 8 Hz imaging / 30 Hz stimulus every stimulus frame gets one reconstruction, and the
    model sees exactly the rows a 30 Hz-resampled dataset holds (held between imaging frames)."""
    from cortexcast.decoder.live.pixel_decoder import PixelDecoder

    rig, rois, model = _slow_rig(tmp_path)
    dec = FrameDecoder(DecoderSettings(rois=str(rois), model=str(model), frame_rate_hz=8.0,
                                       stim_rate_hz=30.0))
    live, rows, n_frames = _decode_rig_in_order(rig, dec)
    lag = dec.lag
    first, last = min(rows), max(rows)
    assert n_frames == 32 and last - first > 100
    labels = [s for s, _ in live]
    assert labels == list(range(first - lag, last - lag + 1)), labels[:12]
    # the reference: the resampled rows (a stimulus frame no imaging frame saw holds the last)
    ref, held, expected = PixelDecoder(model), None, {}
    for r in range(first, last + 1):
        held = rows.get(r, held)
        expected[r - lag] = ref.push(*held)
    for s, frame in live:
        np.testing.assert_array_equal(frame, expected[s])
    assert dec.pixels.behavior_filled == 0  # every push had the rig's behaviour


def test_equal_rates_stay_one_reconstruction_per_imaging_frame(tmp_path) -> None:
    rig, rois, model = _slow_rig(tmp_path, rate_hz=30.0, duration_s=1.0)
    dec = FrameDecoder(DecoderSettings(rois=str(rois), model=str(model)))
    live, rows, n_frames = _decode_rig_in_order(rig, dec)
    assert len(live) == n_frames == 30
    assert [s for s, _ in live] == [s - dec.lag for s in sorted(rows)]


def _rois_and_behavior_model(tmp_path, rng: np.random.Generator, h: int, w: int,
                              n: int = 20):
    """tmp_path/rois.npz (n random 4-pixel ROIs in an h x w frame) and a linear ONNX model
    for them that takes behaviour; returns the model's path."""
    from cortexcast.core.rois import from_pixel_lists, save_rois
    from cortexcast.decoder.training.synthetic import write_linear_model

    save_rois(tmp_path / "rois.npz", from_pixel_lists(
        [rng.integers(0, h, 4) for _ in range(n)], [rng.integers(0, w, 4) for _ in range(n)],
        None, (h, w), block_px=8))
    return write_linear_model(tmp_path / "m.onnx", neurons=n, window=4, lag=2, behavior=True)


def test_behavior_comes_from_sync_and_falls_back_to_the_card_mean(tmp_path) -> None:
    h, w = 32, 32
    rng = np.random.default_rng(0)
    model = _rois_and_behavior_model(tmp_path, rng, h, w)
    settings = DecoderSettings(rois=str(tmp_path / "rois.npz"), model=str(model))
    img = rng.integers(100, 200, (h, w)).astype(np.uint16)
    beh = {"pupil": 9.0, "running": 20.0, "pupil_x": 1.0, "pupil_y": -2.0}
    outs = []
    for meta in (beh, {**beh, "running": 0.0}, None, dict(zip(
            ("pupil", "running", "pupil_x", "pupil_y"), [5.0, 2.0, 0.0, 0.0]))):
        dec = FrameDecoder(settings)
        dec.sync.add(0, 10, meta)
        outs.append(dec(0, img).frame)
    assert np.abs(outs[0] - outs[1]).max() > 1.0  # running speed reaches the model
    np.testing.assert_allclose(outs[2], outs[3], atol=1e-4)  # none -> the card's mean


@pytest.mark.slow
def test_decoder_process_at_8hz_publishes_one_reconstruction_per_stimulus_frame(
        tmp_path, cli_env, zmq_ctx) -> None:
    """Real daq and decoder processes over ZeroMQ: the same frames as the plain object."""
    import subprocess
    import sys

    from cortexcast.app.bench import free_ports
    from cortexcast.stream.pubsub import Subscriber

    rig, rois, model = _slow_rig(tmp_path)
    expected = {s: f for s, f in _decode_rig_in_order(rig, FrameDecoder(DecoderSettings(
        rois=str(rois), model=str(model), frame_rate_hz=8.0, stim_rate_hz=30.0)))[0]}
    daq, dec = free_ports(2)
    cfg = tmp_path / "rig.toml"
    cfg.write_text(
        f"[daq]\npublish = 'tcp://127.0.0.1:{daq}'\nwait_for = ['frames', 'sync']\n"
        "[daq.sim]\nn_neurons = 100\nframe_height = 64\nframe_width = 64\n"
        "imaging_rate_hz = 8.0\npaced = false\nduration_s = 4.0\n"
        f"[decoder]\nframes_from = 'tcp://127.0.0.1:{daq}'\npublish = 'tcp://127.0.0.1:{dec}'\n"
        f"rois = '{rois}'\nmodel = '{model}'\nframe_rate_hz = 8.0\nstim_rate_hz = 30.0\n"
        "wait_for = ['reconstruction']\nsync_wait_s = 1.0\n"
        f"stats_out = '{tmp_path / 'decoder.json'}'\n")
    sub = Subscriber(f"tcp://127.0.0.1:{dec}", ["reconstruction"], context=zmq_ctx)
    procs = [subprocess.Popen([sys.executable, "-m", "cortexcast", name, "--config", str(cfg)],
                              env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for name in ("decoder", "daq")]
    got = []
    try:
        while len(got) < len(expected) and (msg := sub.recv(timeout_s=10)) is not None:
            got.append(msg)
    finally:
        procs[0].terminate()
        outs = [p.communicate(timeout=60)[0] for p in procs]
    # The daq closes its socket as soon as the sim ends, which may drop its last message or
    # two; everything the decoder got must match the plain object exactly.
    labels = [m.meta["stim_frame"] for m in got]
    assert len(got) >= len(expected) - 8 and labels == sorted(expected)[: len(got)], outs
    for m in got:
        np.testing.assert_array_equal(m.arrays[0], expected[m.meta["stim_frame"]])
    assert {m.meta["imaging_frame"] for m in got} >= set(range(30))
    stats = __import__("json").loads((tmp_path / "decoder.json").read_text())
    # (SIGTERM may land between the last publish and its count)
    assert stats["frames_in"] >= 30 and len(got) - 1 <= stats["reconstructions_out"] <= len(got)


@pytest.mark.slow
def test_decoder_process_without_sync_does_not_wait_for_it(tmp_path, cli_env, zmq_ctx) -> None:
    """A frame source with no sync at all: every frame is still decoded (stimulus frame -1),
    only the first one waits (sync_wait_s), and once syncs arrive frames wait for theirs."""
    import subprocess
    import sys

    from cortexcast.app.bench import free_ports
    from cortexcast.stream.pubsub import Publisher, Subscriber

    h, w = 32, 32
    rng = np.random.default_rng(0)
    model = _rois_and_behavior_model(tmp_path, rng, h, w)
    daq, dec = free_ports(2)
    cfg = tmp_path / "d.toml"
    cfg.write_text(f"[decoder]\nframes_from = 'tcp://127.0.0.1:{daq}'\n"
                   f"publish = 'tcp://127.0.0.1:{dec}'\nrois = '{tmp_path / 'rois.npz'}'\n"
                   f"model = '{model}'\nwait_for = ['reconstruction']\nsync_wait_s = 0.2\n")
    pub = Publisher(f"tcp://127.0.0.1:{daq}", "daq", context=zmq_ctx)
    sub = Subscriber(f"tcp://127.0.0.1:{dec}", ["reconstruction"], context=zmq_ctx)
    proc = subprocess.Popen([sys.executable, "-m", "cortexcast", "decoder", "--config",
                             str(cfg)], env=cli_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    got = []
    try:
        assert pub.wait_for_subscribers({"frames": 1, "sync": 1}, 60)
        for i in range(6):
            img = rng.integers(100, 200, (h, w)).astype(np.uint16)
            if i >= 3:  # from frame 3 on, each frame's sync follows it
                pub.publish("frames", "frame", [img], t_acq=i / 30, meta={"imaging_frame": i})
                pub.publish("sync", "sync", [np.zeros(4, np.float32)], t_acq=i / 30,
                            meta={"imaging_frame": i, "stim_frame": 100 + i,
                                  "behavior": {"running": 1.0}})
            else:
                pub.publish("frames", "frame", [img], t_acq=i / 30, meta={"imaging_frame": i})
            while len(got) < i + 1 and (msg := sub.recv(timeout_s=20)) is not None:
                got.append(msg)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert [m.meta["imaging_frame"] for m in got] == list(range(6)), out
    # frame 3 came before any sync had been seen: decoded at once; then frames wait for theirs
    assert [m.meta["stim_frame"] for m in got] == [-1, -1, -1, -1, 104 - 2, 105 - 2], out
    assert "no sync messages" in out
