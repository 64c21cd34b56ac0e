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
   space is the design row (W·K features); Xᵀ X and Xᵀ Y are accumulated trial by trial.
   Without ``--lag``, window and lag are first chosen on validation with lag within
   ``--max-lag-ms`` (:mod:`~cortexcast.decoder.training.lag_choice`);
4. ridge in closed form for every alpha at once (one eigendecomposition of the centred Xᵀ X);
   ``alpha`` is relative: the penalty is ``alpha × trace(Xᵀ X) / (W·K)``, so one grid fits
   any data scale. Each alpha is scored per held-out clip with the
   :func:`cortexcast.decoder.live.metric` pixel correlation inside the mask (validation tier,
   plus ``cv_folds``-fold cross-validation over the training trials when asked); the
   ``default_alpha`` (0.03, the plain ridge's) is kept unless the best alpha beats it by
   more than two paired standard errors
   (:func:`~cortexcast.decoder.training.ridge_fit.choose_alpha`).
   Issue 12: on a development mouse a free arg-max over 2 repeated validation clips cost
   7 % on the test tiers (0.171 vs 0.185), the PCA's too-loose randomised eigensolver
   another ~1 % (now 2K columns, 12 power steps; :func:`~.ridge_fit.fit_pca`);
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
from cortexcast.decoder.training.lag_choice import resolve_window
from cortexcast.decoder.training.ridge_export import export_ridge, reduced_rank
from cortexcast.decoder.training.ridge_fit import (
    LinearFrontEnd, RidgeFit, Sums, choose_alpha, cv_folds, fit_pca, fit_ridge, pixel_axes,
    trial_design, trial_features, window_gram, windows_flat,  # noqa: F401 (re-exported)
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
    pca_frames: int = 20_000
    """Training frames (evenly spread) used to fit the PCA. Issue 12: 5,000 of a mouse's
    18,000 cost 0.006 on test (0.474 vs 0.480, the plain ridge's exact PCA on every frame);
    20,000 holds 60 trials whole, and costs N² per frame (~1 min at 8,000 neurons)."""
    pixel_components: int = 256
    """R: rank of the lag→pixel weights (reduced-rank ridge); capped at min(W·K, H·W), where
    the factored model equals the full ridge exactly."""
    cv_folds: int = 0
    """Alpha is chosen on the validation tier *and* on every training trial held out in
    ``cv_folds``-fold cross-validation (by trial; 0 or 1: validation tier only). A validation
    tier of a few repeated clips alone picks alpha too noisily (issue 12: up to 6 % lost)."""
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
        if self.cv_folds < 0:
            raise ValueError(f"cv_folds must be >= 0, got {self.cv_folds}")
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
    train_ids, val_ids, val_desc = split_trials(ds, s.train_tier, s.val_tier, s.seed,
                                                s.train_trials)
    mask, mask_desc = choose_mask(ds)
    norm = normalisation(ds, train_ids)
    k = min(s.components, ds.n_neurons)
    if k < s.components:
        log.warning("components %d > neurons %d; using %d", s.components, ds.n_neurons, k)
    h, w = ds.frame_shape
    log.info("%s | ridge: train %d trials, validation: %s, mask: %s (%d px), %d components",
             ds, len(train_ids), val_desc, mask_desc, int(mask.sum()), k)
    front, explained = fit_pca(ds, train_ids, norm, k, s.pca_frames, s.seed)
    s, choice = resolve_window(s, ds, train_ids, val_ids,
                               lambda t, w, lag: trial_features(ds, t, front, w, lag), mask,
                               s.alphas, say=lambda m: log.info("%s", m))
    if choice is not None:
        log.info("%s (%.1f s)", choice.describe(), time.monotonic() - t0)
    d = s.window * k
    folds = cv_folds(train_ids, s.cv_folds, s.seed)
    fold_of = {tid: f for f, ids in enumerate(folds) for tid in ids}
    sums = [Sums.zeros(d, h * w) for _ in range(max(1, len(folds)))]
    near = _near(mask)
    yty, y_rows = np.zeros((int(near.sum()),) * 2 if folds else (0, 0)), 0
    log.info("PCA: %d components hold %.1f %% of the z-scored variance (%.1f s); "
             "accumulating XᵀX", k, 100 * _explained_fraction(explained, ds, front),
             time.monotonic() - t0)
    for tid in _iter_trials(train_ids, s.progress, "ridge"):
        f32 = trial_features(ds, tid, front, s.window, s.lag)
        y = ds.video(tid).reshape(ds.length(tid), -1)
        sums[fold_of.get(tid, 0)].add(f32, y, s.window)
        if folds:  # pixel axes for the cross-validation scores (every 3rd frame is plenty)
            ys = y[::3][:, near]
            ys = ys[np.isfinite(ys).all(axis=1)].astype(np.float64)
            yty += ys.T @ ys
            y_rows += len(ys)
    total = Sums.total(sums)
    log.info("XᵀX accumulated over %d frames (%.1f s); solving", total.count,
             time.monotonic() - t0)
    fit = fit_ridge(total.xtx, total.xty, total.x_sum, total.y_sum, total.count, s.alphas)
    designs = _validation_designs(ds, val_ids, front, fit, s)
    per_val = np.array([_validation_clips(ds, designs, fit, j, None, mask)
                        for j in range(len(fit.alphas))]).T
    per_val = per_val.reshape(len(designs), len(fit.alphas))
    val_scores = np.array([mean_over_clips(per_val[:, j]) for j in range(len(fit.alphas))])
    per_clip = per_val
    cv_mean = None
    if folds:
        axes = pixel_axes(yty, y_rows, total.y_sum[near] / total.count, s.pixel_components)
        per_cv = []
        for f, ids in enumerate(folds):
            rest = total.minus(sums[f])
            fold_fit = fit_ridge(rest.xtx, rest.xty, rest.x_sum, rest.y_sum, rest.count,
                                 s.alphas)
            del rest
            per_cv.append(_cv_fold_scores(ds, ids, front, fold_fit, s, mask, near, axes))
            del fold_fit
        per_cv_all = np.concatenate(per_cv)
        cv_mean = np.array([mean_over_clips(c) for c in per_cv_all.T])
        per_clip = np.concatenate([per_val, per_cv_all])  # every held-out clip counts once
        log.info("cross-validated r per alpha (%d folds, %d clips): %s", len(folds),
                 len(per_cv_all), ", ".join(f"{a:g}: {r:.4f}" for a, r in
                                            zip(fit.alphas, cv_mean)))
    best, scores = choose_alpha(per_clip, fit.alphas, s.default_alpha)
    count = total.count
    del sums, total
    alpha = fit.alphas[best]
    if best in (0, len(fit.alphas) - 1) and len(fit.alphas) > 1:
        log.warning("the chosen alpha %g is at the edge of the grid %s", alpha, fit.alphas)
    log.info("validation r per alpha: %s; chosen alpha %g (r %.4f)",
             ", ".join(f"{a:g}: {r:.4f}" for a, r in zip(fit.alphas, val_scores)), alpha,
             val_scores[best])
    u, v, bias = reduced_rank(fit, best, s.pixel_components)
    rank = u.shape[1]
    score = _validation_score(ds, designs, fit, best, v, mask)
    del designs
    log.info("lag→pixel weights at rank %d: validation r %.4f (full rank %.4f, %+.4f)", rank,
             score, val_scores[best], score - val_scores[best])
    train_time = time.monotonic() - t0
    history = [{"alpha": a, "val_r": float(r), "selection_r": float(c)}
               | ({} if cv_mean is None else {"cv_r": float(cv_mean[j])})
               for j, (a, r, c) in enumerate(zip(fit.alphas, val_scores, scores))]
    info = {
        "method": (f"ridge regression (closed form) on {k} PCA components of z-scored "
                   f"responses, causal window {s.window} frames, lag {s.lag} "
                   f"({'given' if choice is None else 'chosen on validation'}); alpha "
                   f"{alpha:g} chosen on {val_desc}"
                   f"{f' and {len(folds)}-fold cross-validation' if folds else ''}; "
                   f"lag→pixel weights of rank {rank}"),
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
                               "val_r_full_rank": float(val_scores[best]),
                               "cv_folds": len(folds),
                               "window_choice": None if choice is None else choice.to_dict(),
                               "pca_explained_fraction": _explained_fraction(explained, ds,
                                                                             front),
                               "seed": s.seed}},
    }
    card = export_ridge(ds, s.window, s.lag, s.seed, out, val_ids, mask, front, u, v, bias,
                        norm, train_ids, info)
    log.info("ridge: alpha %g, validation r %.4f; %.1f s; wrote %s", alpha, score,
             train_time, out)
    return TrainResult(out, card, best + 1, len(fit.alphas), history)


def _near(mask: np.ndarray) -> np.ndarray:
    """(H·W,) pixels that can change the score: the metric smooths with sigma 0.5 px
    (radius 2), so pixels further from the mask than that cannot."""
    return ndimage.binary_dilation(mask, np.ones((3, 3), bool), iterations=2).ravel()


def _cv_fold_scores(ds: SensoriumDataset, ids: Sequence[int], front: LinearFrontEnd,
                    fit: RidgeFit, s: RidgeSettings, mask: np.ndarray, near: np.ndarray,
                    axes: np.ndarray) -> np.ndarray:
    """(trials, alphas) pixel correlation of held-out trials under a fold's fit.

    Predictions are made in the top-R pixel axes of the training frames (R·D products per
    frame and alpha instead of P·D), as the exported reduced-rank graph is; the full-rank
    and rank-R fits score the same (issue 12), so the choice of alpha does not suffer.
    """
    h, w = ds.frame_shape
    evecs = fit.evecs.astype(np.float32)
    pv = (fit.proj[:, near] @ axes.T).astype(np.float32)  # (D, R)
    xm = (fit.x_mean @ fit.evecs).astype(np.float32)
    ym = fit.y_mean.astype(np.float32)
    ax = axes.astype(np.float32)
    out = np.full((len(ids), len(fit.alphas)), np.nan)
    for i, tid in enumerate(ids):
        target = ds.video(tid)
        xe = trial_design(ds, tid, front, s.window, s.lag) @ evecs - xm
        recon = np.empty((len(xe), h * w), np.float32)
        for j in range(len(fit.alphas)):
            g = (1.0 / (fit.evals + fit.penalty(j))).astype(np.float32)
            recon[:] = ym
            recon[:, near] += ((xe * g) @ pv) @ ax
            out[i, j] = clip_correlation(recon.reshape(len(xe), h, w), target, mask)
    return out


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
    """Mean pixel correlation of the validation trials (see :func:`_validation_clips`)."""
    return mean_over_clips(_validation_clips(ds, designs, fit, j, pixel_basis, mask))


def _validation_clips(ds: SensoriumDataset, designs: list[tuple[np.ndarray, np.ndarray]],
                      fit: RidgeFit, j: int, pixel_basis: np.ndarray | None,
                      mask: np.ndarray) -> np.ndarray:
    """Pixel correlation per validation trial for ``alphas[j]``, full rank or cut to
    the rows of ``pixel_basis`` (R, P) as :func:`~cortexcast.decoder.training.ridge_export.reduced_rank`
    does."""
    h, w = ds.frame_shape
    near = _near(mask)
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
    return np.array(per, np.float64)
