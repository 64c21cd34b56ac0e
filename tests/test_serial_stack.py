"""Done-when: `cortexcast up` with replayed sim frames and sync from the serial stand-in.

Real processes end to end: the stand-in sync box on a pty (python -m
cortexcast.daq.serial_sync.standin, sending garbage lines too), the daq replaying a recorded sim run
with ``sync = ["serial"]``, the decoder, and the recorder. The decoder's reconstructions
through this rig config must equal those of the live sim run frame for frame, and the sync
on the wire must be the sync box's (running speed, no sim photodiode trace).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app.bench import free_ports
from cortexcast.decoder.live.process import BUNDLED_MODEL
from cortexcast.stream.recording import RecordingReader

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="bundled model not built")]


def _cortexcast(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "cortexcast", *args], capture_output=True,
                         text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_up_with_replayed_frames_and_serial_sync(tmp_path: Path, cli_env) -> None:
    live, run1 = tmp_path / "live.ccr", tmp_path / "run1"
    http, daq1, dec1, daq, dec = (str(p) for p in free_ports(5))
    _cortexcast(cli_env, "demo", "--headless", "--duration", "8", "--port", http,
                "--daq-port", daq1, "--decoder-port", dec1, "--record", str(live),
                "--run-dir", str(run1), "--no-behavior")  # the box sends no pupil or eye
    link = tmp_path / "ttyBOX"
    box = subprocess.Popen([sys.executable, "-m", "cortexcast.daq.serial_sync.standin", "--link", str(link),
                            "--monitor-delay-s", "0.02", "--garbage-every", "25"],
                           stdout=subprocess.PIPE, text=True, env=cli_env)
    try:
        assert box.stdout is not None and box.stdout.readline().startswith("READY")
        out = tmp_path / "serial.ccr"
        cfg = tmp_path / "rig.toml"
        cfg.write_text(
            f"[stack]\nprocesses = ['record', 'decoder', 'daq']\nrun_dir = '{tmp_path / 'run2'}'\n"
            f"[daq]\nsource = 'replay'\nrecording = '{live}'\npublish = 'tcp://127.0.0.1:{daq}'\n"
            "wait_for = ['frames', 'sync']\nsync = ['serial']\n"
            f"[daq.serial]\nport = '{link}'\n"
            f"[decoder]\nframes_from = 'tcp://127.0.0.1:{daq}'\n"
            f"publish = 'tcp://127.0.0.1:{dec}'\nrois = '{run1 / 'rois.npz'}'\n"
            "wait_for = ['reconstruction']\nuse_behavior = false\n"
            f"[record]\nendpoints = ['tcp://127.0.0.1:{daq}', 'tcp://127.0.0.1:{dec}']\n"
            f"topics = ['sync', 'reconstruction']\nout = '{out}'\n")
        _cortexcast(cli_env, "up", "--config", str(cfg), "--duration", "60")
    finally:
        box.terminate()
        box.wait(10)
        box.stdout.close()  # type: ignore[union-attr]
    with RecordingReader(live) as rec:
        before = {m.meta["imaging_frame"]: np.array(m.arrays[0])
                  for m in rec.messages(["reconstruction"])}
    with RecordingReader(out) as rec:
        after = {m.meta["imaging_frame"]: np.array(m.arrays[0])
                 for m in rec.messages(["reconstruction"])}
        syncs = list(rec.messages(["sync"]))
    assert len(before) >= 60 and sorted(after) == sorted(before)  # no frame lost
    for i in before:
        np.testing.assert_allclose(after[i], before[i], atol=1e-3, err_msg=f"frame {i}")
    assert len(syncs) >= 0.8 * len(before)  # ~30 Hz pulses for as long as the replay ran
    assert all(not m.arrays for m in syncs)  # no photodiode: the sim's sync was replaced
    frames = [m.meta["imaging_frame"] for m in syncs]
    assert frames == sorted(frames)
    assert all(m.meta["behavior"]["running"] > 0 for m in syncs[5:])
    stats = json.loads((tmp_path / "run2" / "daq.json").read_text())
    assert stats["reason"] == "source ended"
    src = stats["source"]
    assert src["serial_pulses"] >= len(syncs) and src["serial_garbage"] > 0
    assert src["merge_replaced"] > 0 and src["merge_dropped"] == 0


def test_daq_with_a_missing_serial_port_fails_clearly(tmp_path: Path, cli_env) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"[daq]\nsource = 'replay'\nrecording = '{tmp_path / 'none.ccr'}'\n"
                   f"publish = 'tcp://127.0.0.1:{free_ports(1)[0]}'\nsync = ['serial']\n"
                   f"[daq.serial]\nport = '{tmp_path / 'ttyGONE'}'\n")
    res = subprocess.run([sys.executable, "-m", "cortexcast", "daq", "--config", str(cfg)],
                         capture_output=True, text=True, env=cli_env, timeout=60)
    assert res.returncode == 2
    assert "cortexcast daq: error: syncbox: cannot open serial port" in res.stderr
    assert "ttyGONE" in res.stderr and "Traceback" not in res.stderr
