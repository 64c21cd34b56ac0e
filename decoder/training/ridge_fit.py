"""The closed-form pieces of ``--method ridge``: PCA front end, causal design rows, and ridge
for a grid of alphas from accumulated sums. numpy only (no torch, no ONNX); the training loop
is :mod:`cortexcast.decoder.training.ridge`, the export :mod:`~cortexcast.decoder.training.ridge_export`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cortexcast.decoder.live.metric import mean_over_clips
from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.training.windows import Normalisation, pad_responses


@dataclass(frozen=True)
class RidgeFit:
    """Closed-form ridge solutions y ≈ x @ W(alpha) + b(alpha) for a grid of alphas.

    Held as one eigendecomposition of the centred XᵀX (``evecs``, ``evals``) and
    ``proj = evecsᵀ Xᵀy``, so every alpha costs one product, and the grid is never held
    as a stack of weight matrices.
    """

    alphas: tuple[float, ...]
    evecs: np.ndarray  # (D, D)
    evals: np.ndarray  # (D,)
    proj: np.ndarray  # (D, P)
    x_mean: np.ndarray  # (D,)
    y_mean: np.ndarray  # (P,)
    scale: float  # trace(C) / D: relative alpha 1 = this absolute penalty

    def penalty(self, j: int) -> float:
        return self.alphas[j] * self.scale

    def solution(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(weights (D, P), intercept (P,)) for ``alphas[j]``."""
        b = self.evecs @ (self.proj / (self.evals + self.penalty(j))[:, None])
        return b, self.y_mean - self.x_mean @ b


def fit_ridge(xtx: np.ndarray, xty: np.ndarray, x_sum: np.ndarray, y_sum: np.ndarray,
              count: int, alphas: Sequence[float]) -> RidgeFit:
    """Ridge regression with an unpenalised intercept, from accumulated sums.

    ``xtx`` = Σ xᵀx (D, D), ``xty`` = Σ xᵀy (D, P), ``x_sum``/``y_sum`` the column sums and
    ``count`` the number of rows. Each alpha is relative: penalty = alpha × trace(C) / D of the
    centred XᵀX C, so the same grid suits any feature scale. One eigendecomposition serves all.
    """
    if count < 2:
        raise ValueError(f"ridge needs at least 2 rows, got {count}")
    if not alphas or any(not (a > 0 and np.isfinite(a)) for a in alphas):
        raise ValueError(f"alphas must be positive finite numbers, got {tuple(alphas)!r}")
    mx, my = x_sum / count, y_sum / count
    c = xtx - count * np.outer(mx, mx)
    cy = xty - count * np.outer(mx, my)
    evals, evecs = np.linalg.eigh((c + c.T) / 2)
    evals = np.maximum(evals, 0.0)
    scale = float(np.trace(c)) / c.shape[0] or 1.0
    return RidgeFit(tuple(float(a) for a in alphas), evecs, evals, evecs.T @ cy, mx, my, scale)


# ----------------------------------------------------------------------------- features
@dataclass(frozen=True)
class LinearFrontEnd:
    """Raw activity row (N,) -> PCA features (K,): ``x @ a + c`` (normalisation folded in)."""

    a: np.ndarray  # (N, K) float32
    c: np.ndarray  # (K,) float32

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return rows @ self.a + self.c


def zscored(resp: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> np.ndarray:
    r = np.nan_to_num(resp, nan=0.0, posinf=0.0, neginf=0.0)
    return (r - mean) * inv_std


def fit_pca(ds: SensoriumDataset, ids: Sequence[int], norm: Normalisation, k: int,
            max_frames: int, seed: int) -> tuple[LinearFrontEnd, np.ndarray]:
    """Top-k principal axes of the z-scored responses; (front end, explained variances)."""
    n = ds.n_neurons
    k = min(k, n)
    mean = np.asarray(norm.resp_mean, np.float32)
    inv_std = (1.0 / norm.safe_std()).astype(np.float32)
    total = sum(ds.length(i) for i in ids)
    step = max(1, int(np.ceil(total / max_frames)))
    m = np.zeros((n, n), np.float64)
    used, offset, buf = 0, 0, []

    def flush() -> None:
        if buf:
            z = np.concatenate(buf)
            m[:] += z.T @ z
            buf.clear()

    for tid in ids:
        r = ds.responses(tid)
        rows = np.arange((-offset) % step, len(r), step)
        offset += len(r)
        if rows.size:
            buf.append(zscored(r[rows], mean, inv_std).astype(np.float32))
            used += rows.size
        if sum(len(b) for b in buf) >= 1024:
            flush()
    flush()
    if used < 2:
        raise DatasetError(f"{ds.root}: too few training frames for a PCA ({used})")
    m = (m / used).astype(np.float32)
    # randomised subspace iteration, then a small eigenproblem. The z-scored spectrum decays
    # slowly, so k + 10 columns and 4 steps left the trailing axes ~rotated (issue 12: -0.005
    # on validation); 2k columns and 12 steps match the exact top-k axes (N²·2k per step).
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(m @ rng.standard_normal((n, min(n, 2 * k + 10))))[0]
    for _ in range(12):
        q = np.linalg.qr(m @ q)[0]
    small = q.T @ m @ q
    ev, vec = np.linalg.eigh((small + small.T) / 2)
    order = np.argsort(ev)[::-1][:k]
    v = q @ vec[:, order]  # (N, k)
    a = (v * inv_std[:, None]).astype(np.float32)
    c = (-(mean * inv_std) @ v).astype(np.float32)
    return LinearFrontEnd(a, c), ev[order]


def trial_features(ds: SensoriumDataset, tid: int, front: LinearFrontEnd, window: int,
                   lag: int) -> np.ndarray:
    """(T + W - 1, K) PCA features of one padded trial (zero raw rows outside it, as live)."""
    return front(pad_responses(ds.responses(tid), window, lag))


def windows_flat(feats: np.ndarray, t: int, window: int) -> np.ndarray:
    """(T, W·K) design rows: row t = features t .. t + W - 1 (oldest first), flattened."""
    idx = np.arange(t)[:, None] + np.arange(window)[None]
    return feats[idx].reshape(t, -1)


def trial_design(ds: SensoriumDataset, tid: int, front: LinearFrontEnd, window: int,
                 lag: int) -> np.ndarray:
    """(T, W·K) lagged PCA features of one trial, exactly as the ONNX graph computes them."""
    return windows_flat(trial_features(ds, tid, front, window, lag), ds.length(tid), window)


def window_gram(feats: np.ndarray, t: int, window: int) -> np.ndarray:
    """XᵀX of :func:`windows_flat` without building X: W lagged K×K products per trial.

    Block (a, a + d) = Σ_{s=a}^{a+T-1} f[s]ᵀ f[s+d] = the full lag-d product minus the
    few rows before ``a`` and after ``a + T - 1`` (W times cheaper than X ᵀX).
    """
    k = feats.shape[1]
    n = len(feats)
    g = np.empty((window * k, window * k))
    for d in range(window):
        full = feats[: n - d].T @ feats[d:]
        for a in range(window - d):
            b = a + d
            blk = full - feats[:a].T @ feats[d:a + d] - feats[a + t: n - d].T @ feats[a + t + d:]
            g[a * k:(a + 1) * k, b * k:(b + 1) * k] = blk
            if d:
                g[b * k:(b + 1) * k, a * k:(a + 1) * k] = blk.T
    return g


# ----------------------------------------------------------------------------- selection
@dataclass
class Sums:
    """Accumulated ridge statistics of some trials: Σ xᵀx, Σ xᵀy, column sums, rows."""

    xtx: np.ndarray
    xty: np.ndarray
    x_sum: np.ndarray
    y_sum: np.ndarray
    count: int = 0

    @classmethod
    def zeros(cls, d: int, p: int) -> "Sums":
        return cls(np.zeros((d, d)), np.zeros((d, p)), np.zeros(d), np.zeros(p))

    @classmethod
    def total(cls, parts: Sequence["Sums"]) -> "Sums":
        out = cls(parts[0].xtx.copy(), parts[0].xty.copy(), parts[0].x_sum.copy(),
                  parts[0].y_sum.copy(), parts[0].count)
        for q in parts[1:]:
            out.xtx += q.xtx
            out.xty += q.xty
            out.x_sum += q.x_sum
            out.y_sum += q.y_sum
            out.count += q.count
        return out

    def minus(self, q: "Sums") -> "Sums":
        return Sums(self.xtx - q.xtx, self.xty - q.xty, self.x_sum - q.x_sum,
                    self.y_sum - q.y_sum, self.count - q.count)

    def add(self, f32: np.ndarray, y: np.ndarray, window: int) -> None:
        """One trial: padded features (T + W - 1, K) float32 and video rows (T, P)."""
        k = f32.shape[1]
        f = f32.astype(np.float64)
        t = len(y)
        if np.isfinite(y).all():
            self.xtx += window_gram(f, t, window)
            for a in range(window):  # float32 products (the bulk of the work), float64 sums
                self.xty[a * k:(a + 1) * k] += f32[a:a + t].T @ y
                self.x_sum[a * k:(a + 1) * k] += f[a:a + t].sum(0)
        else:  # frames without a target: the plain (slower) product over the good rows
            x = windows_flat(f, t, window)
            ok = np.isfinite(y).all(axis=1)
            x, y = x[ok], y[ok].astype(np.float64)
            self.xtx += x.T @ x
            self.xty += x.T @ y
            self.x_sum += x.sum(0)
        self.y_sum += y.sum(0)
        self.count += len(y)


def cv_folds(ids: Sequence[int], k: int, seed: int) -> list[list[int]]:
    """``k`` seeded folds of the training trials ([] when k < 2 or too few trials)."""
    k = min(k, len(ids))
    if k < 2:
        return []
    order = np.random.default_rng([seed, 12]).permutation(len(ids))
    return [sorted(int(ids[i]) for i in order[f::k]) for f in range(k)]


def pixel_axes(yty: np.ndarray, rows: int, y_mean: np.ndarray, rank: int) -> np.ndarray:
    """(R, P_near) top principal axes of the training frames near the mask."""
    c = yty / max(rows, 1) - np.outer(y_mean, y_mean)
    ev, vec = np.linalg.eigh((c + c.T) / 2)
    return np.ascontiguousarray(vec[:, np.argsort(ev)[::-1][:min(rank, len(ev))]].T)


def choose_alpha(per_clip: np.ndarray, alphas: Sequence[float],
                 default: float | None) -> tuple[int, np.ndarray]:
    """(index of the chosen alpha, mean score per alpha) from (clips, alphas) scores.

    ``default`` (the nearest grid alpha) is kept unless some alpha beats it clearly
    (:func:`clearly_better`); None: the plain arg-max.
    """
    ref = (None if default is None else
           int(np.argmin(np.abs(np.log(np.asarray(alphas)) - np.log(default)))))
    return clearly_better(per_clip, ref)


def clearly_better(per_clip: np.ndarray, default: int | None) -> tuple[int, np.ndarray]:
    """(chosen column, mean score per column) of (clips, options) held-out scores.

    The ``default`` column is kept unless other options beat it by more than two standard
    errors of the paired per-clip difference; then the best of those wins. A few
    validation clips pick too noisily for a free arg-max (issue 12: up to 6 % lost on
    test); None: the plain arg-max.
    """
    scores = np.array([mean_over_clips(per_clip[:, j]) for j in range(per_clip.shape[1])])
    if not np.isfinite(scores).any():
        return 0, scores
    best = int(np.nanargmax(scores))
    if default is None or not np.isfinite(scores[default]):
        return best, scores
    winners = []
    for j in range(per_clip.shape[1]):
        diff = per_clip[:, j] - per_clip[:, default]
        diff = diff[np.isfinite(diff)]
        if j == default or len(diff) < 2:
            continue
        se = float(np.std(diff, ddof=1) / np.sqrt(len(diff)))
        if diff.mean() > 2 * se:
            winners.append(j)
    if not winners:
        return default, scores
    return max(winners, key=lambda j: scores[j]), scores
