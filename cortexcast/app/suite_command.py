"""``cortexcast suite``: decoders scored on a family of simulated mice (issue 12).

Draws ``--mice`` mice (:func:`cortexcast.daq.sim.family.sample_mouse`, seeds ``--seed`` ..),
simulates each, trains ``--methods`` and scores them on the held-out test tiers; the
bookkeeping (ratios, summary, table, JSON) is :mod:`cortexcast.decoder.offline.suite`.
Example (8 mice, ridge and the plain reference)::

    cortexcast suite --out runs/suite --mice 8 --seed 10000 --methods ridge,plain
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cortexcast.decoder.live.metric import mean_over_clips
from cortexcast.decoder.offline.suite import (
    TEST_TIERS, MouseResult, SuiteSettings, report, table, write_report)

log = logging.getLogger("decoder.suite")


def _score_onnx(data: Path, model: Path, mask: np.ndarray) -> dict[int, float]:
    from cortexcast.decoder.offline.evaluate import evaluate

    out: dict[int, float] = {}
    for tier in TEST_TIERS:
        out.update(evaluate(data, tier, model_path=model, mask=(mask, "dataset")).per_clip)
    return out


def simulate_mouse(seed: int, s: SuiteSettings, folder: Path,
                   say: Callable[[str], None]) -> tuple[MouseResult, Path]:
    """Draw family mouse ``seed`` and write its dataset to ``folder/data``."""
    from cortexcast.app.simulate import DatasetPlan, write_dataset
    from cortexcast.daq.sim.family import sample_mouse

    cap = max(s.trial_counts) if s.trial_counts else s.max_trials
    draw = sample_mouse(seed, max_neurons=s.max_neurons, max_trials=cap)
    side = s.frame_side or (256 if draw.settings.n_neurons <= 4000 else 512)
    settings = dataclasses.replace(draw.settings, frame_height=side, frame_width=side)
    draw = dataclasses.replace(draw, settings=settings,
                               trials=max(s.trial_counts) if s.trial_counts else draw.trials)
    res = MouseResult(seed, draw.describe())
    data = folder / "data"
    if data.exists():
        shutil.rmtree(data)
    t0 = time.monotonic()
    plan = DatasetPlan(train=draw.trials, test=s.test_trials, oracle_clips=s.oracle_clips,
                       oracle_repeats=s.oracle_repeats, frames=s.frames)
    write_dataset(data, settings, plan, log=lambda m: log.info("%s", m))
    res.times_s["simulate"] = round(time.monotonic() - t0, 1)
    say(f"mouse {seed}: {settings.n_neurons} neurons, {draw.trials} trials, "
        f"{settings.imaging_rate_hz:g} Hz, {draw.indicator}, eye {draw.eye_model} "
        f"(simulated in {res.times_s['simulate']:.0f} s)")
    return res, data


def pretrain_core(s: SuiteSettings, say: Callable[[str], None] = print) -> Path:
    """``crossmouse``'s core: ``s.core``, or one pretrained on ``s.pretrain_mice`` family
    mice (seeds from ``s.pretrain_seed``) with ``cortexcast train --data A --data B ...``."""
    if s.core is not None:
        return Path(s.core)
    from cortexcast.decoder.training.common import TrainSettings
    from cortexcast.decoder.training.multi_mouse import core_path_for, train_mice

    root = Path(s.out) / "pretrain"
    seeds = range(s.pretrain_seed, s.pretrain_seed + s.pretrain_mice)
    datas = [str(simulate_mouse(seed, s, root / f"mouse-{seed}", say)[1]) for seed in seeds]
    budget = s.pretrain_budget_s or (None if s.decoder_budget_s is None
                                     else s.decoder_budget_s * s.pretrain_mice)
    t0 = time.monotonic()
    out = root / "core.onnx"
    train_mice(datas, TrainSettings(data=datas[0], out=str(out), lag=s.lag, progress=False,
                                    max_lag_ms=s.max_lag_ms, time_budget_s=budget))
    say(f"pretrained the shared core on mice {seeds.start}..{seeds.stop - 1} in "
        f"{time.monotonic() - t0:.0f} s: {core_path_for(str(out))}")
    if not s.keep_data:
        for d in datas:
            shutil.rmtree(d, ignore_errors=True)
    return core_path_for(str(out))


def run_mouse(seed: int, s: SuiteSettings, say: Callable[[str], None] = print,
              core: Path | None = None) -> MouseResult:
    """Simulate family mouse ``seed``, train and score ``s.methods`` on it (at every
    ``s.trial_counts`` when given; ``core``: the pretrained core of ``crossmouse``)."""
    from cortexcast.decoder.offline.dataset import SensoriumDataset
    from cortexcast.decoder.offline.evaluate import choose_mask

    folder = Path(s.out) / f"mouse-{seed}"
    res, data = simulate_mouse(seed, s, folder, say)
    ds = SensoriumDataset(data)
    mask, _ = choose_mask(ds)
    for count in s.trial_counts or (None,):
        for method in s.methods:
            key = method if count is None else f"{method}@{count}"
            t1 = time.monotonic()
            per, res.choices[key] = _fit_and_score(method, ds, data, folder, key, count, mask,
                                                   s, core)
            res.times_s[key] = round(time.monotonic() - t1, 1)
            res.per_clip[key] = {str(k): float(v) for k, v in per.items()}
            res.scores[key] = mean_over_clips(list(per.values()))
            say(f"mouse {seed}: {key} {res.scores[key]:.4f} ({res.times_s[key]:.0f} s)")
    if not s.keep_data:
        shutil.rmtree(data, ignore_errors=True)
    return res


def _fit_and_score(method: str, ds, data: Path, folder: Path, key: str, count: int | None,
                   mask: np.ndarray, s: SuiteSettings, core: Path | None = None
                   ) -> tuple[dict[int, float], dict]:
    """Train ``method`` on ``data`` (first ``count`` training trials), score it on the test
    tiers; (per-clip scores, what it chose on validation)."""
    test_ids = [i for t in TEST_TIERS for i in ds.trial_ids(t)]
    if method == "plain":
        from cortexcast.decoder.training.plain_ridge import (
            PlainRidgeSettings, fit_plain_ridge, score_plain_ridge)

        train_ids = [i for i in ds.trial_ids("train") if ds.trials[i].has_responses]
        model = fit_plain_ridge(ds, PlainRidgeSettings(
            components=s.components, alpha=s.plain_alpha,
            first=(s.lag - 9) if s.plain_same_window and s.lag is not None else 0),
            ids=train_ids[:count] if count else None)
        return score_plain_ridge(ds, model, test_ids, mask), {"alpha": s.plain_alpha}
    path = folder / f"{key.replace('@', '.')}.onnx"
    if method == "ridge":
        from cortexcast.decoder.training.ridge import RidgeSettings, train_ridge

        card = train_ridge(RidgeSettings(
            data=str(data), out=str(path), lag=s.lag, max_lag_ms=s.max_lag_ms,
            train_trials=count, components=s.components, progress=False)).card
        tr = card.extra["training"]
        chose = {"window": card.window, "lag": card.lag, "alpha": tr["alpha"]}
    else:
        from cortexcast.decoder.training.common import TrainSettings
        from cortexcast.decoder.training.train import train

        cross = method == "crossmouse"
        card = train(TrainSettings(data=str(data), out=str(path), progress=False,
                                   lag=None if cross else s.lag, max_lag_ms=s.max_lag_ms,
                                   train_trials=count, time_budget_s=s.decoder_budget_s,
                                   core=str(core) if cross else None)).card
        ch = card.extra["training"]["choices"]
        chose = {"window": card.window, "lag": card.lag,
                 "eye_shift_px_per_z": ch["eye_shift"]["kept_px_per_z"],
                 "gain": ch["gain"].get("kept"), "members": ch["members"]["kept"],
                 "neuron_weights": ch.get("neuron_weights", {}).get("kept")}
    return _score_onnx(data, path, mask), chose


def run_suite(s: SuiteSettings, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every mouse, write ``<out>/suite.json`` after each (partial results survive)."""
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[MouseResult] = []
    content: dict[str, Any] = {}
    core = pretrain_core(s, say) if "crossmouse" in s.methods else None
    for seed in range(s.seed, s.seed + s.mice):
        results.append(run_mouse(seed, s, say, core))
        content = report(s, results)
        write_report(out / "suite.json", content)
    say(table(results, s.keys()))
    if s.trial_counts:
        from cortexcast.decoder.offline.suite import plot_trial_counts

        plot_trial_counts(results, s, out / "trial_counts.png")
        say(f"wrote {out / 'trial_counts.png'}")
    return content


def run(args: argparse.Namespace) -> int:
    try:
        s = SuiteSettings(
            out=args.out, mice=args.mice, seed=args.seed,
            methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
            max_trials=args.trials or None, max_neurons=args.neurons or None,
            test_trials=args.test_trials, oracle_clips=args.oracle_clips,
            oracle_repeats=args.oracle_repeats, frames=args.frames,
            frame_side=args.frame_side, lag=args.lag, max_lag_ms=args.max_lag_ms,
            plain_alpha=args.plain_alpha,
            components=args.components, plain_same_window=args.plain_same_window,
            decoder_budget_s=args.decoder_budget, keep_data=args.keep_data,
            trial_counts=tuple(int(c) for c in args.trial_counts.split(",") if c.strip()),
            pretrain_mice=args.pretrain_mice, pretrain_seed=args.pretrain_seed,
            pretrain_budget_s=args.pretrain_budget, core=args.core)
    except ValueError as exc:
        print(f"cortexcast suite: error: {exc}", file=sys.stderr)
        return 2
    if not args.verbose:
        logging.getLogger("decoder").setLevel(logging.WARNING)
    report = run_suite(s)
    print(f"wrote {args.out}/suite.json ({len(report['mice'])} mice)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "suite", help="score decoders on a family of simulated mice",
        description="Draw --mice mice from the simulator's family (daq/sim/family.py), simulate "
                    "each, train the methods and score them on the held-out test tiers; "
                    "prints a table and writes suite.json with per-mouse scores, ratios to "
                    "the better ridge, median and minimum ratios.")
    p.add_argument("--out", required=True, help="folder for suite.json and per-mouse models")
    p.add_argument("--mice", type=int, default=8, help="mice to draw (default 8)")
    p.add_argument("--seed", type=int, default=10_000,
                   help="first family seed (default 10000; development used 900..999)")
    p.add_argument("--methods", default="ridge,plain",
                   help="comma-separated among ridge, plain, decoder, crossmouse (the decoder "
                        "calibrated on a core pretrained on --pretrain-mice other mice; "
                        "default ridge,plain)")
    p.add_argument("--trials", type=int, default=40,
                   help="cap on the drawn training trials (default 40; 0: as drawn, 30..240)")
    p.add_argument("--neurons", type=int, default=1500,
                   help="cap on the drawn neurons (default 1500; 0: as drawn, 2000..8000)")
    p.add_argument("--test-trials", type=int, default=10, help="trials per test tier (10)")
    p.add_argument("--oracle-clips", type=int, default=4, help="validation clips (default 4)")
    p.add_argument("--oracle-repeats", type=int, default=3, help="repeats of each (default 3)")
    p.add_argument("--frames", type=int, default=300, help="stimulus frames per trial (300)")
    p.add_argument("--frame-side", type=int, default=None,
                   help="imaging frame side in px (default 256 up to 4000 neurons, else 512)")
    p.add_argument("--lag", type=int, default=None,
                   help="lag of ridge and decoder, window 10 (default: each chooses window "
                        "and lag on validation within --max-lag-ms, as `train` does)")
    p.add_argument("--max-lag-ms", type=float, default=300.0,
                   help="latency budget of the window/lag choice (ms, default 300)")
    p.add_argument("--plain-alpha", type=float, default=0.03,
                   help="the plain ridge's one relative L2 penalty (default 0.03)")
    p.add_argument("--plain-same-window", action="store_true",
                   help="give the plain ridge --lag's window (t+lag-9..t+lag), not t..t+9")
    p.add_argument("--components", type=int, default=256,
                   help="PCA components of ridge and plain (default 256, the recipe's)")
    p.add_argument("--decoder-budget", type=float, default=300.0,
                   help="time budget of the live decoder per mouse (s, default 300)")
    p.add_argument("--keep-data", action="store_true", help="keep the simulated datasets")
    p.add_argument("--trial-counts", default="", metavar="N,N,...",
                   help="learning curves: simulate each mouse with the largest count, train "
                        "every method on its first N trials for each N (e.g. 30,60,120); "
                        "writes trial_counts.png")
    p.add_argument("--pretrain-mice", type=int, default=4,
                   help="crossmouse: family mice the shared core is pretrained on (default 4)")
    p.add_argument("--pretrain-seed", type=int, default=20_000,
                   help="crossmouse: first seed of the pretraining mice (default 20000)")
    p.add_argument("--pretrain-budget", type=float, default=None, metavar="SECONDS",
                   help="crossmouse: pretraining time budget (default --decoder-budget x "
                        "--pretrain-mice)")
    p.add_argument("--core", default=None, metavar="CORE.npz",
                   help="crossmouse: a pretrained core to use instead of pretraining one")
    p.add_argument("--verbose", action="store_true", help="log training progress")
    p.set_defaults(func=run)
