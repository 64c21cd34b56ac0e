"""Record the live stack, replay the recording through the daq, decode it again.

Proves, with real processes: the recorder captures every stream of a running
stack; `daq --source replay` publishes recorded frames the same way the sim
does; and the decoder's output on replayed frames equals its output live.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app.bench import free_ports
from cortexcast.stream.recording import RecordingReader

pytestmark = pytest.mark.slow


def _cortexcast(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "cortexcast", *args], capture_output=True,
                         text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _reconstructions(path: Path) -> dict[int, np.ndarray]:
    with RecordingReader(path) as rec:
        return {m.meta["imaging_frame"]: np.array(m.arrays[0])
                for m in rec.messages(["reconstruction"])}


def test_replayed_frames_decode_exactly_as_live(tmp_path: Path, cli_env) -> None:
    live = tmp_path / "live.ccr"
    run1 = tmp_path / "run1"
    http, daq1, dec1, daq, dec = (str(p) for p in free_ports(5))
    _cortexcast(cli_env, "demo", "--headless", "--duration", "5", "--port", http,
                "--daq-port", daq1, "--decoder-port", dec1, "--record", str(live),
                "--run-dir", str(run1))
    with RecordingReader(live) as rec:
        counts = rec.counts()
    n_frames = counts["frames"]
    assert n_frames >= 30 and counts["reconstruction"] == n_frames  # startup takes part of 5 s
    assert counts["sync"] == n_frames and counts["stimulus"] >= n_frames - 1

    # Same decoder config, but the daq replays the recording instead of simulating.
    config = (run1 / "rig.toml").read_text()
    replayed = tmp_path / "replayed.ccr"
    cfg = tmp_path / "replay.toml"
    rois = str(run1 / "rois.npz")
    cfg.write_text(
        f"[stack]\nprocesses = ['record', 'decoder', 'daq']\nrun_dir = '{tmp_path / 'run2'}'\n"
        f"[daq]\nsource = 'replay'\nrecording = '{live}'\npublish = 'tcp://127.0.0.1:{daq}'\n"
        "wait_for = ['frames']\n"
        f"[decoder]\nframes_from = 'tcp://127.0.0.1:{daq}'\npublish = 'tcp://127.0.0.1:{dec}'\n"
        f"rois = '{rois}'\nwait_for = ['reconstruction']\n"
        f"[record]\nendpoints = ['tcp://127.0.0.1:{dec}']\ntopics = ['reconstruction']\n"
        f"out = '{replayed}'\n"
    )
    assert "[decoder]" in config  # the live run's decoder used the same rois and bundled model
    _cortexcast(cli_env, "up", "--config", str(cfg), "--duration", "60")
    before, after = _reconstructions(live), _reconstructions(replayed)
    assert len(after) == len(before) == n_frames
    for i in before:
        np.testing.assert_allclose(after[i], before[i], atol=1e-3, err_msg=f"frame {i}")
