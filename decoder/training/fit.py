"""Fitting the live decoder on cached features: the ridge branch (with the eye-shift gain
chosen on validation) in closed form, then the nonlinear members by AdamW.

No step here touches the N-neuron responses: everything runs on
:class:`cortexcast.decoder.training.features.FeatureSet` caches.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from cortexcast.decoder.live.metric import clip_correlation, mean_over_clips
from cortexcast.decoder.training.features import FeatureSet, FrontEnd

log = logging.getLogger("cortexcast.decoder.training.train")


def shift_frames(frames: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(n, H, W) frames sampled at (r + dy, c + dx), bilinear, edges repeated; d (n, 2) = (dx, dy)
    in pixels. Same convention as the graph's GridSample (border padding)."""
    n, h, w = frames.shape
    rr = np.arange(h)[None, :, None] + d[:, 1][:, None, None]
    cc = np.arange(w)[None, None, :] + d[:, 0][:, None, None]
    rr, cc = np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)
    r0, c0 = np.floor(rr).astype(np.int64), np.floor(cc).astype(np.int64)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (rr - r0).astype(np.float32), (cc - c0).astype(np.float32)
    idx = np.arange(n)[:, None, None]
    top = frames[idx, r0, c0] * (1 - fc) + frames[idx, r0, c1] * fc
    bot = frames[idx, r1, c0] * (1 - fc) + frames[idx, r1, c1] * fc
    return (top * (1 - fr) + bot * fr).astype(np.float32)


def design_chunks(fs: FeatureSet, window: int, chunk: int = 2048):
    """(frame slice, (n, W*K) float32 design rows) over all frames of ``fs``."""
    starts = fs.window_starts()
    span = np.arange(window)
    for a in range(0, fs.frames, chunk):
        idx = starts[a: a + chunk, None] + span[None]
        yield slice(a, a + len(idx)), fs.feats[idx].reshape(len(idx), -1)


def design(fs: FeatureSet, window: int) -> np.ndarray:
    return np.concatenate([x for _, x in design_chunks(fs, window)])


def retinal_coefficients(fs: FeatureSet, eye: np.ndarray, shift_px: float, shape: tuple,
                         pix_mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(frames, P) frame-PC coefficients of the targets in retinal coordinates."""
    out = np.empty((fs.frames, basis.shape[1]), np.float32)
    for a in range(0, fs.frames, 4096):
        v = fs.videos[a: a + 4096]
        if shift_px:
            v = shift_frames(v.reshape(-1, *shape), shift_px * eye[a: a + 4096]).reshape(len(v), -1)
        out[a: a + len(v)] = (v - pix_mean) @ basis
    return out


def per_trial_scores(frames: np.ndarray, fs: FeatureSet, mask: np.ndarray) -> list[float]:
    """Pixel correlation of each trial of ``fs`` from (frames, H, W) screen reconstructions."""
    shape = frames.shape[1:]
    return [clip_correlation(frames[v: v + t], fs.videos[v: v + t].reshape(t, *shape), mask)
            for _, v, t in fs.starts]


def to_screen(coef: np.ndarray, eye: np.ndarray, shift_px: float, shape: tuple,
              pix_mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    pix = (coef @ basis.T + pix_mean).reshape(-1, *shape)
    return shift_frames(pix, -shift_px * eye) if shift_px else pix


@dataclass
class RidgeBranch:
    weight: np.ndarray   # (W*K, P)
    bias: np.ndarray     # (P,)
    alpha: float
    shift_px: float
    val_score: float
    scores: dict[str, float]
    """Validation r of every (shift, alpha) tried, keyed "shift/alpha"."""


def fit_ridge_branch(train: FeatureSet, val: FeatureSet, front: FrontEnd, window: int,
                     lag: int, alphas: Sequence[float], shifts: Sequence[float],
                     mask: np.ndarray, shape: tuple, pix_mean: np.ndarray,
                     basis: np.ndarray) -> RidgeBranch:
    """Ridge from window features to retinal frame PCs, for each eye-shift gain in ``shifts``;
    the (shift, alpha) with the best validation pixel correlation wins. Alpha is relative
    (penalty = alpha x mean eigenvalue of the centred XᵀX), as in ``--method ridge``."""
    x = design(train, window)
    mx = x.mean(0)
    xc = x - mx
    evals, evecs = np.linalg.eigh((xc.T @ xc).astype(np.float64))
    evals = np.maximum(evals, 0.0)
    scale = float(evals.mean()) or 1.0
    xv = design(val, window)
    xv_rot = ((xv - mx) @ evecs).astype(np.float32)
    eye_t, eye_v = train.eye_z(front, window, lag), val.eye_z(front, window, lag)
    best: tuple[float, float, float] | None = None
    scores: dict[str, float] = {}
    keep = None
    order = sorted(shifts, key=abs)
    step = min((abs(a - b) for a in shifts for b in shifts if a != b), default=0.0)
    i = 0
    while i < len(order):
        c = order[i]
        i += 1
        y = retinal_coefficients(train, eye_t, c, shape, pix_mean, basis)
        my = y.mean(0)
        proj = evecs.T @ (xc.T @ (y - my)).astype(np.float64)
        tried = list(alphas) if best is None else _near(alphas, best[2])
        for a in tried:
            b_rot = (proj / (evals + a * scale)[:, None]).astype(np.float32)
            coef = xv_rot @ b_rot + my
            r = mean_over_clips(per_trial_scores(
                to_screen(coef, eye_v, c, shape, pix_mean, basis), val, mask))
            scores[f"{c:g}/{a:g}"] = float(r)
            if np.isfinite(r) and (best is None or r > best[0]):
                best = (float(r), c, a)
                keep = (evecs @ b_rot.astype(np.float64), my)
        if i == len(shifts) and step > 0 and best is not None and best[1] != 0:
            # refine: half the grid's step on both sides of the best gain
            order += [best[1] - step / 2, best[1] + step / 2]
    if best is None or keep is None:
        raise ValueError("no ridge solution scored on the validation trials")
    r, c, a = best
    w, my = keep
    log.info("ridge branch: validation r %s; chosen shift %g px/z, alpha %g (r %.4f)",
             ", ".join(f"{k}: {v:.4f}" for k, v in scores.items()), c, a, r)
    return RidgeBranch(w.astype(np.float32), (my - mx @ w).astype(np.float32), a, c, r, scores)


def _near(alphas: Sequence[float], a: float) -> list[float]:
    i = list(alphas).index(a)
    return list(alphas)[max(0, i - 1): i + 2]


# ------------------------------------------------------------------ the member training
@dataclass(frozen=True)
class FitOptions:
    """What :func:`fit_members` needs of the settings; no defaults of its own: it is made from
    :class:`~cortexcast.decoder.training.common.TrainSettings` (``mouse.fit_options``)."""

    epochs: int
    patience: int
    lr: float
    weight_decay: float
    batch: int
    corr_weight: float
    feature_noise: float
    """Std of Gaussian noise added to standardised features while training (augmentation)."""
    seed: int


@dataclass
class FitReport:
    member_scores: list[float]
    """Best validation pixel correlation of each member."""
    member_epochs: list[int]
    ensemble_score: float
    ridge_score: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)


class Cache:
    """A FeatureSet on the training device, with the ridge coefficients and retinal targets."""

    def __init__(self, model, fs: FeatureSet, front: FrontEnd, device: torch.device,
                 targets: bool) -> None:
        s = model.s
        self.fs = fs
        self.feats = torch.from_numpy(fs.feats).to(device)
        self.beh = torch.from_numpy(fs.behavior).to(device)
        self.starts = torch.from_numpy(fs.window_starts()).to(device)
        self.span = torch.arange(s.window, device=device)
        self.eye = fs.eye_z(front, s.window, s.lag)
        with torch.no_grad():
            self.lin = torch.cat([model.linear(self.window(torch.arange(
                a, min(a + 2048, fs.frames), device=device))[0])
                for a in range(0, fs.frames, 2048)])
        self.target = None
        if targets:
            basis = model.pix_basis_t.T.cpu().numpy()
            y = retinal_coefficients(fs, self.eye, s.eye_shift_px, (s.height, s.width),
                                     model.pix_mean.cpu().numpy(), basis)
            self.target = torch.from_numpy(y).to(device)

    def window(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.starts[frames][:, None] + self.span[None]
        return self.feats[rows], self.beh[rows]


def member_batch_loss(model, data: Cache, member: int, opt: FitOptions,
                      gen: torch.Generator, power: float) -> torch.Tensor:
    """The loss of one member on one random batch of ``data``'s frames (each member draws its
    own batches; feature noise, if any, is the augmentation)."""
    fr = torch.randint(0, data.fs.frames, (opt.batch,), generator=gen).to(data.feats.device)
    f, b = data.window(fr)
    if opt.feature_noise > 0:
        f = f + opt.feature_noise * torch.randn_like(f) / model.feat_inv
    bz = model.behavior_z(b) if model.s.behavior else None
    lin = data.lin[fr]
    pred = lin + model.residual(f, bz, lin, [member])
    return _loss(pred, data.target[fr], power, opt.corr_weight)


def _loss(pred: torch.Tensor, target: torch.Tensor, scale: float,
          corr_weight: float) -> torch.Tensor:
    """MSE of the frame-PC coefficients (relative to the targets' power) + corr_weight x
    (1 - Pearson r over the batch's coefficients: the pixel correlation within the basis)."""
    mse = torch.mean((pred - target) ** 2) / scale
    p, t = pred - pred.mean(), target - target.mean()
    r = (p * t).sum() / torch.sqrt((p * p).sum() * (t * t).sum() + 1e-8)
    return mse + corr_weight * (1.0 - r)


def predict(model, cache: Cache, members: list[int] | None, batch: int = 2048) -> np.ndarray:
    """(frames, H, W) screen reconstructions: ridge + the chosen members' mean ([]: ridge)."""
    model.eval()
    s = model.s
    out = []
    dev = cache.feats.device
    with torch.no_grad():
        for a in range(0, cache.fs.frames, batch):
            fr = torch.arange(a, min(a + batch, cache.fs.frames), device=dev)
            f, b = cache.window(fr)
            bz = model.behavior_z(b) if s.behavior else None
            coef = cache.lin[fr]
            if members != []:
                coef = coef + model.residual(f, bz, coef, members)
            out.append(model.to_frames(coef, bz).cpu().numpy())
    model.train()
    return np.concatenate(out)


def validation_score(model, cache: Cache, mask: np.ndarray,
                     members: list[int] | None = None) -> float:
    return mean_over_clips(per_trial_scores(predict(model, cache, members), cache.fs, mask))


def fit_members(model, train: Cache, val: Cache, mask: np.ndarray, opt: FitOptions,
                deadline: float | None,
                tick: Callable[[dict], None] = lambda _: None) -> FitReport:
    """AdamW on every member at once (each its own batches); keep each member's best state.

    Every member starts at zero (the graph = the ridge branch), scored as epoch 0, so a
    member's kept state never scores below the ridge branch on the validation trials.
    """
    gen = torch.Generator().manual_seed(opt.seed)
    adam = torch.optim.AdamW(list(model.members.parameters()), lr=opt.lr,
                             weight_decay=opt.weight_decay)
    ridge = validation_score(model, val, mask, [])
    n = len(model.members)
    best = [ridge] * n
    best_state = [copy.deepcopy(m.state_dict()) for m in model.members]
    best_epoch, bad = [0] * n, [0] * n
    steps = max(1, train.fs.frames // opt.batch)
    power = float(train.target.var()) if train.target is not None else 1.0
    history = [{"epoch": 0, "loss": math.nan, "val_r": ridge, "time_s": 0.0}]
    epoch = 0
    t0 = time.monotonic()
    model.train()
    for epoch in range(1, opt.epochs + 1):
        losses = []
        out_of_time = deadline is not None and time.monotonic() > deadline
        for _ in range(0 if out_of_time else steps):
            total = 0.0
            for i in range(n):
                total = total + member_batch_loss(model, train, i, opt, gen, power)
            adam.zero_grad(set_to_none=True)
            total.backward()
            adam.step()
            losses.append(float(total.detach()) / n)
            if deadline is not None and time.monotonic() > deadline:
                out_of_time = True
                break
        if losses:
            scores = [validation_score(model, val, mask, [i]) for i in range(n)]
            for i, sc in enumerate(scores):
                if np.isfinite(sc) and sc > best[i]:
                    best[i], best_epoch[i], bad[i] = sc, epoch, 0
                    best_state[i] = copy.deepcopy(model.members[i].state_dict())
                else:
                    bad[i] += 1
            row = {"epoch": epoch, "loss": float(np.mean(losses)),
                   "val_r": float(np.mean(scores)), "time_s": time.monotonic() - t0}
            history.append(row)
            tick(row)
        if out_of_time or min(bad) >= opt.patience:
            break
    for m, st in zip(model.members, best_state):
        m.load_state_dict(st)
    ens = validation_score(model, val, mask) if n > 1 else best[0]
    if not ens >= ridge:  # members that only help apart: fall back to the ridge branch
        log.warning("ensemble validation r %.4f < ridge branch %.4f: members set to zero",
                    ens, ridge)
        zero_members(model)
        ens = ridge
    return FitReport(best, best_epoch, ens, ridge, epoch, history)


def zero_members(model) -> None:
    """Make every member output zero (the graph becomes the ridge branch)."""
    with torch.no_grad():
        for m in model.members:
            for layer in (m.out, m.gain[2]):
                layer.weight.zero_()
                layer.bias.zero_()
