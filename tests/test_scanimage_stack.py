"""Each ScanImage frame source in the full stack, against its stand-in process.

A live simulated run is recorded once (`cortexcast demo --record`). Then, per
source, the stand-in plays that recording's frames exactly as ScanImage would
deliver them (its ZeroMQ stream, the MATLAB bridge, or TIFF files written frame
by frame), `cortexcast up` runs daq (source = that ScanImage source) -> decoder
-> recorder, and the decoder's reconstructions must equal, frame for frame,
those it made live from the simulated rig.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_record_replay_stack import _cortexcast, _reconstructions

from cortexcast.app.bench import free_ports
from cortexcast.stream.recording import RecordingReader

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


@pytest.fixture(scope="module")
def live(tmp_path_factory, env) -> tuple[Path, Path]:
    """(recording of a live simulated run with its reconstructions, its run folder)."""
    base = tmp_path_factory.mktemp("live")
    rec, run = base / "live.ccr", base / "run"
    http, daq, dec = (str(p) for p in free_ports(3))
    # 15 s: the simulated rig takes several seconds to set up on a busy machine.
    # ScanImage sends frames only (no pupil/running/eye), so both runs decode without them.
    _cortexcast(env, "demo", "--headless", "--duration", "15", "--port", http, "--daq-port",
                daq, "--decoder-port", dec, "--record", str(rec), "--run-dir", str(run),
                "--no-behavior")
    with RecordingReader(rec) as r:
        counts = r.counts()
    assert counts.get("frames", 0) >= 30 and counts["reconstruction"] == counts["frames"]
    return rec, run


def rig_config(source: str, table: str, source_keys: str, run_dir: Path, rois: Path,
               daq_port: int, decoder_port: int, out: Path) -> str:
    """A rig.toml running daq (ScanImage source) -> decoder -> recorder of reconstructions."""
    return (
        f"[stack]\nprocesses = ['record', 'decoder', 'daq']\nrun_dir = '{run_dir}'\n"
        f"[daq]\nsource = '{source}'\npublish = 'tcp://127.0.0.1:{daq_port}'\n"
        "wait_for = ['frames']\n"
        f"[daq.{table}]\n{source_keys}end_after_idle_s = 3.0\ntimeout_s = 120.0\n"
        f"[decoder]\nframes_from = 'tcp://127.0.0.1:{daq_port}'\n"
        f"publish = 'tcp://127.0.0.1:{decoder_port}'\nrois = '{rois}'\n"
        "wait_for = ['reconstruction']\nuse_behavior = false\n"
        f"[record]\nendpoints = ['tcp://127.0.0.1:{decoder_port}']\n"
        f"topics = ['reconstruction']\nout = '{out}'\n")


@pytest.mark.parametrize("source", ["scanimage", "scanimage-bridge", "tiff"])
def test_scanimage_source_decodes_exactly_as_the_sim(live, env, tmp_path, source) -> None:
    rec, run = live
    si_port, daq_port, dec_port = free_ports(3)
    play = ["--recording", str(rec)]
    if source == "tiff":
        folder = tmp_path / "scanimage"
        folder.mkdir()
        standin = ["cortexcast.daq.standins.scanimage_tiff", "--folder", str(folder), "--frames-per-file",
                   "50", *play]
        table, keys = "tiff", f"folder = '{folder}'\nstart = 'all'\n"
    else:
        ep = f"tcp://127.0.0.1:{si_port}"
        name = "scanimage_zmq" if source == "scanimage" else "scanimage_bridge"
        standin = [f"cortexcast.daq.standins.{name}", "--endpoint", ep, "--wait-subscribers", "1", *play]
        table = "scanimage" if source == "scanimage" else "bridge"
        keys = f"endpoint = '{ep}'\n"
    out = tmp_path / "through_scanimage.ccr"
    cfg = tmp_path / "rig.toml"
    cfg.write_text(rig_config(source, table, keys, tmp_path / "run", run / "rois.npz", daq_port,
                              dec_port, out))
    proc = subprocess.Popen([sys.executable, "-m", *standin], env=env)
    try:
        _cortexcast(env, "up", "--config", str(cfg), "--duration", "120")
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    before, after = _reconstructions(rec), _reconstructions(out)
    assert sorted(after) == sorted(before)
    for i in before:
        np.testing.assert_allclose(after[i], before[i], atol=1e-3, err_msg=f"frame {i}")
