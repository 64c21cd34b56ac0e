"""Bookkeeping of ``cortexcast suite``: decoders scored on a family of simulated mice (issue 12).

For each family seed, :mod:`cortexcast.app.suite_command` draws a mouse
(:func:`cortexcast.daq.sim.family.sample_mouse`), simulates its dataset, trains the requested
methods and scores each on the held-out test tiers with the project's metric (the same mask
for all); this module holds the settings, results, summary, table and JSON (the import
layers keep training and ``simulate`` out of ``decoder.offline``). Methods:

* ``plain``: :mod:`cortexcast.decoder.training.plain_ridge`, the reference recipe (z-score →
  PCA 256 → responses t .. t+9 → one fixed-L2 ridge to every pixel);
* ``ridge``: ``cortexcast train --method ridge`` (ONNX, scored through the live path);
* ``decoder``: ``cortexcast train`` (the live decoder; torch, slow);
* ``crossmouse``: the live decoder calibrated on a core pretrained on other mice
  (``--pretrain-mice`` family mice from ``--pretrain-seed``, trained together with
  ``cortexcast train --data A --data B ...``; each suite mouse then ``train --core``).

Each score is also given as a ratio to the better of ``ridge`` and ``plain`` on that mouse;
the summary holds the median and minimum ratio per method over the mice.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

METHODS = ("ridge", "plain", "decoder", "crossmouse")
TEST_TIERS = ("final_test_main", "live_test_main")


@dataclass(frozen=True)
class SuiteSettings:
    out: str
    mice: int = 8
    seed: int = 10_000
    """First family seed (mice ``seed .. seed + mice - 1``); see ``SUITE_SEEDS``."""
    methods: tuple[str, ...] = ("ridge", "plain")
    max_trials: int | None = 40
    """Cap on each mouse's drawn training trials (None: as drawn, 30..240)."""
    max_neurons: int | None = 1500
    """Cap on each mouse's drawn neurons (None: as drawn, 2,000..8,000)."""
    test_trials: int = 10
    """Trials per test tier (final_test_main and live_test_main)."""
    oracle_clips: int = 4
    oracle_repeats: int = 3
    frames: int = 300
    frame_side: int | None = None
    """Imaging frame side (px); None: 256 up to 4,000 neurons, else 512."""
    lag: int | None = None
    """``--method ridge`` and the decoder's lag (window 10); None: each chooses window and lag
    on validation within ``max_lag_ms`` (what ``cortexcast train`` does by default)."""
    max_lag_ms: float = 300.0
    plain_alpha: float = 0.03
    plain_same_window: bool = False
    """Give ``plain`` the window of ``ridge`` at ``lag`` (t + lag - 9 .. t + lag) instead of
    the recipe's t .. t + 9 (the same when lag is 9)."""
    components: int = 256
    """PCA components of ``ridge`` and ``plain`` (the recipe's 256; fewer for smoke tests)."""
    decoder_budget_s: float | None = 300.0
    keep_data: bool = False
    trial_counts: tuple[int, ...] = ()
    """Learning curves: each mouse is simulated with the largest count and every method is
    trained on its first 30 / 60 / 120 ... trials (results keyed ``method@count``); empty:
    one fit per method on the drawn trials."""
    pretrain_mice: int = 4
    """``crossmouse``: family mice the shared core is pretrained on (all their trials, capped
    like the suite's mice)."""
    pretrain_seed: int = 20_000
    """``crossmouse``: first seed of the pretraining mice (disjoint from the suite's)."""
    pretrain_budget_s: float | None = None
    """``crossmouse``: time budget of the pretraining (None: ``decoder_budget_s`` x mice)."""
    core: str | None = None
    """``crossmouse``: use this pretrained core (``.core.npz``) instead of pretraining one."""

    def keys(self) -> tuple[str, ...]:
        """Result keys: the methods, or ``method@count`` for every count."""
        if not self.trial_counts:
            return self.methods
        return tuple(f"{m}@{c}" for c in self.trial_counts for m in self.methods)

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be among {', '.join(METHODS)}, got {self.methods}")
        if self.mice < 1:
            raise ValueError("mice must be >= 1")
        if self.lag is not None and not 0 <= self.lag <= 9:
            raise ValueError("lag must be in 0..9")
        if self.plain_same_window and self.lag is None:
            raise ValueError("--plain-same-window needs --lag")
        if any(c < 1 for c in self.trial_counts):
            raise ValueError(f"trial counts must be >= 1, got {self.trial_counts}")
        if "crossmouse" in self.methods and self.core is None:
            if self.pretrain_mice < 1:
                raise ValueError("crossmouse needs --pretrain-mice >= 1 (or --core)")
            pre = set(range(self.pretrain_seed, self.pretrain_seed + self.pretrain_mice))
            if pre & set(range(self.seed, self.seed + self.mice)):
                raise ValueError("the pretraining seeds overlap the suite's: a mouse would be "
                                 "scored on a core trained on its own data")


@dataclass
class MouseResult:
    seed: int
    mouse: dict[str, Any]
    scores: dict[str, float] = field(default_factory=dict)
    per_clip: dict[str, dict[str, float]] = field(default_factory=dict)
    times_s: dict[str, float] = field(default_factory=dict)
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What each trained model chose on validation (from its card)."""

    def reference(self, suffix: str = "") -> float:
        """The better ridge's score (``ridge`` / ``plain`` [+ ``@count``]; NaN if neither)."""
        vals = [self.scores[m + suffix] for m in ("ridge", "plain") if m + suffix in self.scores]
        vals = [v for v in vals if math.isfinite(v)]
        return max(vals) if vals else float("nan")

    def ratios(self) -> dict[str, float]:
        """Each score over the better ridge trained on the same number of trials.

        NaN where that ridge scored <= 0: a ratio to a score of no skill says nothing (and
        flips sign below 0).
        """
        out = {}
        for key, v in self.scores.items():
            ref = self.reference(key[key.index("@"):] if "@" in key else "")
            out[key] = v / ref if math.isfinite(ref) and ref > 0 else float("nan")
        return out


def summarise(results: Sequence[MouseResult], methods: Sequence[str]) -> dict[str, Any]:
    """Median and minimum ratio to the better ridge, and mean score, per method."""
    out: dict[str, Any] = {}
    for m in methods:
        ratios = np.array([r.ratios().get(m, np.nan) for r in results], np.float64)
        scores = np.array([r.scores.get(m, np.nan) for r in results], np.float64)
        ok = np.isfinite(ratios)
        out[m] = {"median_ratio": float(np.median(ratios[ok])) if ok.any() else None,
                  "min_ratio": float(np.min(ratios[ok])) if ok.any() else None,
                  "mean_score": float(np.nanmean(scores)) if np.isfinite(scores).any()
                  else None}
    if "ridge" in methods and "plain" in methods:
        diff = np.array([r.scores.get("ridge", np.nan) - r.scores.get("plain", np.nan)
                         for r in results])
        out["ridge_minus_plain"] = {"min": float(diff.min()), "median": float(np.median(diff)),
                                    "mice_below_minus_0.005": int((diff < -0.005).sum())}
    return out


def table(results: Sequence[MouseResult], methods: Sequence[str]) -> str:
    head = (f"{'mouse':>6} {'neur':>5} {'tri':>4} {'Hz':>5} {'indicator':>9} {'eye':>12} "
            + " ".join(f"{m:>8} {'ratio':>6}" for m in methods))
    lines = [head, "-" * len(head)]
    for r in results:
        d, rat = r.mouse, r.ratios()
        lines.append(f"{r.seed:>6} {d['n_neurons']:>5} {d['trials']:>4} "
                     f"{d['imaging_rate_hz']:>5.1f} {d['indicator']:>9} {d['eye_model']:>12} "
                     + " ".join(f"{r.scores.get(m, float('nan')):>8.4f} "
                                f"{rat.get(m, float('nan')):>6.3f}" for m in methods))
    summ = summarise(results, methods)
    lines.append("-" * len(head))
    lines.append("median ratio: " + ", ".join(
        f"{m} {summ[m]['median_ratio']:.3f}" for m in methods if summ[m]["median_ratio"]))
    lines.append("min ratio:    " + ", ".join(
        f"{m} {summ[m]['min_ratio']:.3f}" for m in methods if summ[m]["min_ratio"]))
    return "\n".join(lines)


def report(s: SuiteSettings, results: Sequence[MouseResult]) -> dict[str, Any]:
    """The ``suite.json`` content: settings, per-mouse scores and ratios, summary."""
    return {"settings": dataclasses.asdict(s),
            "mice": [{"seed": r.seed, "mouse": r.mouse, "scores": r.scores,
                      "ratio_to_better_ridge": r.ratios(), "times_s": r.times_s,
                      "choices": r.choices, "per_clip": r.per_clip} for r in results],
            "summary": summarise(results, s.keys()),
            "trial_counts": trial_count_curves(results, s) if s.trial_counts else None}


def write_report(path: Path, content: dict[str, Any]) -> None:
    """Strict JSON: NaN and infinities (no score, no ratio) are written as null."""
    path.write_text(json.dumps(_nan_none(content), indent=2, default=str,
                               allow_nan=False) + "\n")


def _nan_none(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _nan_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_none(v) for v in x]
    return x


def trial_count_curves(results: Sequence[MouseResult], s: SuiteSettings
                       ) -> dict[str, list[dict[str, Any]]]:
    """Per method, the mean (and std over mice) test score at each trial count."""
    top = max(s.trial_counts)
    curves: dict[str, list[dict[str, Any]]] = {}
    for m in s.methods:
        pts = []
        for c in s.trial_counts:
            v = np.array([r.scores.get(f"{m}@{c}", np.nan) for r in results], np.float64)
            v = v[np.isfinite(v)]
            pts.append({"fraction": c / top, "trials": c, "mice": int(v.size),
                        "mean": float(v.mean()) if v.size else None,
                        "std": float(v.std()) if v.size else None})
        curves[m] = pts
    return curves


def plot_trial_counts(results: Sequence[MouseResult], s: SuiteSettings, path: Path) -> None:
    """``trial_counts.png``: test score against training trials, one line per method."""
    from cortexcast.decoder.offline.report_images import curve_png

    curve_png(trial_count_curves(results, s), path, neurons=max(s.trial_counts),
              title=f"pixel correlation vs training trials ({len(results)} mice, mean +- sd)",
              x_label="training trials (first N of each mouse)")
