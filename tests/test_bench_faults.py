"""`cortexcast bench --faults`: kills each consumer of a recording sim stack, reports recovery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cortexcast.decoder.live.process import BUNDLED_MODEL


@pytest.mark.slow
@pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="bundled model not built")
def test_fault_bench_kills_consumers_and_loses_no_recorded_frame(tmp_path: Path,
                                                                 cli_env) -> None:
    out = tmp_path / "faults.json"
    res = subprocess.run([sys.executable, "-m", "cortexcast", "bench", "--faults",
                          "--run-dir", str(tmp_path / "run"), "--json", str(out)],
                         capture_output=True, text=True, env=cli_env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out.read_text())
    assert report["injector_error"] is None and report["reason"] == "stop requested"
    killed = {r["process"]: r for r in report["killed"]}
    assert set(killed) == {"decoder", "display"}
    for r in killed.values():
        assert r["restart_s"] is not None and 0 < r["restart_s"] < 5, r  # target < 1 s
    assert killed["decoder"]["restart_measured_to"] == "first heartbeat"
    assert killed["decoder"]["decoder_frames_missed"] is not None
    rec = report["recording"]
    assert rec["frames_published"] > 0 and rec["frames_lost"] == 0, rec
    assert set(report["restarts"]) == {"decoder", "display"}
    assert "kill -9 decoder" in res.stdout and "not killed: daq" in res.stdout
