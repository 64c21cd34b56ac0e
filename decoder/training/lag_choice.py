"""Window and lag chosen on validation within a latency budget (issue 12).

A reconstruction of stimulus frame t from responses ``t + lag - W + 1 .. t + lag`` cannot
leave before response ``t + lag`` arrives, so the lag is latency the user pays. The best lag
depends on the mouse (indicator kinetics, visual latency, imaging rate): one default (5, then
9) lost up to 6 % on mice it did not fit. ``cortexcast train`` therefore tries every
(window, lag) with ``lag <= max_lag_ms`` on the validation trials and keeps the longest
window at the longest lag unless another is clearly better there, clip by clip
(:func:`~.ridge_fit.clearly_better`: a free arg-max over a few repeated validation clips
picked lags that lost on test).

All candidates come from one pass over the training data: every candidate's design columns
are a contiguous block of one *wide* padded window (offsets ``-(W_max - 1) .. max lag``;
rows outside a trial are zero raw rows in both, so the block is exactly the candidate's own
design), so Xᵀ X and Xᵀ Y are accumulated once and each candidate costs one eigensolve of
its block. Targets are the top frame principal components (the decoder's own basis), the
score is the project's pixel correlation per validation trial (single trials, as test is
scored) and each candidate gets its alpha by :func:`~.ridge_fit.choose_alpha`.

No torch: ``--method ridge`` uses this too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from cortexcast.decoder.live.metric import clip_correlation
from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.training.features import fit_pixel_basis
from cortexcast.decoder.training.ridge_fit import (
    Sums, choose_alpha, clearly_better, fit_ridge, windows_flat,
)

if TYPE_CHECKING:
    from cortexcast.decoder.training.common import ModelSettings

TrialFeatures = Callable[[int, int, int], np.ndarray]
"""(trial id, window, lag) -> that trial's padded front-end features (T + W - 1, K)."""

FRAME_RATE_HZ = 30.0
"""Rows per second of a Sensorium 2023-layout dataset (responses resampled to the stimulus)."""
CHOICE_FRAME_COMPONENTS = 256
"""Frame principal components the candidates are fitted to (the decoder's own default)."""


@dataclass(frozen=True)
class WindowChoice:
    """What :func:`choose_window` picked, and the validation score of every candidate."""

    window: int
    lag: int
    alpha: float
    score: float
    max_lag: int
    scores: dict[str, float] = field(default_factory=dict)
    """Validation r of each candidate, keyed ``"W<window>/L<lag>"`` (at its chosen alpha)."""
    default: str = ""
    """The candidate kept unless another beats it by two standard errors, clip by clip."""

    def describe(self) -> str:
        return (f"window {self.window}, lag {self.lag} ({self.lag_ms():.0f} ms) chosen on "
                f"validation among {len(self.scores)} candidates with lag <= {self.max_lag} "
                f"(r {self.score:.4f})")

    def lag_ms(self) -> float:
        return 1000.0 * self.lag / FRAME_RATE_HZ

    def to_dict(self) -> dict:
        return {"window": self.window, "lag": self.lag, "lag_ms": round(self.lag_ms(), 1),
                "alpha": self.alpha, "score": self.score, "max_lag": self.max_lag,
                "default": self.default, "candidates": self.scores,
                "rule": "the default (longest window, longest lag within the budget) unless "
                        "another beats it by 2 standard errors of the paired per-clip "
                        "difference; then the best of those"}


def max_lag_frames(max_lag_ms: float, window: int) -> int:
    """The longest lag (dataset rows) within ``max_lag_ms`` and the window."""
    if not (max_lag_ms >= 0 and math.isfinite(max_lag_ms)):
        raise ValueError(f"max lag must be a finite number of ms >= 0, got {max_lag_ms}")
    return max(0, min(window - 1, int(math.floor(max_lag_ms * FRAME_RATE_HZ / 1000 + 1e-9))))


def candidates(window: int, max_lag: int) -> list[tuple[int, int]]:
    """(window, lag) pairs tried: the full window and half of it, every lag up to ``max_lag``."""
    windows = sorted({window, max(1, (window + 1) // 2)}, reverse=True)
    return [(w, lag) for w in windows for lag in range(0, min(w - 1, max_lag) + 1)]


def wide_window(cands: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(window, lag) of the one padded window that holds every candidate's rows."""
    first = min(lag - w + 1 for w, lag in cands)
    last = max(lag for _, lag in cands)
    return last - first + 1, last


def block_columns(cand: tuple[int, int], wide: tuple[int, int], k: int) -> np.ndarray:
    """Columns of the wide design that make up ``cand``'s design (oldest row first)."""
    w, lag = cand
    wide_w, wide_lag = wide
    start = (lag - w + 1) - (wide_lag - wide_w + 1)
    return np.arange(start * k, (start + w) * k)


def near_alphas(alphas: Sequence[float], default: float | None) -> tuple[float, ...]:
    """The alphas within a factor 3.5 of ``default`` (every alpha when None): what each
    candidate is scored at (the full grid x every candidate costs minutes for nothing)."""
    if default is None:
        return tuple(alphas)
    near = tuple(a for a in alphas if abs(math.log(a / default)) <= math.log(3.5))
    return near or tuple(alphas)


def choose_window(train: Iterable[tuple[np.ndarray, np.ndarray]],
                  val: Sequence[tuple[np.ndarray, np.ndarray]], cands: Sequence[tuple[int, int]],
                  alphas: Sequence[float], default_alpha: float | None, pix_mean: np.ndarray,
                  basis: np.ndarray, mask: np.ndarray, shape: tuple[int, int],
                  say: Callable[[str], None] = lambda _: None) -> WindowChoice:
    """The (window, lag) of ``cands`` the validation trials support: the longest window at
    the longest lag unless others beat it clearly clip by clip, then the best of those.

    ``train`` / ``val`` yield (features of one trial padded for :func:`wide_window`
    (T + W_wide - 1, K) float32, its video (T, H·W)); ``basis`` (H·W, P) are the frame
    principal axes the targets are projected on, ``pix_mean`` (H·W,) their mean.
    """
    if not cands:
        raise ValueError("no (window, lag) candidates")
    alphas = near_alphas(alphas, default_alpha)
    wide = wide_window(cands)
    sums: Sums | None = None
    k = 0
    for f32, video in train:
        k = f32.shape[1]
        if sums is None:
            sums = Sums.zeros(wide[0] * k, basis.shape[1])
        y = ((video.reshape(len(video), -1) - pix_mean) @ basis).astype(np.float32)
        sums.add(f32, y, wide[0])
    if sums is None or sums.count < 2:
        raise ValueError("too few training frames to choose a window")
    val_designs = [(windows_flat(f, len(v), wide[0]), v.reshape(len(v), *shape))
                   for f, v in val]
    scores: dict[str, float] = {}
    per_cand, cand_alpha = [], []
    for cand in cands:
        cols = block_columns(cand, wide, k)
        fit = fit_ridge(sums.xtx[np.ix_(cols, cols)], sums.xty[cols], sums.x_sum[cols],
                        sums.y_sum, sums.count, alphas)
        per = np.full((len(val_designs), len(alphas)), np.nan)
        for i, (x, target) in enumerate(val_designs):
            xe = ((x[:, cols] - fit.x_mean) @ fit.evecs).astype(np.float32)
            for j in range(len(alphas)):
                g = (1.0 / (fit.evals + fit.penalty(j))).astype(np.float32)
                coef = (xe * g) @ fit.proj.astype(np.float32) + fit.y_mean
                recon = (coef @ basis.T + pix_mean).reshape(len(x), *shape)
                per[i, j] = clip_correlation(recon, target, mask)
        j, means = choose_alpha(per, alphas, default_alpha)
        r = float(means[j])
        scores[f"W{cand[0]}/L{cand[1]}"] = round(r, 5)
        per_cand.append(per[:, j])
        cand_alpha.append(float(alphas[j]))
        say(f"window {cand[0]}, lag {cand[1]}: validation r {r:.4f} (alpha {alphas[j]:g})")
    # the longest window at the longest lag (all the data the budget allows) by default
    longest = max(range(len(cands)), key=lambda i: (cands[i][1], cands[i][0]))
    i, means = clearly_better(np.array(per_cand).T, longest)
    if not np.isfinite(means[i]):
        raise ValueError("no (window, lag) candidate scored on the validation trials")
    (w, lag), alpha = cands[i], cand_alpha[i]
    return WindowChoice(w, lag, alpha, float(means[i]), max(lag for _, lag in cands), scores,
                        f"W{cands[longest][0]}/L{cands[longest][1]}")



def resolve_window(s: "ModelSettings", ds: SensoriumDataset, train_ids: Sequence[int],
                   val_ids: Sequence[int], features: TrialFeatures, mask: np.ndarray,
                   alphas: Sequence[float], say: Callable[[str], None] = lambda _: None,
                   frame_basis: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple["ModelSettings", WindowChoice | None]:
    """``s`` with window and lag chosen (when ``s.lag`` is None) and the choice; ``s`` and
    None when the user set the lag. ``features(tid, window, lag)`` is the trial's padded
    front-end features, the method's own (ridge: PCA; decoder: gain + PCA); ``frame_basis``
    (mean, axes) the frame components to fit (default: the top 256 of the training frames)."""
    if s.lag is not None:
        return s, None
    cands = candidates(s.window, max_lag_frames(s.max_lag_ms, s.window))
    wide = wide_window(cands)
    pix_mean, basis = frame_basis or fit_pixel_basis(ds, train_ids, CHOICE_FRAME_COMPONENTS)
    train = ((features(t, *wide), ds.video(t)) for t in train_ids)
    val = [(features(t, *wide), ds.video(t)) for t in val_ids]
    choice = choose_window(train, val, cands, alphas, s.default_alpha, pix_mean, basis, mask,
                           ds.frame_shape, say)
    return dataclasses.replace(s, window=choice.window, lag=choice.lag), choice
