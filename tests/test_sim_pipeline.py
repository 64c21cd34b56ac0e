"""simulate -> train -> reconstruct -> evaluate, as a user runs them (real subprocesses).

Small settings so it runs in well under a minute; the model must score clearly
above zero on the test tier, whose clips come from images training never saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "cortexcast", *args], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, f"cortexcast {args[0]} failed:\n{res.stdout}\n{res.stderr}"
    return res


def test_simulate_train_reconstruct_evaluate(tmp_path: Path, cli_env) -> None:
    pytest.importorskip("torch")
    data, model, recon = tmp_path / "mouse", tmp_path / "m" / "model.onnx", tmp_path / "recon"
    _cli(cli_env, "simulate", "--out", str(data), "--preset", "easy", "--neurons", "600", "--height", "128",
         "--width", "128", "--trials", "40", "--test-trials", "3", "--frames", "150",
         "--oracle-clips", "1", "--oracle-repeats", "2", "--warmup-s", "2")
    _cli(cli_env, "train", "--data", str(data), "--out", str(model), "--epochs", "20",
         "--time-budget", "60", "--device", "cpu", "--no-progress")
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["neurons"] == 600
    assert card["extra"]["simulation"]["n_neurons"] == 600  # the live sim can rebuild the animal
    _cli(cli_env, "reconstruct", "--data", str(data), "--model", str(model),
         "--tier", "final_test_main", "--out", str(recon), "--no-progress")
    assert len(list(recon.glob("*.npy"))) == 3
    _cli(cli_env, "evaluate", "--data", str(data), "--recon", str(recon),
         "--tier", "final_test_main", "--json", str(tmp_path / "eval.json"))
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["clips_scored"] == 3
    assert result["mean"] > 0.15, result
