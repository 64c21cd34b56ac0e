"""`cortexcast lsl`: reconstructions and loop events from ZeroMQ to LSL outlets.

A real ZeroMQ publisher (tcp, loopback) feeds the process loop running in a thread; real
pylsl inlets read what it pushes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import zmq

from cortexcast.core.config import ConfigError
from cortexcast.core.events import LoopEvent, Reconstruction
from cortexcast.core.runtime import StopSignals
from cortexcast.stream.lsl_outlets import LslSettings, run_lsl
from cortexcast.stream.pubsub import Publisher, Sockets
from polling import TIMEOUT_S, wait_for

pylsl = pytest.importorskip("pylsl")
_n = iter(range(10**6))


def inlet(name: str) -> Any:
    found = wait_for(lambda: pylsl.resolve_bypred(f"name='{name}'", 1, 0.5),
                     what=f"LSL stream {name}")
    inl = pylsl.StreamInlet(found[0], max_buflen=10, recover=True)
    inl.open_stream(TIMEOUT_S)
    return inl


class Running:
    """run_lsl in a thread, with a publisher standing in for the decoder and the loop."""

    def __init__(self, tmp_path: Path, ctx: zmq.Context, **kw: Any) -> None:
        tag = f"{os.getpid()}-{next(_n)}"
        self.decoder = Publisher("tcp://127.0.0.1:0", "decoder", context=ctx)
        self.loop = Publisher("tcp://127.0.0.1:0", "loop", context=ctx)
        self.settings = LslSettings(
            endpoints=(self.decoder.address, self.loop.address),
            reconstruction_name=f"rec-{tag}", index_name=f"idx-{tag}",
            events_name=f"loop-{tag}", source_id=f"test-{tag}",
            stats_out=str(tmp_path / "lsl.json"), **kw)
        self.stop = StopSignals(raise_stop=False)
        self.errors: list[BaseException] = []
        self.summary: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, args=(ctx,), daemon=True)
        self.thread.start()

    def _run(self, ctx: zmq.Context) -> None:
        try:
            self.summary = run_lsl(self.settings, sockets=Sockets(ctx), stop=self.stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def ready(self) -> None:
        assert self.decoder.wait_for_subscribers({"reconstruction": 1}, TIMEOUT_S), self.errors
        assert self.loop.wait_for_subscribers({"loop": 1}, TIMEOUT_S), self.errors

    def close(self) -> None:
        self.stop.request()
        self.thread.join(TIMEOUT_S)
        self.decoder.close()
        self.loop.close()


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.term()


def test_reconstructions_and_loop_events_reach_lsl_inlets(tmp_path: Path, ctx) -> None:
    run = Running(tmp_path, ctx, rate_hz=60.0)
    try:
        run.ready()
        pixels_in, index_in, events_in = (inlet(run.settings.reconstruction_name),
                                          inlet(run.settings.index_name),
                                          inlet(run.settings.events_name))
        info = pixels_in.info(TIMEOUT_S)
        assert info.channel_count() == 36 * 64 and info.nominal_srate() == 60.0
        assert info.channel_format() == pylsl.cf_float32 and info.type() == "Reconstruction"
        assert info.desc().child_value("height") == "36"
        assert info.source_id() == f"{run.settings.source_id}:{run.settings.reconstruction_name}"
        rng = np.random.default_rng(0)
        frames = [rng.uniform(0, 255, (36, 64)).astype(np.float32) for _ in range(3)]
        t0 = pylsl.local_clock()
        for i, px in enumerate(frames):
            run.decoder.publish_event(Reconstruction(100 + i, 1.5 + i, px, 200 + i, 7, "m.onnx"),
                                      stamps=(("decoder.infer", 123_000 + i),))
        run.loop.publish_event(LoopEvent(2.5, {"rule": "bright", "output": "ttl", "value": 1.0}))
        got = []
        for _ in frames:
            sample, ts = pixels_in.pull_sample(timeout=TIMEOUT_S)
            assert sample is not None, run.errors
            got.append((np.asarray(sample, np.float32).reshape(36, 64), ts))
        for (px, ts), want in zip(got, frames):
            np.testing.assert_array_equal(px, want)
            assert ts >= t0  # stamped with local_clock() at push
        marks = [index_in.pull_sample(timeout=TIMEOUT_S) for _ in frames]
        for i, (m, ts) in enumerate(marks):
            meta = json.loads(m[0])
            assert meta["stim_frame"] == 100 + i and meta["imaging_frame"] == 200 + i
            assert meta["lag"] == 7 and meta["model"] == "m.onnx" and meta["t_acq"] == 1.5 + i
            assert meta["stamps"]["decoder.infer"] == 123_000 + i
            assert "decoder.pub" in meta["stamps"] and meta["source"] == "decoder"
            assert ts == pytest.approx(got[i][1])  # same timestamp as its pixels
        ev, _ = events_in.pull_sample(timeout=TIMEOUT_S)
        rec = json.loads(ev[0])
        assert rec["rule"] == "bright" and rec["value"] == 1.0 and rec["t_acq"] == 2.5
        assert "loop.pub" in rec["stamps"]
    finally:
        run.close()
    assert not run.errors, run.errors
    assert run.summary["reconstructions"] == 3 and run.summary["events"] == 1
    stats = json.loads((tmp_path / "lsl.json").read_text())
    assert stats["process"] == "lsl" and stats["reconstructions"] == 3


def test_wrong_size_reconstruction_is_counted_and_skipped(tmp_path: Path, ctx) -> None:
    run = Running(tmp_path, ctx)
    try:
        run.ready()
        pixels_in = inlet(run.settings.reconstruction_name)
        run.decoder.publish_event(Reconstruction(1, 0.0, np.zeros((10, 10), np.float32)))
        run.decoder.publish_event(Reconstruction(2, 0.0, np.full((36, 64), 9, np.float32)))
        sample, _ = pixels_in.pull_sample(timeout=TIMEOUT_S)
        assert sample is not None and sample[0] == 9.0  # the bad one never went out
    finally:
        run.close()
    assert run.summary["skipped"] == 1 and run.summary["reconstructions"] == 1


def test_settings_and_registry(tmp_path: Path) -> None:
    from cortexcast.app.launcher import validate_stack
    from cortexcast.app.registry import STACK_PROCESSES, process, stop_order

    assert "lsl" in STACK_PROCESSES
    assert stop_order(["lsl", "decoder", "daq"]) == ["daq", "decoder", "lsl"]
    cfg = tmp_path / "rig.toml"
    cfg.write_text('[stack]\nprocesses = ["lsl"]\n[lsl]\nreconstruction_name = "recon"\n'
                   'rate_hz = 60\nevents_name = ""\n')
    _, loaded = validate_stack(cfg)
    s = loaded["lsl"]
    assert isinstance(s, LslSettings) and s.reconstruction_name == "recon" and s.rate_hz == 60.0
    assert process("lsl").load(cfg).events_name == ""
    cfg.write_text('[lsl]\nreconstruction_name = ""\nindex_name = ""\nevents_name = ""\n')
    with pytest.raises(ConfigError, match="nothing to publish"):
        process("lsl").load(cfg)


def test_missing_pylsl_is_a_clear_error(monkeypatch) -> None:
    from cortexcast.stream.lsl_outlets import LslOutlets, LslUnavailableError

    monkeypatch.setitem(sys.modules, "pylsl", None)
    with pytest.raises(LslUnavailableError, match=r"pip install cortexcast\[lsl\]"):
        LslOutlets(LslSettings())


def test_module_entry_point_runs_and_stops(tmp_path: Path, cli_env) -> None:
    """``python -m cortexcast.stream.lsl_outlets`` starts its outlets and stops on SIGTERM
    (or terminate() on Windows) with its stats written."""
    tag = f"cli-{os.getpid()}"
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f'[lsl]\nendpoints = ["tcp://127.0.0.1:1"]\nreconstruction_name = "{tag}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "cortexcast.stream.lsl_outlets", "--config",
                             str(cfg), "--stats-out", str(tmp_path / "s.json")], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: pylsl.resolve_bypred(f"name='{tag}'", 1, 0.5) or proc.poll() is not None,
                 timeout=60, what="the process's outlet")
        assert proc.poll() is None, proc.communicate()[0]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert json.loads((tmp_path / "s.json").read_text())["reason"].startswith("stopped"), out
