"""reconstruct / evaluate / train end to end on a tiny synthetic dataset."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app import offline_commands as cli
from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.offline.evaluate import evaluate
from cortexcast.decoder.live.model_card import ModelError, load_card, mask_path
from cortexcast.decoder.offline.reconstruct import reconstruct
from cortexcast.decoder.training.synthetic import write_linear_model, write_synthetic_dataset

N = 60


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("pipe") / "mouse", neurons=N)


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_linear_model(tmp_path_factory.mktemp("lin") / "lin.onnx", neurons=N, lag=5)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cortexcast")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register_train(sub)
    cli.register_evaluate(sub)
    cli.register_reconstruct(sub)
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_real_time_rule(data_dir: Path, linear_model: Path, tmp_path: Path) -> None:
    """Changing responses after frame t + L leaves reconstructions of frames <= t unchanged."""
    lag = load_card(linear_model).lag
    data = Path(shutil.copytree(data_dir, tmp_path / "mouse"))
    tid = SensoriumDataset(data).trial_ids("final_test_main")[0]
    before = reconstruct(data, linear_model, "final_test_main", tmp_path / "r1")
    assert len(before.files) == 3
    r1 = np.load(tmp_path / "r1" / f"{tid}.npy")
    t = 40
    f = data / f"data/responses/{tid}.npy"
    resp = np.load(f)
    resp[:, t + lag + 1:] += 100.0  # NaN padding stays NaN
    np.save(f, resp)
    reconstruct(data, linear_model, "final_test_main", tmp_path / "r2")
    r2 = np.load(tmp_path / "r2" / f"{tid}.npy")
    assert r1.shape == r2.shape == (80, 36, 64) and r2.dtype == np.float32
    np.testing.assert_array_equal(r2[: t + 1], r1[: t + 1])
    assert np.abs(r2[t + 1] - r1[t + 1]).max() > 1.0  # frame t+1 does use response t+1+L


def test_reconstruct_writes_every_trial_and_skips_withheld(data_dir: Path, linear_model: Path,
                                                          tmp_path: Path) -> None:
    ds = SensoriumDataset(data_dir)
    res = reconstruct(data_dir, linear_model, "oracle", tmp_path / "r")
    assert sorted(p.name for p in res.files) == sorted(f"{i}.npy" for i in ds.trial_ids("oracle"))
    skipped = reconstruct(data_dir, linear_model, "live_test_main", tmp_path / "w")
    assert skipped.files == [] and "has no responses" in (skipped.skipped or "")
    assert run_cli("reconstruct", "--data", str(data_dir), "--model", str(linear_model),
                   "--tier", "live_test_main", "--out", str(tmp_path / "w2"),
                   "--no-progress") == 0
    with pytest.raises(DatasetError, match="no trials in tier 'final_test_bonus'"):
        reconstruct(data_dir, linear_model, "final_test_bonus", tmp_path / "b")


def test_neuron_mismatch_and_missing_model(data_dir: Path, tmp_path: Path) -> None:
    other = write_linear_model(tmp_path / "n59.onnx", neurons=N - 1)
    with pytest.raises(ModelError, match=f"expects {N - 1} neurons but the dataset .* has {N}"):
        reconstruct(data_dir, other, "oracle", tmp_path / "r")
    with pytest.raises(ModelError, match=f"expects {N - 1} neurons"):
        evaluate(data_dir, "oracle", model_path=other)
    with pytest.raises(ModelError, match="does not exist"):
        reconstruct(data_dir, tmp_path / "nope.onnx", "oracle", tmp_path / "r")


def test_evaluate_errors(data_dir: Path, linear_model: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has no reconstruction of trial"):
        evaluate(data_dir, "oracle", recon_dir=tmp_path)
    with pytest.raises(DatasetError, match="--model needs responses"):
        evaluate(data_dir, "live_test_main", model_path=linear_model)
    ds = SensoriumDataset(data_dir)
    for tid in ds.trial_ids("oracle"):
        np.save(tmp_path / f"{tid}.npy", np.zeros((7, 36, 64), np.float32))
    with pytest.raises(DatasetError, match=r"reconstruction is \(7, 36, 64\), trial is"):
        evaluate(data_dir, "oracle", recon_dir=tmp_path)


def test_evaluate_withheld_tier_from_recon(data_dir: Path, tmp_path: Path) -> None:
    """Targets are videos, so a tier without responses can still be scored from files."""
    ds = SensoriumDataset(data_dir)
    for tid in ds.trial_ids("live_test_main"):
        np.save(tmp_path / f"{tid}.npy", ds.video(tid))
    res = evaluate(data_dir, "live_test_main", recon_dir=tmp_path)
    assert 0.95 < res.mean <= 1.0 and res.scored == 2
    assert res.mask_source.startswith("estimated from 16 train trials")


@pytest.mark.slow
def test_train_reconstruct_evaluate(data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    model = tmp_path / "model" / "model.onnx"
    assert run_cli("train", "--data", str(data_dir), "--out", str(model), "--epochs", "4",
                   "--time-budget", "20", "--seed", "0", "--device", "cpu",
                   "--no-progress") == 0
    card = load_card(model)
    chosen = card.extra["training"]["choices"]["window_lag"]  # on validation, within 300 ms
    assert (card.neurons, card.window, card.lag, card.height, card.width) == \
        (N, chosen["window"], chosen["lag"], 36, 64)
    assert card.lag >= 2  # the responses follow the movie 2 frames late
    assert card.onnx_max_abs_diff is not None and card.onnx_max_abs_diff < 1e-3 * 255
    assert card.validation_score is not None and card.validation_score > 0.3
    assert card.data_used["train_trials"] == 16 and card.data_used["validation"] == "oracle"
    assert card.training_time_s is not None and card.training_time_s > 0
    assert np.load(mask_path(model)).shape == (36, 64)
    assert model.stat().st_size < 20e6

    recon = tmp_path / "recon"
    assert run_cli("reconstruct", "--data", str(data_dir), "--model", str(model),
                   "--tier", "final_test_main", "--out", str(recon), "--no-progress") == 0
    out = tmp_path / "eval.json"
    assert run_cli("evaluate", "--data", str(data_dir), "--recon", str(recon),
                   "--tier", "final_test_main", "--json", str(out)) == 0
    result = json.loads(out.read_text())
    assert result["clips"] == result["clips_scored"] == 3
    assert result["mean"] > 0.3, result
    # in memory through the model gives the same per-clip scores with the same mask
    direct = evaluate(data_dir, "final_test_main", model_path=model)
    assert direct.mask_source.startswith("stored with the model")
    np.testing.assert_allclose(sorted(direct.per_clip.values()),
                               sorted(result["per_clip"].values()), atol=1e-6)
