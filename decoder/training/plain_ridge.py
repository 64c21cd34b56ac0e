"""The plain ridge reference of issue 12, written to the letter of its recipe.

z-scored responses (mean and std of the training frames) → PCA to ``components`` axes
(exact: the top eigenvectors of the covariance of all training frames) → the ``lags``
frames ``t .. t + lags - 1`` stacked (frames past a trial's end are zeros in z-space,
i.e. the mean) → one ridge to every pixel (full rank), with one fixed, strong L2 penalty
and an unpenalised intercept.

It is deliberately not the project's ridge: no dataset statistics, no validation tier, no
alpha grid, no reduced rank, no ONNX. :mod:`cortexcast.decoder.offline.suite` uses it as
the yardstick ``--method ridge`` must not fall below. numpy/scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import linalg

from cortexcast.decoder.live.metric import per_clip_correlation
from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset


@dataclass(frozen=True)
class PlainRidgeSettings:
    components: int = 256
    """K: principal components of the z-scored responses (capped at the neuron count)."""
    lags: int = 10
    """Response frames t + first .. t + first + lags - 1 used for stimulus frame t."""
    first: int = 0
    """Offset of the first response frame (the recipe: 0; ``lag - 9`` gives the window of
    ``--method ridge`` at ``lag`` with window 10, for a same-window comparison)."""
    alpha: float = 1.0
    """The one L2 penalty, relative: penalty = alpha × mean eigenvalue of the centred XᵀX
    (so it does not depend on the data's scale). Fixed, never tuned per mouse."""
    train_tier: str = "train"

    def __post_init__(self) -> None:
        if self.components < 1 or self.lags < 1:
            raise ValueError("components and lags must be >= 1")
        if not (self.alpha > 0 and np.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a positive finite number, got {self.alpha!r}")


@dataclass(frozen=True)
class PlainRidge:
    """A fitted plain ridge: raw responses (T, N) → frames (T, H, W)."""

    mean: np.ndarray  # (N,)
    inv_std: np.ndarray  # (N,)
    axes: np.ndarray  # (N, K)
    weights: np.ndarray  # (L·K, P)
    bias: np.ndarray  # (P,)
    lags: int
    frame_shape: tuple[int, int]
    first: int = 0

    def features(self, responses: np.ndarray) -> np.ndarray:
        """(T, L·K) lagged PCA features of one trial."""
        r = np.nan_to_num(np.asarray(responses, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        return lagged((r - self.mean) * self.inv_std @ self.axes, self.lags, self.first)

    def predict(self, responses: np.ndarray) -> np.ndarray:
        f = self.features(responses)
        return (f @ self.weights + self.bias).reshape(len(f), *self.frame_shape)


def lagged(z: np.ndarray, lags: int, first: int = 0) -> np.ndarray:
    """(T, K) → (T, L·K): row t = z[t + first], …, z[t + first + L - 1]; zeros (the mean in
    z-space) outside the trial."""
    t, k = z.shape
    before, after = max(0, -first), max(0, first + lags - 1)
    padded = np.vstack([np.zeros((before, k), z.dtype), z, np.zeros((after, k), z.dtype)])
    start = before + first
    return np.hstack([padded[start + a:start + a + t] for a in range(lags)])


def _train_ids(ds: SensoriumDataset, tier: str) -> list[int]:
    ids = [i for i in ds.trial_ids(tier) if ds.trials[i].has_responses]
    if not ids:
        raise DatasetError(f"{ds.root}: no {tier} trials with responses")
    return ids


def fit_plain_ridge(ds: SensoriumDataset, s: PlainRidgeSettings = PlainRidgeSettings(),
                    ids: Sequence[int] | None = None) -> PlainRidge:
    """Fit the recipe on ``ids`` (default: every ``train_tier`` trial), streaming trials."""
    ids = list(ids) if ids is not None else _train_ids(ds, s.train_tier)
    n = ds.n_neurons
    k = min(s.components, n)
    # 1. z-scoring statistics of the training frames
    total, s1, s2 = 0, np.zeros(n), np.zeros(n)
    for tid in ids:
        r = np.nan_to_num(ds.responses(tid).astype(np.float64))
        total += len(r)
        s1 += r.sum(0)
        s2 += (r * r).sum(0)
    if total < 2:
        raise DatasetError(f"{ds.root}: too few training frames ({total})")
    mean = s1 / total
    std = np.sqrt(np.maximum(s2 / total - mean * mean, 0.0))
    inv_std = np.where(std > 1e-6, 1.0 / np.where(std > 1e-6, std, 1.0), 1.0)
    # 2. exact PCA: covariance of all z-scored training frames, top-k eigenvectors
    cov = np.zeros((n, n))
    for tid in ids:
        z = (np.nan_to_num(ds.responses(tid).astype(np.float64)) - mean) * inv_std
        cov += z.T @ z
    cov /= total
    _, vec = linalg.eigh(cov, subset_by_index=[n - k, n - 1])
    axes = vec[:, ::-1].copy()
    del cov
    model = PlainRidge(mean, inv_std, axes, np.zeros((0, 0)), np.zeros(0), s.lags,
                       ds.frame_shape, s.first)
    # 3. ridge to full-rank pixels, one relative penalty
    d, p = s.lags * k, int(np.prod(ds.frame_shape))
    xtx, xty = np.zeros((d, d)), np.zeros((d, p))
    xs, ys, rows = np.zeros(d), np.zeros(p), 0
    for tid in ids:
        x = model.features(ds.responses(tid))
        y = ds.video(tid).reshape(len(x), -1).astype(np.float64)
        ok = np.isfinite(y).all(axis=1)
        x, y = x[ok], y[ok]
        xtx += x.T @ x
        xty += x.T @ y
        xs += x.sum(0)
        ys += y.sum(0)
        rows += len(x)
    mx, my = xs / rows, ys / rows
    c = xtx - rows * np.outer(mx, mx)
    cy = xty - rows * np.outer(mx, my)
    penalty = s.alpha * float(np.trace(c)) / d
    w = linalg.solve(c + penalty * np.eye(d), cy, assume_a="pos")
    return PlainRidge(mean, inv_std, axes, w, my - mx @ w, s.lags, ds.frame_shape, s.first)


def score_plain_ridge(ds: SensoriumDataset, model: PlainRidge, ids: Sequence[int],
                      mask: np.ndarray) -> dict[int, float]:
    """Per-trial pixel correlation (the project's metric) of the model on ``ids``."""
    return {int(tid): float(per_clip_correlation(model.predict(ds.responses(tid)),
                                                 ds.video(tid), mask)[0]) for tid in ids}
