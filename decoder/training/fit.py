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
from cortexcast.decoder.training.lag_choice import near_alphas
from cortexcast.decoder.training.ridge_fit import choose_alpha, clearly_better

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
    """Early-stopping split r of the kept solution."""
    scores: dict[str, float]
    """Validation r of every (shift, alpha) tried, keyed "shift/alpha" (shift 0: on both
    splits; the others: on the early-stopping split)."""
    selection: dict[str, float] = field(default_factory=dict)
    """Selection split r of the best shift and of shift 0 (the simpler model), when they
    differ: the shift is kept only where it wins there too."""


def fit_ridge_branch(train: FeatureSet, stop: FeatureSet, select: FeatureSet, front: FrontEnd,
                     window: int, lag: int, alphas: Sequence[float],
                     default_alpha: float | None, shifts: Sequence[float], mask: np.ndarray,
                     shape: tuple, pix_mean: np.ndarray, basis: np.ndarray) -> RidgeBranch:
    """Ridge from window features to retinal frame PCs, for each eye-shift gain in ``shifts``.

    Per gain, alpha is chosen by :func:`~.ridge_fit.choose_alpha` (``default_alpha`` unless
    another clearly beats it, as ``--method ridge``): for gain 0 (the plain ridge branch) on
    both splits, for the others on the early-stopping split ``stop`` with only the alphas
    near the default; the gain
    that scores best there is kept only if it also beats gain 0 clearly
    (:func:`~.ridge_fit.clearly_better`) on the ``select`` split (issue 12: a branch stays
    only where it beats the simpler model on data its choice did not see). Alpha is relative
    (penalty = alpha x mean eigenvalue of the centred XᵀX), as in ``--method ridge``."""
    x = design(train, window)
    mx = x.mean(0)
    xc = x - mx
    evals, evecs = np.linalg.eigh((xc.T @ xc).astype(np.float64))
    evals = np.maximum(evals, 0.0)
    scale = float(evals.mean()) or 1.0
    rotated = {id(fs): ((design(fs, window) - mx) @ evecs).astype(np.float32)
               for fs in (stop, select)}
    eyes = {id(fs): fs.eye_z(front, window, lag) for fs in (stop, select)}
    eye_t = train.eye_z(front, window, lag)
    scores: dict[str, float] = {}
    solved: dict[float, tuple[float, float, np.ndarray, np.ndarray]] = {}

    def score(fs: FeatureSet, b_rot: np.ndarray, my: np.ndarray, c: float) -> list[float]:
        coef = rotated[id(fs)] @ b_rot + my
        return per_trial_scores(to_screen(coef, eyes[id(fs)], c, shape, pix_mean, basis),
                                fs, mask)

    def solve(c: float) -> None:
        y = retinal_coefficients(train, eye_t, c, shape, pix_mean, basis)
        my = y.mean(0)
        proj = evecs.T @ (xc.T @ (y - my)).astype(np.float64)
        per, sols = [], []
        grid = tuple(alphas) if c == 0 else near_alphas(alphas, default_alpha)
        # the unshifted branch is the ridge itself: its alpha is chosen on every validation
        # trial, as --method ridge chooses it (on half of them it picked 1.0 where ridge's
        # 0.3 scored 0.011 higher on test, issue 12); a shift's on the early-stopping split
        both = c == 0 and select is not stop
        for a in grid:
            b_rot = (proj / (evals + a * scale)[:, None]).astype(np.float32)
            per.append(score(stop, b_rot, my, c) + (score(select, b_rot, my, c) if both else []))
            sols.append(b_rot)
        per_clip = np.array(per, np.float64).T
        j, means = choose_alpha(per_clip, grid, default_alpha)
        for a, r in zip(grid, means):
            scores[f"{c:g}/{a:g}"] = float(r)
        # gains are compared on the early-stopping split alone
        stop_r = mean_over_clips(list(per_clip[: len(stop.starts), j])) if both else means[j]
        solved[c] = (float(stop_r), float(grid[j]), sols[j], my)

    order = sorted(shifts, key=abs)
    for c in order:
        solve(c)
    step = min((abs(a - b) for a in shifts for b in shifts if a != b), default=0.0)
    best = max(solved, key=lambda c: solved[c][0])
    if step > 0 and best != 0:  # refine: half the grid's step on both sides of the best gain
        for c in (best - step / 2, best + step / 2):
            solve(c)
        best = max(solved, key=lambda c: solved[c][0])
    if not np.isfinite(solved[best][0]):
        raise ValueError("no ridge solution scored on the validation trials")
    selection: dict[str, float] = {}
    if best != 0 and 0.0 in solved and select is not stop:
        per = np.array([score(select, solved[0.0][2], solved[0.0][3], 0.0),
                        score(select, solved[best][2], solved[best][3], best)]).T
        pick, means = clearly_better(per, 0)  # shift 0 unless the shift wins clearly
        selection = {f"shift {best:g}": float(means[1]), "shift 0": float(means[0])}
        if pick == 0:
            log.info("eye shift %g px/z: selection r %.4f vs %.4f without, not clearly "
                     "better; not kept", best, means[1], means[0])
            best = 0.0
    r, a, b_rot, my = solved[best]
    w = evecs @ b_rot.astype(np.float64)
    log.info("ridge branch: validation r %s; chosen shift %g px/z, alpha %g (r %.4f)",
             ", ".join(f"{k}: {v:.4f}" for k, v in scores.items()), best, a, r)
    return RidgeBranch(w.astype(np.float32), (my - mx @ w).astype(np.float32), a, best, r,
                       scores, selection)


def branch_scores(br: RidgeBranch, fs: FeatureSet, front: FrontEnd, window: int, lag: int,
                  mask: np.ndarray, shape: tuple, pix_mean: np.ndarray,
                  basis: np.ndarray) -> list[float]:
    """Pixel correlation of a ridge branch on each trial of ``fs``."""
    coef = design(fs, window) @ br.weight + br.bias
    eye = fs.eye_z(front, window, lag)
    return per_trial_scores(to_screen(coef, eye, br.shift_px, shape, pix_mean, basis), fs,
                            mask)


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
    """Best early-stopping split pixel correlation of each member."""
    member_epochs: list[int]
    ensemble_score: float
    """The ensemble on the early-stopping split."""
    ridge_score: float
    """The ridge branch on the early-stopping split."""
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    selection: dict[str, float] = field(default_factory=dict)
    """Selection split r of the ensemble and of the ridge branch (the members are kept only
    where the ensemble wins there: the split early stopping never looked at)."""
    members_kept: bool = True


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


def fit_members(model, train: Cache, val: Cache, select: Cache, mask: np.ndarray,
                opt: FitOptions, deadline: float | None,
                tick: Callable[[dict], None] = lambda _: None, *,
                groups: list[dict] | None = None, pretrained: bool = False) -> FitReport:
    """AdamW on every member at once (each its own batches); keep each member's best state
    on ``val`` (the early-stopping split); keep the members at all only if the ensemble beats
    the ridge branch on ``select`` (the selection split; it may be ``val`` itself when the
    validation trials show a single clip).

    Every member starts at zero (the graph = the ridge branch), scored as epoch 0, so a
    member's kept state never scores below the ridge branch on the early-stopping split.
    ``pretrained``: the members start from a pretrained core instead (not zero); epoch 0 is
    their own starting score. ``groups``: AdamW parameter groups (default: every member
    parameter at ``opt.lr``).
    """
    gen = torch.Generator().manual_seed(opt.seed)
    adam = torch.optim.AdamW(groups or list(model.members.parameters()), lr=opt.lr,
                             weight_decay=opt.weight_decay)
    ridge = validation_score(model, val, mask, [])
    n = len(model.members)
    best = ([validation_score(model, val, mask, [i]) for i in range(n)] if pretrained
            else [ridge] * n)
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
    ens, selection, kept = keep_members_if_better(model, val, select, mask, ens, ridge)
    return FitReport(best, best_epoch, ens, ridge, epoch, history, selection, kept)


def keep_members_if_better(model, val: Cache, select: Cache, mask: np.ndarray, ens: float,
                           ridge: float) -> tuple[float, dict[str, float], bool]:
    """Zero the members unless the ensemble beats the ridge branch on the selection split
    (and is no worse on the early-stopping split, where it scored ``ens`` against
    ``ridge``); (early-stopping score of what is kept, selection scores, kept)."""
    if select is val:
        sel_ens, sel_ridge = ens, ridge
    else:
        sel_ens, sel_ridge = (validation_score(model, select, mask),
                              validation_score(model, select, mask, []))
    kept = bool(sel_ens > sel_ridge and ens >= ridge)
    if not kept:  # the nonlinear members do not beat the simpler model: the ridge branch
        log.warning("ensemble r %.4f vs ridge branch %.4f on the selection split (%.4f vs "
                    "%.4f early-stopping): members set to zero", sel_ens, sel_ridge, ens, ridge)
        zero_members(model)
        ens, sel_ens = ridge, sel_ridge
    return ens, {"ensemble": float(sel_ens), "ridge": float(sel_ridge)}, kept


def zero_members(model) -> None:
    """Make every member output zero (the graph becomes the ridge branch)."""
    with torch.no_grad():
        for m in model.members:
            for layer in (m.out, m.gain[2]):
                layer.weight.zero_()
                layer.bias.zero_()
