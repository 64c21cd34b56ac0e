"""`cortexcast bench --decoder-only`: the live decoder's per-frame cost, measured (not asserted)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app import bench
from cortexcast.core.config import ConfigError
from cortexcast.decoder.live.model_card import ModelError
from cortexcast.decoder.training.synthetic import write_linear_model


def _bench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cortexcast")
    bench.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    return int(args.func(args))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("bench")
    return [write_linear_model(d / "plain.onnx", neurons=50, window=4, lag=2),
            write_linear_model(d / "beh.onnx", neurons=50, window=10, lag=5, behavior=True,
                               components=8)]


def test_decoder_only_reports_each_model_and_their_ratio(models, tmp_path: Path,
                                                         capsys) -> None:
    out = tmp_path / "b.json"
    assert _bench("--decoder-only", "--model", str(models[0]), "--model", str(models[1]),
                  "--frames", "60", "--warmup", "5", "--threads", "1", "--json", str(out),
                  "--run-dir", str(tmp_path / "run")) == 0
    report = json.loads(out.read_text())
    got = {Path(r["path"]).name: r for r in report["models"]}
    assert set(got) == {"plain.onnx", "beh.onnx"} and got["beh.onnx"]["behavior"]
    for r in report["models"]:
        s = r["per_push_ms"]
        assert s["n"] == 60 and 0 < s["p50"] <= s["p99"] <= s["max"]
    assert report["ratio_to_first"][str(models[0])]["p50"] == 1.0
    assert report["ratio_to_first"][str(models[1])]["p99"] > 0
    assert report["onnxruntime_threads"] == 1 and report["budget"]["p99_ms"] == 2.0
    text = capsys.readouterr().out
    assert text.count("p99") >= 2 and "beh.onnx" in text


def test_decoder_only_on_dataset_responses(models, tmp_path: Path) -> None:
    from cortexcast.decoder.training.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "mouse", neurons=50)
    out = tmp_path / "b.json"
    assert _bench("--decoder-only", "--model", str(models[1]), "--data", str(data),
                  "--frames", "30", "--warmup", "2", "--json", str(out)) == 0
    assert json.loads(out.read_text())["activity"].startswith("dataset")
    other = write_synthetic_dataset(tmp_path / "m2", neurons=51)
    with pytest.raises(ModelError, match="expects 50 neurons but .* has 51"):
        _bench("--decoder-only", "--model", str(models[1]), "--data", str(other))


def test_neurons_checks_models_or_builds_a_stand_in(models, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="takes 50 neurons, not --neurons 60"):
        _bench("--decoder-only", "--model", str(models[0]), "--neurons", "60")
    out = tmp_path / "b.json"
    assert _bench("--decoder-only", "--neurons", "120", "--frames", "20", "--warmup", "1",
                  "--run-dir", str(tmp_path / "run"), "--json", str(out)) == 0
    (r,) = json.loads(out.read_text())["models"]
    assert r["neurons"] == 120 and r["window"] == 10
    with pytest.raises(ConfigError, match="--decoder-only"):
        _bench("--model", str(models[0]), "--model", str(models[1]))
    with pytest.raises(ConfigError, match="--frames"):
        _bench("--decoder-only", "--frames", "0")


def test_synthetic_activity_looks_like_dff() -> None:
    a = bench.synthetic_activity(300, 600)
    assert a.shape == (600, 300) and a.dtype == np.float32
    assert 0 < np.median(a) < np.percentile(a, 99) and a.max() > 1.0  # sparse transients
    assert np.corrcoef(a[:-1, 0], a[1:, 0])[0, 1] > 0.5  # calcium decays over frames


def test_cli_errors_are_clear(models, cli_env) -> None:
    res = subprocess.run([sys.executable, "-m", "cortexcast", "bench", "--decoder-only",
                          "--model", str(models[0]), "--neurons", "7"], capture_output=True,
                         text=True, env=cli_env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "cortexcast bench: error: model" in res.stderr and "Traceback" not in res.stderr
