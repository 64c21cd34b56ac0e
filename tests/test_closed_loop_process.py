"""The closed-loop process for real: its own OS process, real ZeroMQ sockets, a serial
device on a pseudo-terminal, the firing log on disk; and under `cortexcast up` on the sim."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app.bench import free_ports
from cortexcast.decoder.live.process import BUNDLED_MODEL
from cortexcast.stream.pubsub import Publisher, Subscriber
from test_triggers import FakeDevice

SHAPE = (36, 64)


def _read_lines(path: Path, n: int, timeout_s: float = 20.0) -> list[dict]:
    """Poll the firing log until it has n lines (or time out)."""
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            if len(lines) >= n:
                break
        time.sleep(0.02)
    return [json.loads(ln) for ln in lines]


def test_loop_process_fires_serial_and_logs_latency(tmp_path: Path, cli_env, zmq_ctx) -> None:
    device = FakeDevice(tmp_path / "ttyLOOP")
    loop_port = free_ports(1)[0]
    pub = Publisher("tcp://127.0.0.1:0", "decoder", context=zmq_ctx)  # plays the decoder
    target = np.random.default_rng(1).normal(100, 30, SHAPE).astype(np.float32)
    np.save(tmp_path / "target.npy", target)
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"""
[loop]
reconstruction_from = "{pub.address}"
publish = "tcp://127.0.0.1:{loop_port}"
log = "firings.jsonl"

[[loop.outputs]]
name = "arduino"
kind = "serial"
serial = {{ port = "{device.link}", baud = 115200, command = "GO\\n" }}

[[loop.outputs]]
name = "sim"
kind = "log"

[[loop.rules]]
name = "saw-target"
kind = "correlation"
target = "target.npy"
threshold = 0.9
frames = 3
refractory_s = 10.0
output = "arduino"

[[loop.rules]]
name = "dark-corner"
kind = "brightness"
rect = [0, 6, 0, 6]
threshold = 5.0
direction = "below"
frames = 1
refractory_s = 0.0
output = "sim"
""")
    watch = Subscriber(f"tcp://127.0.0.1:{loop_port}", ["loop"], context=zmq_ctx, name="test")
    proc = subprocess.Popen([sys.executable, "-m", "cortexcast", "loop", "--config", str(cfg),
                             "--stats-out", str(tmp_path / "loop.json")], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Handshake, no sleeps: the loop subscribes only after its outputs are open, and we
        # hear its heartbeat before we publish, so no firing message can be missed.
        assert pub.wait_for_subscribers({"reconstruction": 1}, 30), "loop never subscribed"
        assert watch.wait_ready(30), "no heartbeat from the loop process"
        noise = np.random.default_rng(2).normal(100, 30, (8, *SHAPE)).astype(np.float32)
        frames = [noise[0], noise[1], target, target + 1, noise[2], target, target * 2, target,
                  target, noise[3]]
        frames[9] = frames[9].copy()
        frames[9][:6, :6] = 0.0  # frame 9: the corner goes dark
        t_acq = []
        for i, f in enumerate(frames):
            now = time.monotonic_ns()
            t_acq.append(now)
            pub.publish("reconstruction", "reconstruction", [np.ascontiguousarray(f)],
                        t_acq=i / 30, meta={"imaging_frame": 100 + i, "stim_frame": 95 + i},
                        stamps=[("daq.acq", now), ("daq.pub", now + 1000)], stage="decoder.pub")
        # frames 5, 6, 7 are the first 3 matches in a row -> one firing on frame 7
        assert device.read(3, timeout_s=20) == b"GO\n"
        records = _read_lines(tmp_path / "firings.jsonl", 2)
        msgs = [watch.recv(timeout_s=20) for _ in range(2)]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        device.close()
    assert proc.returncode == 0, out
    by_rule = {r["rule"]: r for r in records}
    assert set(by_rule) == {"saw-target", "dark-corner"}, records
    fired = by_rule["saw-target"]
    assert fired["imaging_frame"] == 107 and fired["frames"] == 3 and fired["ok"]
    assert fired["output"] == "arduino" and fired["value"] > 0.99
    lat = fired["latency_ms"]
    assert lat["frame_to_output"] > 0 and lat["frame_to_decision"] > 0
    assert fired["stamps"]["daq.acq"] == t_acq[7]
    assert fired["stamps"]["loop.out"] - fired["stamps"]["daq.acq"] == pytest.approx(
        lat["frame_to_output"] * 1e6, abs=1000)
    assert by_rule["dark-corner"]["imaging_frame"] == 109
    assert all(m is not None and m.topic == "loop" and m.kind == "event" for m in msgs), out
    assert {m.meta["rule"] for m in msgs} == {"saw-target", "dark-corner"}
    loop_msg = next(m for m in msgs if m.meta["rule"] == "saw-target")
    assert [s for s, _ in loop_msg.stamps][-4:] == ["loop.recv", "loop.decide", "loop.out",
                                                   "loop.pub"]
    stats = json.loads((tmp_path / "loop.json").read_text())
    assert stats["reconstructions_in"] == 10 and stats["fired_ok"] == 2
    assert stats["per_rule"] == {"saw-target": 1, "dark-corner": 1}
    assert stats["stream"]["total_dropped"] == 0


def test_loop_with_a_missing_device_fails_at_start(tmp_path: Path, cli_env) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"""
[loop]
reconstruction_from = "tcp://127.0.0.1:{free_ports(1)[0]}"
[[loop.outputs]]
name = "arduino"
kind = "serial"
serial = {{ port = "{tmp_path / 'ttyNOPE'}", command = "GO" }}
[[loop.rules]]
name = "r"
kind = "brightness"
rect = [0, 36, 0, 64]
threshold = 1.0
output = "arduino"
""")
    res = subprocess.run([sys.executable, "-m", "cortexcast", "loop", "--config", str(cfg)],
                         env=cli_env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "cortexcast loop: error: output arduino: cannot open serial port" in res.stderr
    assert "Traceback" not in res.stderr


def test_up_stops_before_starting_on_a_missing_target(tmp_path: Path, cli_env) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"""
[stack]
processes = ["loop"]
run_dir = "run"
[loop]
reconstruction_from = "tcp://127.0.0.1:{free_ports(1)[0]}"
outputs = [{{ name = "o", kind = "log" }}]
rules = [{{ name = "r", kind = "correlation", target = "nope.png", threshold = 0.5, output = "o" }}]
""")
    res = subprocess.run([sys.executable, "-m", "cortexcast", "up", "--config", str(cfg)],
                         env=cli_env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "[loop]: rule 'r' target:" in res.stderr and "nope.png does not exist" in res.stderr
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.slow
@pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="bundled model not built")
def test_up_runs_the_loop_on_the_simulated_rig(tmp_path: Path, cli_env) -> None:
    """sim daq -> decoder (bundled model) -> loop, under `cortexcast up`, until the sim ends."""
    import tomllib

    from cortexcast.app.launcher import write_sim_config
    from cortexcast.core.tomlwrite import dumps

    daq_port, dec_port, loop_port = free_ports(3)
    run = tmp_path / "run"
    cfg = write_sim_config(run, headless=True, daq_port=daq_port, decoder_port=dec_port)
    data = tomllib.loads(cfg.read_text())
    data["stack"]["processes"] = ["loop", "decoder", "daq"]
    data["daq"]["wait_for"] = ["frames"]  # no display
    data["daq"]["sim"]["duration_s"] = 4.0
    del data["display"]
    np.save(run / "target.npy", np.random.default_rng(0).normal(0, 1, SHAPE))
    cfg.write_text(dumps(data) + f"""
[loop]
reconstruction_from = "tcp://127.0.0.1:{dec_port}"
publish = "tcp://127.0.0.1:{loop_port}"
log = "firings.jsonl"
outputs = [{{ name = "ttl-sim", kind = "log" }}]

[[loop.rules]]
name = "lit"
kind = "brightness"
rect = [0, 36, 0, 64]
threshold = -1000.0
frames = 3
refractory_s = 0.5
output = "ttl-sim"

[[loop.rules]]
name = "anything"
kind = "correlation"
target = "target.npy"
threshold = -1.0
frames = 2
refractory_s = 1.0
output = "ttl-sim"
""")
    res = subprocess.run([sys.executable, "-m", "cortexcast", "up", "--config", str(cfg),
                          "--duration", "120"], env=cli_env, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr + (run / "loop.log").read_text()
    records = [json.loads(ln) for ln in (run / "firings.jsonl").read_text().splitlines()]
    stats = json.loads((run / "loop.json").read_text())
    decoded = json.loads((run / "decoder.json").read_text())["reconstructions_out"]
    assert decoded >= 60 and stats["reconstructions_in"] == decoded
    lit = [r for r in records if r["rule"] == "lit"]
    anything = [r for r in records if r["rule"] == "anything"]
    assert len(lit) >= 3 and len(anything) >= 2, records
    assert stats["fired_ok"] == len(records) and stats["failed"] == 0
    for rule, gap in ((lit, 0.5), (anything, 1.0)):
        t = [r["t_acq"] for r in rule]
        assert min(np.diff(t)) >= gap - 1e-9  # refractory respected on the live stream
    for r in records:
        lat = r["latency_ms"]
        assert r["ok"] and 0 < lat["frame_to_reconstruction"] < lat["frame_to_output"]
        assert r["stamps"]["daq.acq"] < r["stamps"]["decoder.pub"] < r["stamps"]["loop.out"]
    assert stats["frame_to_output_ms"]["n"] == len(records)
