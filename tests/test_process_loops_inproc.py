"""The process skeleton: each process loop runs in a thread over ``inproc://``, no subprocess.

Sockets are injected (:class:`Sockets` with one shared context, which ``inproc://`` needs)
and the run is stopped with ``stop.request()`` (signals belong to the main thread), then the
stats each process writes on exit are checked against what went over the wire.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import zmq

from cortexcast.core.events import ImagingFrame, SyncEvent, from_message
from cortexcast.core.runtime import ProcessRun, Stop, StopSignals
from cortexcast.stream.pubsub import Publisher, Sockets, Subscriber


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.term()


def _start(target, *args, **kwargs) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target(*args, **kwargs)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, errors


def _decoder_files(tmp_path: Path, n: int = 20, h: int = 32, w: int = 32) -> tuple[Path, Path]:
    from cortexcast.core.rois import from_pixel_lists, save_rois
    from cortexcast.decoder.training.synthetic import write_linear_model

    rng = np.random.default_rng(0)
    ys = [rng.integers(0, h, 4) for _ in range(n)]
    xs = [rng.integers(0, w, 4) for _ in range(n)]
    save_rois(tmp_path / "rois.npz", from_pixel_lists(ys, xs, None, (h, w), block_px=8))
    return tmp_path / "rois.npz", write_linear_model(tmp_path / "m.onnx", neurons=n, window=4,
                                                      lag=2)


def test_decoder_loop_runs_in_a_thread_over_inproc(tmp_path, ctx) -> None:
    from cortexcast.decoder.live.process import DecoderSettings, run_decoder

    rois, model = _decoder_files(tmp_path)
    settings = DecoderSettings(frames_from="inproc://daq", publish="inproc://decoder",
                               rois=str(rois), model=str(model), wait_for=("reconstruction",),
                               stats_out=str(tmp_path / "decoder.json"))
    stop = StopSignals()
    daq = Publisher("inproc://daq", "daq", context=ctx)
    thread, errors = _start(run_decoder, settings, sockets=Sockets(ctx), stop=stop)
    sub = Subscriber("inproc://decoder", ["reconstruction"], context=ctx)
    try:
        assert daq.wait_for_subscribers({"frames": 1, "sync": 1}, 30), errors
        daq.publish("frames", "frame", [np.zeros(5, np.uint16)], t_acq=0.0,
                    meta={"imaging_frame": 99})  # not an image: counted, skipped
        rng = np.random.default_rng(1)
        for i in range(8):
            daq.publish_event(SyncEvent(i, i / 30, 100 + i))
            daq.publish_event(ImagingFrame(i, i / 30, rng.integers(100, 200, (32, 32))
                                           .astype(np.uint16)))
        got = []
        while len(got) < 8 and (msg := sub.recv(timeout_s=20)) is not None:
            got.append(from_message(msg))
    finally:
        stop.request()
        thread.join(30)
        sub.close()
        daq.close()
    assert not thread.is_alive() and not errors
    assert [r.imaging_frame for r in got] == list(range(8))
    assert [r.stim_frame for r in got] == [100 + i - 2 for i in range(8)]
    stats = json.loads((tmp_path / "decoder.json").read_text())
    assert stats["process"] == "decoder" and stats["reason"] == "stopped by request"
    assert stats["frames_in"] == 9 and stats["bad_frames"] == 1
    assert stats["reconstructions_out"] == 8


def test_record_loop_runs_in_a_thread_over_inproc(tmp_path, ctx) -> None:
    from cortexcast.stream.record_cli import RecordSettings, record
    from cortexcast.stream.recording import RecordingReader

    out = tmp_path / "r.ccr"
    settings = RecordSettings(endpoints=("inproc://daq",), topics=("frames",), out=str(out),
                              stats_out=str(tmp_path / "record.json"))
    stop = StopSignals(raise_stop=False)
    daq = Publisher("inproc://daq", "daq", context=ctx)
    thread, errors = _start(record, settings, sockets=Sockets(ctx), stop=stop)
    try:
        assert daq.wait_for_subscribers({"frames": 1}, 30), errors
        for i in range(5):  # inproc: queued for the recorder once sent, and it drains its
            daq.publish_event(ImagingFrame(i, i / 30, np.full((4, 4), i, np.uint16)))  # queue
    finally:
        stop.request()
        thread.join(30)
        daq.close()
    assert not thread.is_alive() and not errors
    stats = json.loads((tmp_path / "record.json").read_text())
    assert stats["process"] == "record" and stats["messages"] == {"frames": 5}
    with RecordingReader(out) as reader:
        frames = [from_message(m) for m in reader.messages()]
    assert [f.index for f in frames] == list(range(5))


def test_process_run_closes_everything_and_reports_failures(tmp_path) -> None:
    closed: list[str] = []

    class Thing:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            closed.append(self.name)
            if self.name == "b":
                raise OSError("b would not close")

    with pytest.raises(RuntimeError, match="boom"):
        with ProcessRun("p", str(tmp_path / "p.json")) as run:
            run.counts["n"] = 3
            for name in "abc":
                run.own(Thing(name))
            raise RuntimeError("boom")
    assert closed == ["c", "b", "a"]  # newest first; one failing close skips none
    stats = json.loads((tmp_path / "p.json").read_text())
    assert stats == {"process": "p", "reason": "failed: boom", "n": 3}
    with ProcessRun("q", str(tmp_path / "q.json")) as run:
        raise Stop("SIGTERM")  # a stop ends the block quietly
    assert json.loads((tmp_path / "q.json").read_text())["reason"] == "stopped by SIGTERM"
