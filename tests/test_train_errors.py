"""``cortexcast train`` / ``reconstruct`` / ``evaluate`` refuse bad input with one clear line.

Each case runs the subcommand as ``cortexcast.app.cli.main`` does (same parser registration, same
user-error handling) and checks: exit status 2,
``cortexcast <cmd>: error: ...`` naming the problem on stderr, no traceback, nothing written.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from cortexcast.decoder.training.synthetic import write_linear_model, write_synthetic_dataset

pytest.importorskip("torch")
N = 40


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("err") / "mouse", neurons=N,
                                   tiers={"train": 6, "oracle": 2, "final_test_main": 2},
                                   length=40, padded=50)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """The decoder subcommands with ``cortexcast.app.cli.main``'s handling of user errors."""
    import argparse

    from cortexcast.app.cli import _user_errors
    from cortexcast.app import offline_commands as cli

    parser = argparse.ArgumentParser(prog="cortexcast")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (cli.register_train, cli.register_reconstruct, cli.register_evaluate):
        register(sub)
    args = parser.parse_args(list(argv))
    try:
        code = int(args.func(args) or 0)
    except _user_errors() as exc:
        print(f"cortexcast {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    return code, capsys.readouterr().err


def train_args(data: Path, out: Path) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--time-budget", "5",
            "--device", "cpu", "--ensemble", "1", "--no-progress"]


def assert_user_error(code: int, err: str, command: str, *needles: str) -> None:
    assert code == 2, err
    assert f"cortexcast {command}: error:" in err, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_folder_not_in_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "notadataset"
    (bad / "data" / "videos").mkdir(parents=True)
    out = tmp_path / "m.onnx"
    code, err = run(capsys, *train_args(bad, out))
    assert_user_error(code, err, "train", "not a dataset in the Sensorium 2023 layout",
                      "data/responses", "meta/trials/tiers.npy")
    assert not out.exists()


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(capsys, *train_args(tmp_path / "nowhere", tmp_path / "m.onnx"))
    assert_user_error(code, err, "train", "does not exist")


def test_mismatched_neuron_counts(good: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    data = Path(shutil.copytree(good, tmp_path / "mouse"))
    f = data / "data/responses/3.npy"
    np.save(f, np.load(f)[: N - 5])
    code, err = run(capsys, *train_args(data, tmp_path / "m.onnx"))
    assert_user_error(code, err, "train", "different neuron counts", f"{N - 5} (e.g. trial 3)",
                      f"{N} (e.g. trial 0)")
    assert not (tmp_path / "m.onnx").exists()


def test_nan_only_training_trials(good: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    from cortexcast.decoder.offline.dataset import SensoriumDataset

    data = Path(shutil.copytree(good, tmp_path / "mouse"))
    ids = sorted(SensoriumDataset(data).trial_ids("train"))[1:3]
    for tid in ids:
        f = data / f"data/responses/{tid}.npy"
        np.save(f, np.full_like(np.load(f), np.nan))
    code, err = run(capsys, *train_args(data, tmp_path / "m.onnx"))
    assert_user_error(code, err, "train", "only NaN responses", f"trials {ids[0]}, {ids[1]}",
                      "'train'")
    assert not (tmp_path / "m.onnx").exists()


def test_all_training_trials_nan(good: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    data = Path(shutil.copytree(good, tmp_path / "mouse"))
    for f in (data / "data/responses").glob("*.npy"):
        np.save(f, np.full_like(np.load(f), np.nan))
    code, err = run(capsys, *train_args(data, tmp_path / "m.onnx"))
    assert_user_error(code, err, "train", "only NaN responses")


def test_ridge_method_same_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "empty"
    bad.mkdir()
    code, err = run(capsys, "train", "--method", "ridge", "--data", str(bad), "--out",
                    str(tmp_path / "r.onnx"), "--no-progress")
    assert_user_error(code, err, "train", "not a dataset in the Sensorium 2023 layout")


def test_bad_settings(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(capsys, *train_args(good, tmp_path / "m.onnx"), "--lag", "12")
    assert_user_error(code, err, "train", "lag must be in 0..window-1")
    code, err = run(capsys, *train_args(good, tmp_path / "m.onnx"), "--max-lag-ms", "-5")
    assert_user_error(code, err, "train", "max lag must be a finite number of ms >= 0")
    code, err = run(capsys, *train_args(good, tmp_path / "m.onnx"), "--train-trials", "0")
    assert_user_error(code, err, "train", "train_trials must be >= 1")
    code, err = run(capsys, *train_args(good, tmp_path / "m.txt"))
    assert_user_error(code, err, "train", "must end in .onnx")
    code, err = run(capsys, "train", "--method", "ridge", "--data", str(good), "--data",
                    str(good), "--out", str(tmp_path / "r.onnx"))
    assert_user_error(code, err, "train", "--method ridge takes one --data folder")


@pytest.mark.parametrize("command", ["reconstruct", "evaluate"])
def test_model_neuron_count_mismatch(good: Path, tmp_path: Path, command: str,
                                     capsys: pytest.CaptureFixture) -> None:
    model = write_linear_model(tmp_path / "wrong.onnx", neurons=N + 7, lag=5)
    extra = ["--out", str(tmp_path / "rec")] if command == "reconstruct" else []
    code, err = run(capsys, command, "--data", str(good), "--model", str(model),
                    "--tier", "final_test_main", *extra)
    assert_user_error(code, err, command, f"expects {N + 7} neurons",
                      f"has {N}", "use a model trained on this dataset")
    assert not (tmp_path / "rec").exists() or not any((tmp_path / "rec").iterdir())
