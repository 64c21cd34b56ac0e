"""The whole stack as real processes on the simulated rig.

These are the slowest tests (a few seconds of paced acquisition each); they
prove the processes find each other by handshake, decode, display, stop
cleanly and report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app.bench import free_port, free_ports
from cortexcast.decoder.live.process import BUNDLED_MODEL

pytestmark = pytest.mark.slow


def _run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cortexcast", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


@pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="bundled model not built")
def test_bench_runs_whole_stack_and_reports(tmp_path: Path, cli_env) -> None:
    out_json = tmp_path / "bench.json"
    res = _run(["bench", "--duration", "8", "--run-dir", str(tmp_path / "run"),
                "--json", str(out_json)], cli_env)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out_json.read_text())
    acquired, decoded = report["frames_acquired"], report["frames_decoded"]
    assert acquired > 0  # how many depends on the machine's load: speed is the bench's job
    assert decoded >= acquired - 5  # the decoder kept up
    assert report["reconstructions_received"] >= decoded - 5
    e2e = report["latency_ms"]["end_to_end"]
    assert e2e["n"] >= decoded - 5 and 0 < e2e["p50"] <= e2e["p99"] <= e2e["max"]
    assert {"daq", "decoder", "display"} <= set(report["resources"])
    assert report["pixel_correlation"] is not None and report["pixel_correlation"] > 0.05
    assert "frames acquired" in res.stdout and "p99" in res.stdout
    assert report["drops"]["decoder_in"] == 0
    # the latency distribution per stage, drawn beside the JSON
    cdf = report["latency_cdf_ms"]["end_to_end"]
    assert [p for p, _ in cdf][:2] == [0.0, 2.0] and cdf[-1][1] == e2e["max"]
    png = out_json.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # memory per process over time, for the soak's growth figure
    assert all(len(r["rss_mb"]) >= 3 for r in report["resources"].values())
    assert set(report["memory"]["per_process"]) == set(report["resources"])


def test_stack_stops_when_one_process_dies(tmp_path: Path, cli_env) -> None:
    """The decoder dies at start (its model file is damaged, which only onnxruntime finds):
    up must stop the others and fail clearly. (A missing file is caught before anything
    starts: tests/test_small_faults.py.)"""
    from cortexcast.core.rois import save_rois
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.settings import SimSettings
    from cortexcast.decoder.training.synthetic import write_linear_model

    rois = tmp_path / "rois.npz"
    save_rois(rois, SimulatedRig(SimSettings(n_neurons=200, frame_height=64,
                                             frame_width=64)).rois())
    model = write_linear_model(tmp_path / "broken.onnx", neurons=200, window=2, lag=1)
    model.write_bytes(b"not an onnx model")
    cfg = tmp_path / "rig.toml"
    daq, dec = free_ports(2)
    cfg.write_text(
        f"[stack]\nprocesses = ['decoder', 'daq']\nrun_dir = '{tmp_path / 'run'}'\n"
        f"[daq]\npublish = 'tcp://127.0.0.1:{daq}'\n"
        "[daq.sim]\nn_neurons = 200\nframe_height = 64\nframe_width = 64\n"
        f"[decoder]\nframes_from = 'tcp://127.0.0.1:{daq}'\npublish = 'tcp://127.0.0.1:{dec}'\n"
        f"rois = '{rois}'\nmodel = '{model}'\n"
    )
    res = _run(["up", "--config", str(cfg), "--duration", "60"], cli_env, timeout=60)
    assert res.returncode == 1
    assert "decoder failed" in res.stdout and "broken.onnx" in res.stdout
    daq_stats = json.loads((tmp_path / "run" / "daq.json").read_text())
    assert daq_stats["reason"].startswith("stopped by SIGTERM")


def test_daq_process_publishes_what_the_sim_makes(tmp_path: Path, cli_env, zmq_ctx) -> None:
    from cortexcast.stream.pubsub import Subscriber

    port = free_port()
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"[daq]\npublish = 'tcp://127.0.0.1:{port}'\nwait_for = ['frames']\n"
                   "[daq.sim]\nn_neurons = 200\nframe_height = 64\nframe_width = 96\n"
                   "paced = false\nduration_s = 2.0\n")
    sub = Subscriber(f"tcp://127.0.0.1:{port}", ["frames", "sync", "stimulus"], context=zmq_ctx)
    proc = subprocess.Popen([sys.executable, "-m", "cortexcast", "daq", "--config", str(cfg),
                             "--stats-out", str(tmp_path / "daq.json")], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    got: dict[str, list] = {"frames": [], "sync": [], "stimulus": []}
    try:
        while (msg := sub.recv(timeout_s=20)) is not None:
            got[msg.topic].append(msg)
            if len(got["frames"]) == 60:
                break
    finally:
        out, _ = proc.communicate(timeout=60)
    assert len(got["frames"]) == 60, out
    f = got["frames"][0]
    assert f.arrays[0].dtype == np.uint16 and f.arrays[0].shape == (64, 96)
    assert [m.meta["imaging_frame"] for m in got["frames"]] == list(range(60))
    assert got["stimulus"][0].arrays[0].shape == (36, 64)
    assert got["stimulus"][0].arrays[0].dtype == np.uint8
    assert sub.stats.as_dict()["total_dropped"] == 0
    assert proc.returncode == 0
    stats = json.loads((tmp_path / "daq.json").read_text())
    assert stats["published"]["frames"] == 60  # 2 s at 30 Hz


def _small_daq_stack(tmp_path: Path) -> Path:
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"[stack]\nprocesses = ['daq']\nrun_dir = 'run'\n"
                   f"[daq]\npublish = 'tcp://127.0.0.1:{free_port()}'\n"
                   "[daq.sim]\nn_neurons = 200\nframe_height = 64\nframe_width = 64\n")
    return cfg


def _wait_for_child(up: subprocess.Popen, timeout_s: float = 60):
    import time

    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kids = psutil.Process(up.pid).children()
        if kids:
            return kids[0]
        time.sleep(0.05)
    pytest.fail("supervisor started no child")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_supervisor_never_leaves_children_behind(tmp_path: Path, cli_env, how: str) -> None:
    """SIGTERM stops the stack cleanly with a summary; even SIGKILL takes the children along."""
    import signal

    import psutil

    cfg = _small_daq_stack(tmp_path)
    up = subprocess.Popen([sys.executable, "-m", "cortexcast", "up", "--config", str(cfg)],
                          env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    child = _wait_for_child(up)
    log = tmp_path / "run" / "daq.log"
    import time
    deadline = time.monotonic() + 60
    while "publishing" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "daq never started"
        time.sleep(0.05)
    up.send_signal(getattr(signal, how))
    out, _ = up.communicate(timeout=60)
    psutil.wait_procs([child], timeout=20)
    assert not child.is_running(), f"{how}: the daq outlived its supervisor"
    if how == "SIGTERM":
        assert up.returncode == 0 and "cortexcast summary" in out
        stats = json.loads((tmp_path / "run" / "daq.json").read_text())
        assert stats["reason"] == "stopped by SIGTERM"
