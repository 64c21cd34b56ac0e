"""Training the encoding models (Poisson loss, time budget) and caching them in one file.

Each step draws a batch of 32-frame segments and a random subset of neurons
(``neurons_per_step``); for the first ``visual_warmup`` of its budget an instance trains
without the behaviour terms, so the movie has to explain the responses before state can.
The best state on the validation tier (mean per-neuron correlation) is kept.

The cache (``--encoder PATH``, written with ``torch.save``; offline only, never sent over
the wire) holds the :class:`EncoderShape`, the response scale, the dataset it was fitted on
and one state dict per model instance. A rerun reuses the instances it finds and trains
only the missing ones.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cortexcast.core.behavior import fill_missing
from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.training.common import split_trials
from cortexcast.decoder.training.inversion.encoder import (
    EncoderShape, VideoEncoder, estimate_positions, poisson_loss,
)
from cortexcast.decoder.live.model_card import ModelError

log = logging.getLogger("cortexcast.decoder.training.inversion")
CACHE_FORMAT = "cortexcast-encoder-1"


@dataclass(frozen=True)
class FitSettings:
    members: int = 2
    """Model instances (different seeds); the inversion averages their reconstructions."""
    time_budget_s: float = 600.0
    """Training time for all missing instances together (setup excluded)."""
    frames: int = 20
    temporal: int = 4
    channels: int = 16
    segment: int = 32
    batch: int = 8
    lr: float = 3e-3
    seed: int = 0
    train_tier: str = "train"
    val_tier: str = "oracle"
    max_val_trials: int = 4
    neurons_per_step: int = 2048
    """Neurons in each training step's loss, drawn at random (0 = all): the readout of ~8,000
    neurons dominates a step's cost, so subsets buy more steps for the shared core."""
    visual_warmup: float = 0.3
    """Fraction of each instance's budget trained without the behaviour terms, so the model
    must first explain responses from the movie (state alone explains much of the variance
    and, learnt first, leaves the visual path untrained; the inversion needs the latter)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        if not 0 <= self.visual_warmup < 1 or self.neurons_per_step < 0:
            raise ValueError("visual_warmup must be in [0, 1) and neurons_per_step >= 0")
        if not self.time_budget_s > 0:
            raise ValueError(f"the encoder time budget must be > 0 s, got {self.time_budget_s}")


# ------------------------------------------------------------------ data
def clip_behavior(ds: SensoriumDataset, tid: int, mean: np.ndarray) -> np.ndarray:
    """(T, 4) raw behaviour of one trial, missing values (frames, variables or files) filled
    with the training ``mean`` so they add nothing (:mod:`cortexcast.core.behavior`)."""
    return fill_missing(ds.behavior_rows(tid), mean, ds.length(tid))


def response_scale(ds: SensoriumDataset, ids: Sequence[int]) -> np.ndarray:
    """Per-neuron std (dataset statistics if present, else from ``ids``); targets = r / std."""
    _, std, _ = ds.response_statistics(ids)
    positive = std[std > 0]
    floor = 0.01 * float(np.median(positive)) if positive.size else 1.0
    return np.maximum(std, floor).astype(np.float32)


def scaled_targets(responses: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(T, N) raw -> non-negative Poisson targets: max(r, 0) / std, NaN -> 0."""
    r = np.nan_to_num(responses, nan=0.0, posinf=0.0, neginf=0.0)
    return (np.maximum(r, 0.0) / scale[None]).astype(np.float32)


def input_statistics(ds: SensoriumDataset, ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Video mean/std (scalars) and behaviour mean/std (4): dataset statistics, else computed."""
    vs = ds.statistics("videos")
    if "mean" in vs and "std" in vs:
        vmean, vstd = float(np.mean(vs["mean"])), float(np.mean(vs["std"]))
    else:
        vids = [ds.video(i) for i in ids[:40]]
        cat = np.concatenate([v.ravel() for v in vids])
        vmean, vstd = float(np.nanmean(cat)), float(np.nanstd(cat))
    bmean, bstd = ds.behavior_statistics(ids)
    return {"video_mean": np.float32(vmean), "video_std": np.float32(max(vstd, 1e-3)),
            "behavior_mean": bmean, "behavior_std": bstd}


def split(ds: SensoriumDataset, s: FitSettings) -> tuple[list[int], list[int]]:
    """The split of ``cortexcast train`` (:func:`~cortexcast.decoder.training.common.split_trials`),
    validation cut to ``max_val_trials``."""
    train, val, _ = split_trials(ds, s.train_tier, s.val_tier, s.seed)
    return sorted(train), sorted(val)[: s.max_val_trials]


@dataclass
class _Clips:
    videos: list[np.ndarray]      # raw (D - 1 + T, H, W), grey history in front
    targets: list[np.ndarray]     # (T, N) float16
    behavior: list[np.ndarray]    # (D - 1 + T, 4) raw, filled


def _load(ds: SensoriumDataset, ids: Sequence[int], scale: np.ndarray, history: int,
          stats: dict[str, np.ndarray]) -> _Clips:
    out = _Clips([], [], [])
    for tid in ids:
        v = np.nan_to_num(ds.video(tid), nan=float(stats["video_mean"]))
        out.videos.append(np.concatenate(
            [np.full((history, *v.shape[1:]), stats["video_mean"], np.float32), v]))
        out.targets.append(scaled_targets(ds.responses(tid), scale).astype(np.float16))
        b = clip_behavior(ds, tid, stats["behavior_mean"])
        out.behavior.append(np.concatenate([np.repeat(stats["behavior_mean"][None], history, 0),
                                            b]).astype(np.float32))
    return out


# ------------------------------------------------------------------ training
def _validate(model: VideoEncoder, clips: _Clips, history: int, device: torch.device) -> float:
    """Mean over neurons of the correlation of prediction and target, all validation frames."""
    preds, targs = [], []
    model.eval()
    with torch.no_grad():
        for v, t, b in zip(clips.videos, clips.targets, clips.behavior):
            frames = torch.arange(history, len(v), device=device)
            p = model(torch.from_numpy(v)[None].to(device), torch.from_numpy(b)[None].to(device),
                      frames)[0]
            preds.append(p.cpu().numpy().astype(np.float64))
            targs.append(t.astype(np.float64))
    model.train()
    p, t = np.concatenate(preds), np.concatenate(targs)
    p -= p.mean(0)
    t -= t.mean(0)
    den = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    r = np.where(den > 0, (p * t).sum(0) / np.where(den > 0, den, 1), 0.0)
    return float(r.mean())


def train_member(shape: EncoderShape, stats: dict[str, np.ndarray], positions: np.ndarray,
                 train: _Clips, val: _Clips, s: FitSettings, seed: int, budget_s: float,
                 device: torch.device) -> tuple[VideoEncoder, dict[str, Any]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = VideoEncoder(shape)
    model.set_normalisation(stats["video_mean"], stats["video_std"], stats["behavior_mean"],
                            stats["behavior_std"])
    model.set_positions(positions)
    with torch.no_grad():   # start near the mean target: bias = mean - 1 under ELU + 1
        mean_t = np.mean([t.astype(np.float32).mean(0) for t in train.targets], 0)
        model.bias.copy_(torch.as_tensor(np.where(mean_t > 1, mean_t - 1,
                                                  np.log(np.maximum(mean_t, 1e-3)))))
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    hist = shape.frames - 1
    lengths = np.array([len(t) for t in train.targets])
    seg = int(min(s.segment, lengths.min()))
    probs = (lengths - seg + 1) / (lengths - seg + 1).sum()
    start = time.monotonic()
    best, best_state, steps, history = -math.inf, None, 0, []
    next_val = start + max(60.0, budget_s / 4)
    bar = None
    if s.progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=int(math.ceil(budget_s)), unit="s", desc=f"encoder seed {seed}",
                       leave=False)
        except ImportError:
            bar = None
    frames_idx = torch.arange(hist, hist + seg, device=device)
    last = start
    while True:
        now = time.monotonic()
        if now - start >= budget_s and steps > 0:
            break
        which = rng.choice(len(lengths), size=s.batch, p=probs)
        starts = [int(rng.integers(0, lengths[i] - seg + 1)) for i in which]
        v = np.stack([train.videos[i][a: a + hist + seg] for i, a in zip(which, starts)])
        b = np.stack([train.behavior[i][a: a + hist + seg] for i, a in zip(which, starts)])
        t = np.stack([train.targets[i][a: a + seg] for i, a in zip(which, starts)])
        if now - start < s.visual_warmup * budget_s:
            b = np.broadcast_to(stats["behavior_mean"], b.shape)     # z = 0: no state terms
        neurons = None
        if s.neurons_per_step and s.neurons_per_step < shape.neurons:
            neurons = torch.from_numpy(rng.choice(shape.neurons, s.neurons_per_step,
                                                  replace=False)).to(device)
            t = t[:, :, neurons.cpu().numpy()]
        pred = model(torch.from_numpy(v).to(device),
                     torch.from_numpy(np.ascontiguousarray(b, np.float32)).to(device),
                     frames_idx, neurons)
        loss = poisson_loss(pred, torch.from_numpy(t.astype(np.float32)).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if bar is not None:
            bar.update(int(time.monotonic() - start) - bar.n)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if time.monotonic() >= next_val or time.monotonic() - start >= budget_s:
            score = _validate(model, val, hist, device)
            history.append({"step": steps, "time_s": round(time.monotonic() - start, 1),
                            "val_corr": round(score, 4)})
            log.info("encoder seed %d: step %d, validation correlation %.4f", seed, steps, score)
            if score > best:
                best = score
                best_state = {k: x.detach().clone() for k, x in model.state_dict().items()}
            next_val = time.monotonic() + max(60.0, budget_s / 4)
        last = time.monotonic()
    if bar is not None:
        bar.close()
    score = _validate(model, val, hist, device)
    history.append({"step": steps, "time_s": round(last - start, 1), "val_corr": round(score, 4)})
    if score > best or best_state is None:
        best = score
    else:
        model.load_state_dict(best_state)
    model.eval()
    return model, {"seed": seed, "steps": steps, "val_corr": round(best, 4),
                   "train_time_s": round(last - start, 1), "history": history}


# ------------------------------------------------------------------ cache
def load_cache(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise ModelError(f"{path}: cannot read the encoder cache: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT:
        raise ModelError(f"{path} is not a cortexcast encoder cache ({CACHE_FORMAT})")
    return blob


def fit_encoders(ds: SensoriumDataset, cache: str | Path, s: FitSettings,
                 device: torch.device) -> tuple[list[VideoEncoder], dict[str, Any]]:
    """``s.members`` trained encoders, from ``cache`` where it has them; the cache is updated."""
    path = Path(cache)
    blob = load_cache(path)
    shape = EncoderShape(neurons=ds.n_neurons, height=ds.frame_shape[0],
                         width=ds.frame_shape[1], frames=s.frames, temporal=s.temporal,
                         channels=s.channels)
    if blob is not None:
        old = EncoderShape(**blob["shape"])
        if old.neurons != ds.n_neurons or (old.height, old.width) != ds.frame_shape:
            raise ModelError(
                f"encoder cache {path} was fitted on {old.neurons} neurons, frames "
                f"{old.height}x{old.width} ({blob.get('data')}); the dataset {ds.root} has "
                f"{ds.n_neurons}, {ds.frame_shape[0]}x{ds.frame_shape[1]}: pass another "
                "--encoder path")
        shape = old
    members: list[dict[str, Any]] = list(blob["members"]) if blob else []
    train_ids, val_ids = split(ds, s)
    if blob is not None:
        scale = np.asarray(blob["response_scale"], np.float32)
        stats = {k: np.asarray(v, np.float32) for k, v in blob["inputs"].items()}
    else:
        scale = response_scale(ds, train_ids)
        stats = input_statistics(ds, train_ids)
    missing = s.members - len(members)
    if missing > 0:
        log.info("fitting %d encoding model(s) on %d %s trials (%.0f s budget)", missing,
                 len(train_ids), s.train_tier, s.time_budget_s)
        hist = shape.frames - 1
        train = _load(ds, train_ids, scale, hist, stats)
        val = _load(ds, val_ids, scale, hist, stats)
        if blob is not None:
            positions = np.asarray(blob["positions"], np.float32)
        else:
            positions = estimate_positions((t.astype(np.float32) for t in train.targets),
                                           (v[hist:] for v in train.videos))
        used = {m["info"]["seed"] for m in members}
        for k in range(missing):
            seed = s.seed + len(members)
            while seed in used:
                seed += 1
            used.add(seed)
            model, info = train_member(shape, stats, positions, train, val, s, seed,
                                       s.time_budget_s / missing, device)
            members.append({"info": info, "state": {k2: x.cpu() for k2, x in
                                                    model.state_dict().items()}})
        del train, val
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"format": CACHE_FORMAT, "shape": shape.to_dict(), "data": str(ds.root),
                    "train_trials": len(train_ids), "val_trials": len(val_ids),
                    "response_scale": scale, "inputs": stats, "positions": positions,
                    "members": members}, tmp)
        tmp.replace(path)
    models = []
    for m in members[: s.members]:
        model = VideoEncoder(shape)
        model.load_state_dict(m["state"])
        model.to(device).eval()
        models.append(model)
    info = {"cache": str(path), "shape": shape.to_dict(), "reused": max(0, min(
        len(members) - max(missing, 0), s.members)), "members": [m["info"] for m in
                                                               members[: s.members]]}
    return models, info | {"response_scale": scale, "inputs": stats}
