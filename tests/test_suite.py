"""``cortexcast suite`` (decoder/offline/suite.py) and ridge >= the plain ridge (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app.cli import main
from cortexcast.app.suite_command import run_mouse
from cortexcast.decoder.offline.suite import MouseResult, SuiteSettings, summarise, write_report
from cortexcast.decoder.training.ridge_fit import choose_alpha, clearly_better


def test_ratios_and_summary():
    a = MouseResult(1, {}, {"ridge": 0.4, "plain": 0.38})
    b = MouseResult(2, {}, {"ridge": 0.3, "plain": 0.33})
    assert a.ratios() == pytest.approx({"ridge": 1.0, "plain": 0.95})
    s = summarise([a, b], ("ridge", "plain"))
    assert s["ridge"]["min_ratio"] == pytest.approx(0.3 / 0.33)
    assert s["ridge_minus_plain"]["mice_below_minus_0.005"] == 1


def test_no_ratio_to_a_ridge_without_skill_and_the_report_is_strict_json(tmp_path):
    bad = MouseResult(3, {}, {"ridge": -0.10, "plain": -0.13, "decoder": 0.05})
    assert all(np.isnan(v) for v in bad.ratios().values())  # not 1.3 for the worse one
    good = MouseResult(4, {}, {"ridge": 0.5, "plain": 0.4, "decoder": 0.6})
    s = summarise([bad, good], ("ridge", "plain", "decoder"))
    assert s["decoder"]["min_ratio"] == pytest.approx(1.2)  # the mouse without skill left out
    path = tmp_path / "suite.json"
    write_report(path, {"mice": [{"ratio_to_better_ridge": bad.ratios()}], "x": (1.5, np.inf)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["mice"][0]["ratio_to_better_ridge"]["decoder"] is None
    assert loaded["x"] == [1.5, None]


def test_choose_alpha_keeps_the_default_without_clear_evidence():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 12)
    noisy = np.stack([base, base + rng.normal(0.002, 0.02, 12)], axis=1)
    assert choose_alpha(noisy, (0.03, 1.0), 0.03)[0] == 0
    clear = np.stack([base, base + 0.05], axis=1)
    assert choose_alpha(clear, (0.03, 1.0), 0.03)[0] == 1
    assert choose_alpha(noisy, (0.03, 1.0), None)[0] == int(np.argmax(noisy.mean(0)))


def test_clearly_better_takes_the_best_of_the_options_that_beat_the_default():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.4, 12)
    # column 1 is clearly better than the default 0, column 2 a little better on average
    # but only by noise, column 3 clearly better and best: 3 wins, not the noisy arg-max
    per = np.stack([base, base + 0.02 + rng.normal(0, 0.002, 12),
                    base + 0.05 + 0.4 * (-1.0) ** np.arange(12), base + 0.03], axis=1)
    j, means = clearly_better(per, 0)
    assert j == 3 and np.argmax(means) == 2
    assert clearly_better(per[:, [0, 2]], 0)[0] == 0  # only the noisy one: the default
    assert clearly_better(per[:1], 0)[0] == 0  # one clip: no standard error, the default


def test_settings_refuse_unknown_methods(tmp_path):
    with pytest.raises(ValueError):
        SuiteSettings(out=str(tmp_path), methods=("ridge", "lasso"))


@pytest.mark.slow
def test_suite_command_end_to_end_on_two_tiny_mice(tmp_path, capsys):
    rc = main(["suite", "--out", str(tmp_path), "--mice", "2", "--seed", "990",
               "--trial-counts", "2,4", "--neurons", "200", "--test-trials", "2",
               "--oracle-clips", "1", "--oracle-repeats", "2", "--frames", "60",
               "--frame-side", "128", "--components", "16"])
    assert rc == 0
    report = json.loads((tmp_path / "suite.json").read_text())
    assert [m["seed"] for m in report["mice"]] == [990, 991]
    for m in report["mice"]:
        assert m["mouse"]["trials"] == 4  # simulated with the largest count
        assert set(m["scores"]) == {"ridge@2", "plain@2", "ridge@4", "plain@4"}
        for c in (2, 4):  # each ratio is to the better ridge fitted on as many trials
            r, sc = m["ratio_to_better_ridge"], m["scores"]
            if max(sc[f"ridge@{c}"], sc[f"plain@{c}"]) > 0:
                assert max(r[f"ridge@{c}"], r[f"plain@{c}"]) == pytest.approx(1.0)
            else:  # no ratio to a ridge without skill (written as null, strict JSON)
                assert r[f"ridge@{c}"] is None and r[f"plain@{c}"] is None
        assert m["choices"]["ridge@4"]["lag"] <= 9
    assert report["summary"]["ridge@4"]["median_ratio"] is not None
    curves = report["trial_counts"]
    assert [p["trials"] for p in curves["ridge"]] == [2, 4]
    assert all(p["mice"] == 2 for p in curves["plain"])
    png = tmp_path / "trial_counts.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "median ratio" in capsys.readouterr().out


def test_crossmouse_pretraining_seeds_must_not_overlap_the_suite(tmp_path):
    with pytest.raises(ValueError, match="overlap"):
        SuiteSettings(out=str(tmp_path), methods=("crossmouse",), seed=100, mice=4,
                      pretrain_seed=103)
    with pytest.raises(ValueError, match="pretrain-mice"):
        SuiteSettings(out=str(tmp_path), methods=("crossmouse",), pretrain_mice=0)
    SuiteSettings(out=str(tmp_path), methods=("crossmouse",), pretrain_mice=0, core="c.npz")


@pytest.mark.slow
def test_suite_crossmouse_pretrains_a_core_and_calibrates_each_mouse(tmp_path, capsys):
    from cortexcast.decoder.training.core_file import load_core

    rc = main(["suite", "--out", str(tmp_path), "--mice", "1", "--seed", "993",
               "--methods", "ridge,crossmouse", "--pretrain-mice", "2", "--pretrain-seed",
               "994", "--trials", "4", "--neurons", "150", "--test-trials", "2",
               "--oracle-clips", "2", "--oracle-repeats", "2", "--frames", "60",
               "--frame-side", "128", "--components", "16", "--decoder-budget", "4"])
    assert rc == 0
    core = load_core(tmp_path / "pretrain" / "core.core.npz")
    assert [Path(m).parent.name for m in core.meta.mice] == ["mouse-994", "mouse-995"]
    report = json.loads((tmp_path / "suite.json").read_text())
    (mouse,) = report["mice"]
    assert set(mouse["scores"]) == {"ridge", "crossmouse"}
    assert mouse["choices"]["crossmouse"]["lag"] == core.meta.lag
    card = json.loads((tmp_path / "mouse-993" / "crossmouse.json").read_text())
    assert card["extra"]["training"]["core"]["pretrained_on"] == list(core.meta.mice)
    assert "pretrained the shared core" in capsys.readouterr().out


@pytest.mark.slow
def test_ridge_is_not_worse_than_the_plain_ridge_on_a_small_simulated_mouse(tmp_path):
    s = SuiteSettings(out=str(tmp_path), methods=("ridge", "plain"), max_trials=30,
                      max_neurons=800, test_trials=6, oracle_clips=3, oracle_repeats=2)
    r = run_mouse(905, s, say=lambda m: None)  # a development seed (daq/sim/family.py)
    assert r.scores["ridge"] >= r.scores["plain"] - 0.005, r.scores


def test_ridge_with_cross_validation_records_the_fold_scores(tmp_path):
    from cortexcast.decoder.training.ridge import RidgeSettings, train_ridge
    from cortexcast.decoder.training.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "syn", neurons=60, withheld=())
    res = train_ridge(RidgeSettings(data=str(data), out=str(tmp_path / "m.onnx"), window=3,
                                    lag=1, components=16, cv_folds=4, progress=False,
                                    alphas=(0.01, 0.1, 1.0)))
    training = res.card.extra["training"]
    assert training["cv_folds"] == 4
    assert all("cv_r" in h and np.isfinite(h["cv_r"]) for h in training["history"])
