"""``cortexcast train --method ridge``: the classic linear reconstruction, exported to ONNX.

Steps (every trial streamed from disk; memory ~ (W·K)² + N·K floats, never the data set):

1. training trials = tier ``train``; validation = tier ``oracle`` if it has responses, else a
   seeded 10 % of the training trials (:func:`cortexcast.decoder.training.common.split_trials`); evaluation mask = the
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

:func:`~cortexcast.decoder.training.ridge_fit.fit_ridge` is the closed-form solve alone (with
the PCA front end and the design rows in :mod:`~cortexcast.decoder.training.ridge_fit`).
No torch: ``--method ridge`` runs where torch is not installed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import ndimage

from cortexcast.decoder.live.metric import clip_correlation, mean_over_clips
from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.offline.evaluate import choose_mask
from cortexcast.decoder.training.common import (
    ALPHAS, ModelSettings, TrainResult, activity_kind, dataset_extra, split_trials,
)
from cortexcast.decoder.training.ridge_export import export_ridge, reduced_rank
from cortexcast.decoder.training.ridge_fit import (
    LinearFrontEnd, RidgeFit, fit_pca, fit_ridge, trial_design, trial_features, window_gram,
    windows_flat,
)
from cortexcast.decoder.training.windows import normalisation

log = logging.getLogger("decoder.ridge")


@dataclass(frozen=True)
class RidgeSettings(ModelSettings):
    """``cortexcast train --method ridge`` (data, out, window, lag: :class:`ModelSettings`)."""

    components: int = 256
    """K: principal components of the z-scored responses kept (<= neurons)."""
    alphas: tuple[float, ...] = ALPHAS
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
        super().__post_init__()
        if self.components < 1:
            raise ValueError(f"components must be >= 1, got {self.components}")
        if not self.alphas or any(not (a > 0 and np.isfinite(a)) for a in self.alphas):
            raise ValueError(f"alphas must be positive finite numbers, got {self.alphas!r}")
        if self.pixel_components < 1:
            raise ValueError(f"pixel_components must be >= 1, got {self.pixel_components}")
        if self.pca_frames < 2:
            raise ValueError(f"pca_frames must be >= 2, got {self.pca_frames}")


def _iter_trials(ids: Sequence[int], progress: bool, desc: str) -> Iterable[int]:
    if not progress:
        return ids
    try:
        from tqdm import tqdm  # the 'train' extra; ridge runs without it, silently
    except ImportError:
        return ids
    return tqdm(ids, desc=desc, unit="trial")


# ----------------------------------------------------------------------------- training
def train_ridge(s: RidgeSettings) -> TrainResult:
    """Fit, choose alpha, export and check one ridge model; returns where it went and its card."""
    t0 = time.monotonic()
    out = Path(s.out)
    ds = SensoriumDataset(s.data)
    if ds.n_neurons < 1:
        raise DatasetError(f"{ds.root}: no neurons in the responses")
    train_ids, val_ids, val_desc = split_trials(ds, s.train_tier, s.val_tier, s.seed)
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
        "extra": {**dataset_extra(ds), **s.extra,
                  "activity_kind": activity_kind(ds, train_ids),
                  "training": {"method": "ridge", "components": k, "alpha": alpha,
                               "alphas": list(fit.alphas), "history": history,
                               "pixel_components": rank,
                               "val_r_full_rank": float(scores[best]),
                               "pca_explained_fraction": _explained_fraction(explained, ds,
                                                                             front),
                               "seed": s.seed}},
    }
    card = export_ridge(ds, s.window, s.lag, s.seed, out, val_ids, mask, front, u, v, bias,
                        norm, train_ids, info)
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
