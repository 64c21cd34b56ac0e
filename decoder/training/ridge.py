"""``cortexcast train --method ridge``: the classic linear reconstruction, exported to ONNX.

Steps (every trial streamed from disk; memory ~ (W·K)² + N·K floats, never the data set):

1. training trials = tier ``train``; validation = tier ``oracle`` if it has responses, else a
   seeded 10 % of the training trials (:func:`cortexcast.decoder.training.train._split`); evaluation mask = the
   one ``evaluate`` would choose;
2. responses z-scored with the dataset's own statistics
   (:func:`cortexcast.decoder.training.windows.normalisation`), and reduced to ``components`` principal
   components fit on (at most ``pca_frames``) training frames: a randomised eigensolver of the
   streamed N×N second-moment matrix;
3. the causal window of :mod:`cortexcast.decoder.training.windows` (frame t sees responses
   ``t + lag - W + 1 .. t + lag``; zero raw rows outside the trial, exactly as live) in PCA
   space is the design row (W·K features); Xᵀ X and Xᵀ Y are accumulated trial by trial;
4. ridge in closed form for every alpha at once (one eigendecomposition of the centred Xᵀ X);
   ``alpha`` is relative: the penalty is ``alpha × trace(Xᵀ X) / (W·K)``, so one grid fits
   any data scale; the alpha with the best validation :func:`cortexcast.decoder.live.metric` pixel correlation
   inside the mask wins;
5. the chosen solution is cut to rank ``pixel_components`` (R) by reduced-rank regression
   (:func:`cortexcast.decoder.training.ridge_export.reduced_rank`): lag weights (W·K, H·W) = U (W·K, R) @ V (R, H·W), V the top
   principal axes of the fitted training frames, so the live graph does W·K·R + R·H·W
   multiply-adds instead of W·K·H·W (5120 × 2304 at K = 512: ~10× less);
6. normalisation, PCA and the factored weights folded into a three-MatMul ONNX graph
   (:mod:`cortexcast.decoder.training.ridge_export`; input ``activity`` (1, W, N) raw, output ``frame``
   (1, 36, 64), 0..255), checked with onnxruntime against numpy on held-out windows; card,
   mask and ``<stem>.norm.npz`` beside it.

:func:`fit_ridge` is the closed-form solve alone, reusable as a linear branch by other models.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import ndimage

from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.offline.evaluate import choose_mask
from cortexcast.decoder.live.metric import clip_correlation, mean_over_clips
from cortexcast.decoder.live.model_card import ModelCard, ModelError, save_card, save_mask
from cortexcast.decoder.training.train import ONNX_TOLERANCE, TrainResult, _simulation, _split
from cortexcast.decoder.training.windows import Normalisation, normalisation, pad_responses, windows_of

log = logging.getLogger("decoder.ridge")

DEFAULT_ALPHAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
BEHAVIOR_KEYS = ("pupil", "running", "pupil_x", "pupil_y")
MIN_STD = 1e-6


@dataclass(frozen=True)
class RidgeSettings:
    data: str
    """Dataset folder (Sensorium 2023 layout)."""
    out: str
    """Path of the ONNX file; card (.json), mask (.mask.npy) and .norm.npz go beside it."""
    window: int = 10
    """W: frames of responses per reconstruction (1..10)."""
    lag: int = 5
    """L: frames of responses after the reconstructed frame (0..W-1)."""
    components: int = 256
    """K: principal components of the z-scored responses kept (<= neurons)."""
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    """Relative ridge penalties tried (penalty = alpha × mean eigenvalue of XᵀX); the best on
    the validation trials is kept."""
    seed: int = 0
    train_tier: str = "train"
    val_tier: str = "oracle"
    progress: bool = True
    pca_frames: int = 5000
    """Training frames (evenly spread) used to fit the PCA."""
    pixel_components: int = 256
    """R: rank of the lag→pixel weights (reduced-rank ridge); capped at min(W·K, H·W), where
    the factored model equals the full ridge exactly."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Copied into the card's ``extra``."""

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 10:
            raise ValueError(f"window must be in 1..10, got {self.window}")
        if not 0 <= self.lag <= self.window - 1:
            raise ValueError(f"lag must be in 0..window-1 ({self.window - 1}), got {self.lag}")
        if self.components < 1:
            raise ValueError(f"components must be >= 1, got {self.components}")
        if not self.alphas or any(not (a > 0 and np.isfinite(a)) for a in self.alphas):
            raise ValueError(f"alphas must be positive finite numbers, got {self.alphas!r}")
        if self.pixel_components < 1:
            raise ValueError(f"pixel_components must be >= 1, got {self.pixel_components}")
        if self.pca_frames < 2:
            raise ValueError(f"pca_frames must be >= 2, got {self.pca_frames}")
        if not str(self.out).endswith(".onnx"):
            raise ValueError(f"the model path must end in .onnx, got {self.out}")


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


def _stds(norm: Normalisation) -> np.ndarray:
    std = np.asarray(norm.resp_std, np.float64)
    return np.where(np.isfinite(std) & (std > MIN_STD), std, 1.0)


def _zscored(resp: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> np.ndarray:
    r = np.nan_to_num(resp, nan=0.0, posinf=0.0, neginf=0.0)
    return (r - mean) * inv_std


def fit_pca(ds: SensoriumDataset, ids: Sequence[int], norm: Normalisation, k: int,
            max_frames: int, seed: int) -> tuple[LinearFrontEnd, np.ndarray]:
    """Top-k principal axes of the z-scored responses; (front end, explained variances)."""
    n = ds.n_neurons
    k = min(k, n)
    mean = np.asarray(norm.resp_mean, np.float32)
    inv_std = (1.0 / _stds(norm)).astype(np.float32)
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
            buf.append(_zscored(r[rows], mean, inv_std).astype(np.float32))
            used += rows.size
        if sum(len(b) for b in buf) >= 1024:
            flush()
    flush()
    if used < 2:
        raise DatasetError(f"{ds.root}: too few training frames for a PCA ({used})")
    m = (m / used).astype(np.float32)
    # randomised subspace iteration: k + 10 columns, 4 power steps, then a small eigenproblem
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(m @ rng.standard_normal((n, min(n, k + 10))))[0]
    for _ in range(4):
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


def _iter_trials(ids: Sequence[int], progress: bool, desc: str) -> Iterable[int]:
    if not progress:
        return ids
    from tqdm import tqdm

    return tqdm(ids, desc=desc, unit="trial")


# ----------------------------------------------------------------------------- training
def train_ridge(s: RidgeSettings) -> TrainResult:
    """Fit, choose alpha, export and check one ridge model; returns where it went and its card."""
    t0 = time.monotonic()
    out = Path(s.out)
    ds = SensoriumDataset(s.data)
    if ds.n_neurons < 1:
        raise DatasetError(f"{ds.root}: no neurons in the responses")
    train_ids, val_ids, val_desc = _split(ds, s)
    mask, mask_desc = choose_mask(ds)
    norm = normalisation(ds, train_ids)
    k = min(s.components, ds.n_neurons)
    if k < s.components:
        log.warning("components %d > neurons %d; using %d", s.components, ds.n_neurons, k)
    h, w = ds.frame_shape
    log.info("%s | ridge: train %d trials, validation: %s, mask: %s (%d px), %d components",
             ds, len(train_ids), val_desc, mask_desc, int(mask.sum()), k)
    front, explained = fit_pca(ds, train_ids, norm, k, s.pca_frames, s.seed)
    d = s.window * k
    xtx = np.zeros((d, d), np.float64)
    xty = np.zeros((d, h * w), np.float64)
    x_sum, y_sum, count = np.zeros(d), np.zeros(h * w), 0
    log.info("PCA: %d components hold %.1f %% of the z-scored variance (%.1f s); "
             "accumulating XᵀX", k, 100 * _explained_fraction(explained, ds, front),
             time.monotonic() - t0)
    for tid in _iter_trials(train_ids, s.progress, "ridge"):
        f32 = trial_features(ds, tid, front, s.window, s.lag)
        f = f32.astype(np.float64)
        y = ds.video(tid).reshape(ds.length(tid), -1)
        t = len(y)
        if np.isfinite(y).all():
            xtx += window_gram(f, t, s.window)
            for a in range(s.window):  # float32 products (the bulk of the work), float64 sums
                xty[a * k:(a + 1) * k] += f32[a:a + t].T @ y
                x_sum[a * k:(a + 1) * k] += f[a:a + t].sum(0)
        else:  # frames without a target: the plain (slower) product over the good rows
            x = windows_flat(f, t, s.window)
            ok = np.isfinite(y).all(axis=1)
            x, y = x[ok], y[ok].astype(np.float64)
            xtx += x.T @ x
            xty += x.T @ y
            x_sum += x.sum(0)
        y_sum += y.sum(0)
        count += len(y)
    log.info("XᵀX accumulated over %d frames (%.1f s); solving", count, time.monotonic() - t0)
    fit = fit_ridge(xtx, xty, x_sum, y_sum, count, s.alphas)
    del xtx, xty
    from cortexcast.decoder.training.ridge_export import export_ridge, reduced_rank

    designs = _validation_designs(ds, val_ids, front, fit, s)
    scores = np.array([_validation_score(ds, designs, fit, j, None, mask)
                       for j in range(len(fit.alphas))])
    best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
    alpha = fit.alphas[best]
    if best in (0, len(fit.alphas) - 1) and len(fit.alphas) > 1:
        log.warning("the chosen alpha %g is at the edge of the grid %s", alpha, fit.alphas)
    log.info("validation r per alpha: %s; chosen alpha %g (r %.4f)",
             ", ".join(f"{a:g}: {r:.4f}" for a, r in zip(fit.alphas, scores)), alpha,
             scores[best])
    u, v, bias = reduced_rank(fit, best, s.pixel_components)
    rank = u.shape[1]
    score = _validation_score(ds, designs, fit, best, v, mask)
    del designs
    log.info("lag→pixel weights at rank %d: validation r %.4f (full rank %.4f, %+.4f)", rank,
             score, scores[best], score - scores[best])
    train_time = time.monotonic() - t0
    history = [{"alpha": a, "val_r": float(r)} for a, r in zip(fit.alphas, scores)]
    info = {
        "method": (f"ridge regression (closed form) on {k} PCA components of z-scored "
                   f"responses, causal window {s.window} frames, lag {s.lag}; alpha "
                   f"{alpha:g} chosen on {val_desc}; lag→pixel weights of rank {rank}"),
        "validation_score": float(score) if np.isfinite(score) else None,
        "training_time_s": round(train_time, 2),
        "data_used": {"folder": str(Path(s.data).resolve()), "train_tier": s.train_tier,
                      "train_trials": len(train_ids), "train_frames": count,
                      "validation": val_desc, "validation_trials": len(val_ids),
                      "eval_mask": mask_desc, "normalisation": norm.source},
        "extra": {**_simulation(ds), **s.extra,
                  "activity_kind": _activity_kind(ds, train_ids),
                  "training": {"method": "ridge", "components": k, "alpha": alpha,
                               "alphas": list(fit.alphas), "history": history,
                               "pixel_components": rank,
                               "val_r_full_rank": float(scores[best]),
                               "pca_explained_fraction": _explained_fraction(explained, ds,
                                                                             front),
                               "seed": s.seed}},
    }
    card = export_ridge(ds, s, out, val_ids, mask, front, u, v, bias, norm, train_ids, info)
    log.info("ridge: alpha %g, validation r %.4f; %.1f s; wrote %s", alpha, score,
             train_time, out)
    return TrainResult(out, card, best + 1, len(fit.alphas), history)


def _explained_fraction(explained: np.ndarray, ds: SensoriumDataset,
                        front: LinearFrontEnd) -> float:
    """Share of the z-scored variance (≈ N after z-scoring) the kept components hold."""
    return float(np.clip(explained.sum() / max(ds.n_neurons, 1), 0.0, 1.0))


def _validation_designs(ds: SensoriumDataset, ids: Sequence[int], front: LinearFrontEnd,
                        fit: RidgeFit, s: RidgeSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """(design in the eigenbasis of XᵀX, video) per validation trial: one product per alpha."""
    evecs = fit.evecs.astype(np.float32)
    return [(trial_design(ds, tid, front, s.window, s.lag) @ evecs, ds.video(tid))
            for tid in ids]


def _validation_score(ds: SensoriumDataset, designs: list[tuple[np.ndarray, np.ndarray]],
                      fit: RidgeFit, j: int, pixel_basis: np.ndarray | None,
                      mask: np.ndarray) -> float:
    """Mean pixel correlation of the validation trials for ``alphas[j]``, full rank or cut to
    the rows of ``pixel_basis`` (R, P) as :func:`~cortexcast.decoder.training.ridge_export.reduced_rank`
    does."""
    h, w = ds.frame_shape
    # The metric smooths with sigma 0.5 px (radius 2): pixels further from the mask than
    # that cannot change the score, so only the others are predicted.
    near = ndimage.binary_dilation(mask, np.ones((3, 3), bool), iterations=2).ravel()
    g = (1.0 / (fit.evals + fit.penalty(j)))[:, None]
    if pixel_basis is None:
        b, post = fit.proj[:, near] * g, None
    else:
        b, post = (fit.proj @ pixel_basis.T) * g, pixel_basis[:, near].astype(np.float32)
    c = fit.y_mean[near] - (fit.x_mean @ fit.evecs) @ (b if post is None else b @ post)
    b = b.astype(np.float32)
    per = []
    for xe, target in designs:
        recon = np.empty((len(xe), h * w), np.float32)
        recon[:] = fit.y_mean.astype(np.float32)
        recon[:, near] = (xe @ b if post is None else (xe @ b) @ post) + c
        per.append(clip_correlation(recon.reshape(len(xe), h, w), target, mask))
    return mean_over_clips(per)


def _activity_kind(ds: SensoriumDataset, ids: Sequence[int]) -> str:
    """'dff' when responses go negative (ΔF/F), else 'deconvolved' (non-negative)."""
    for tid in ids[:5]:
        if np.nanmin(ds.responses(tid)) < 0:
            return "dff"
    return "deconvolved"
