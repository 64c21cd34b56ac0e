"""``cortexcast train``: fit a pixel decoder on a Sensorium-layout folder, export ONNX.

Only this module (and decoder.training.model/windows) imports torch. Steps:

1. open the dataset; training trials = tier ``train``; validation = tier
   ``oracle`` if it has responses, else a seeded 10 % of the training trials;
2. evaluation mask = the one ``evaluate`` would choose for the dataset (its
   ``eval_mask.npy``, else estimated from the training responses), stored
   with the model;
3. train on random segments streamed a few trials at a time (memory ~ chunk),
   loss = MSE (video z-units) + (1 - Pearson r within the mask); Adam; after
   every epoch score the validation trials with :func:`pixel_correlation`,
   keep the best weights, stop after ``patience`` epochs without progress or
   when ``time_budget_s`` runs out;
4. export ONNX, check onnxruntime against torch on held-out windows, write the
   card and the mask.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from decoder.dataset import DatasetError, SensoriumDataset
from decoder.evaluate import choose_mask
from decoder.metric import clip_correlation, mean_over_clips
from decoder.model_card import ModelCard, ModelError, save_card, save_mask
from decoder.training.model import ModelShape, WindowDecoder, export_onnx, onnx_torch_max_diff
from decoder.training.windows import (
    load_chunk, normalisation, pad_responses, segment_batches, windows_of,
)

log = logging.getLogger("decoder.train")

ONNX_TOLERANCE = 1e-3 * 255
"""Max |onnxruntime - torch| accepted, on the 0..255 scale."""


@dataclass(frozen=True)
class TrainSettings:
    data: str
    """Dataset folder (Sensorium 2023 layout)."""
    out: str
    """Path of the ONNX file; the card (.json) and mask (.mask.npy) go beside it."""
    window: int = 10
    """W: imaging frames per reconstruction (1..10)."""
    lag: int = 5
    """L: frames of responses after the reconstructed frame (0..W-1); 5 = 167 ms at 30 Hz."""
    epochs: int = 60
    time_budget_s: float | None = None
    """Wall-clock limit (s) from the start of ``train`` (setup included) to the end of the
    last training step; the last validation and the export come after. None = no limit."""
    seed: int = 0
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ..."""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    segment: int = 32
    """Frames per training segment (capped by the shortest training trial)."""
    segments: int = 8
    """Segments per batch."""
    chunk_trials: int = 16
    """Trials held in memory at once (RAM ~ chunk_trials x T x N x 4 bytes)."""
    patience: int = 8
    corr_weight: float = 1.0
    readout: int = 48
    hidden: int = 384
    channels: int = 8
    dropout: float = 0.2
    train_tier: str = "train"
    val_tier: str = "oracle"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    """Copied into the card's ``extra``; a dataset's ``sim.json`` (from ``cortexcast
    simulate``) is copied there as ``simulation`` without asking."""

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 10:
            raise ValueError(f"window must be in 1..10, got {self.window}")
        if not 0 <= self.lag <= self.window - 1:
            raise ValueError(f"lag must be in 0..window-1 ({self.window - 1}), got {self.lag}")
        if self.epochs < 1 or self.segment < 1 or self.segments < 1 or self.chunk_trials < 1:
            raise ValueError("epochs, segment, segments and chunk_trials must be >= 1")
        if not self.out.endswith(".onnx"):
            raise ValueError(f"the model path must end in .onnx, got {self.out}")


@dataclass
class TrainResult:
    model_path: Path
    card: ModelCard
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available")
    return dev


def _split(ds: SensoriumDataset, s: TrainSettings) -> tuple[list[int], list[int], str]:
    train_ids = [i for i in ds.trial_ids(s.train_tier) if ds.trials[i].has_responses]
    if not train_ids:
        raise DatasetError(f"{ds.root}: tier {s.train_tier!r} has no trials with responses")
    val_ids = [i for i in ds.trial_ids(s.val_tier) if ds.trials[i].has_responses]
    if val_ids:
        return train_ids, val_ids, s.val_tier
    if ds.trial_ids(s.val_tier):
        log.warning("tier %s has no responses; holding out training trials", s.val_tier)
    if len(train_ids) < 2:
        return train_ids, train_ids, f"{s.train_tier} (no held-out trials!)"
    rng = np.random.default_rng(s.seed)
    order = list(rng.permutation(train_ids))
    n_val = max(1, len(order) // 10)
    return sorted(int(i) for i in order[n_val:]), sorted(int(i) for i in order[:n_val]), \
        f"{n_val} trials held out of {s.train_tier}"


def _simulation(ds: SensoriumDataset) -> dict[str, Any]:
    """``{"simulation": ...}`` from the ``sim.json`` that ``cortexcast simulate`` writes."""
    p = ds.root / "sim.json"
    if not p.is_file():
        return {}
    try:
        return {"simulation": json.loads(p.read_text())}
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: not readable JSON (%s); not copied into the card", p, exc)
        return {}


def _segment_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  corr_weight: float) -> torch.Tensor:
    """MSE + corr_weight * (1 - mean per-segment Pearson r in the mask); (S, T, H, W) inputs."""
    mse = torch.mean((pred - target) ** 2)
    p = pred[..., mask].flatten(1)
    t = target[..., mask].flatten(1)
    p = p - p.mean(1, keepdim=True)
    t = t - t.mean(1, keepdim=True)
    r = (p * t).sum(1) / torch.sqrt((p * p).sum(1) * (t * t).sum(1) + 1e-8)
    return mse + corr_weight * (1.0 - r.mean())


def _validate(model: WindowDecoder, ds: SensoriumDataset, ids: list[int], s: TrainSettings,
              mask: np.ndarray, device: torch.device) -> float:
    """Pixel correlation of the validation trials, one trial in memory at a time."""
    model.eval()
    per_clip = []
    with torch.no_grad():
        for tid in ids:
            padded = torch.from_numpy(pad_responses(ds.responses(tid), s.window, s.lag))
            recon = model.decode_padded(padded.to(device)).cpu().numpy()
            per_clip.append(clip_correlation(recon, ds.video(tid), mask))
    model.train()
    return mean_over_clips(per_clip)


def _train_epoch(model: WindowDecoder, opt: torch.optim.Optimizer, ds: SensoriumDataset,
                 order: list[int], s: TrainSettings, segment: int, mask: torch.Tensor,
                 rng: np.random.Generator, tick: Callable[[int], object],
                 deadline: float | None) -> tuple[list[float], bool]:
    """One pass over the training trials, ``chunk_trials`` at a time; (losses, out of time)."""
    device = mask.device
    losses: list[float] = []
    for c in range(0, len(order), s.chunk_trials):
        chunk = load_chunk(ds, order[c: c + s.chunk_trials], s.window, s.lag, device)
        for padded, target in segment_batches(chunk, segment, s.segments, s.window, rng):
            # readout once per frame of each segment, then every window of it
            feats = model.features(padded)                          # (S, seg + W - 1, K)
            win = feats.unfold(1, s.window, 1).permute(0, 1, 3, 2)  # (S, seg, W, K)
            pred = model.head_normalised(win.reshape(-1, s.window, win.shape[-1]))
            tz = (target - model.video_mean) / model.video_std
            loss = _segment_loss(pred.view(target.shape), tz, mask, s.corr_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            tick(1)
            if deadline is not None and time.monotonic() > deadline:
                return losses, True
    return losses, False


def train(s: TrainSettings) -> TrainResult:
    """Fit, export and check one model; returns where it went and its card."""
    from tqdm import tqdm

    t0 = time.monotonic()
    out = Path(s.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    device = pick_device(s.device)
    ds = SensoriumDataset(s.data)
    train_ids, val_ids, val_desc = _split(ds, s)
    mask, mask_desc = choose_mask(ds)  # the mask `evaluate` would use
    norm = normalisation(ds, train_ids)
    h, w = ds.frame_shape
    shape = ModelShape(ds.n_neurons, s.window, h, w, s.readout, s.hidden, s.channels, s.dropout)
    model = WindowDecoder(shape, norm.resp_mean, norm.resp_std, norm.video_mean,
                          norm.video_std).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    mask_t = torch.as_tensor(mask, device=device)
    segment = min(s.segment, min(ds.length(i) for i in train_ids))
    frames = sum(ds.length(i) for i in train_ids)
    # Steps per epoch, for the progress bar (each chunk rounds down, at least 1).
    steps = math.ceil(len(train_ids) / s.chunk_trials) + frames // (segment * s.segments)
    log.info("%s | train %d trials (%d frames), validation: %s, mask: %s (%d px), "
             "normalisation: %s, device %s", ds, len(train_ids), frames, val_desc, mask_desc,
             int(mask.sum()), norm.source, device)
    best, best_state, best_epoch, bad, history = -math.inf, None, 0, 0, []
    deadline = None if s.time_budget_s is None else t0 + s.time_budget_s
    bar = tqdm(total=s.epochs * steps, disable=not s.progress, unit="step", desc="train")
    epoch = 0
    model.train()
    for epoch in range(1, s.epochs + 1):
        order = [int(i) for i in rng.permutation(train_ids)]
        losses, out_of_time = _train_epoch(model, opt, ds, order, s, segment, mask_t, rng,
                                           bar.update, deadline)
        score = _validate(model, ds, val_ids, s, mask, device)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else math.nan,
                        "val_r": score, "time_s": time.monotonic() - t0})
        bar.set_postfix(epoch=epoch, loss=f"{history[-1]['loss']:.3f}", val_r=f"{score:.3f}")
        if np.isfinite(score) and score > best:
            best, best_epoch, bad = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        if out_of_time or bad >= s.patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    train_time = time.monotonic() - t0
    card = _export(model, ds, s, out, val_ids, mask, shape, {
        "method": (f"{shape.describe()}; loss MSE + {s.corr_weight:g} x (1 - r); Adam "
                   f"lr {s.lr:g}; early stopping on {val_desc}"),
        "validation_score": best if np.isfinite(best) else None,
        "training_time_s": round(train_time, 2),
        "data_used": {"folder": str(Path(s.data).resolve()), "train_tier": s.train_tier,
                      "train_trials": len(train_ids), "train_frames": frames,
                      "validation": val_desc, "validation_trials": len(val_ids),
                      "eval_mask": mask_desc, "normalisation": norm.source},
        "extra": {**_simulation(ds), **s.extra, "training": {
            "best_epoch": best_epoch, "epochs_run": epoch, "device": str(device),
            "seed": s.seed, "shape": asdict(shape), "history": history}},
    })
    log.info("best validation r %.4f at epoch %d of %d; %.1f s; wrote %s", best, best_epoch,
             epoch, train_time, out)
    return TrainResult(out, card, best_epoch, epoch, history)


def _export(model: WindowDecoder, ds: SensoriumDataset, s: TrainSettings, out: Path,
            val_ids: list[int], mask: np.ndarray, shape: ModelShape,
            info: dict[str, Any]) -> ModelCard:
    """Export, compare onnxruntime with torch on held-out windows, then card and mask."""
    probe_rng = np.random.default_rng(s.seed + 1)
    windows = []
    for tid in val_ids[:4]:
        padded = pad_responses(ds.responses(tid), s.window, s.lag)
        frames = probe_rng.choice(ds.length(tid), size=min(8, ds.length(tid)), replace=False)
        windows.append(windows_of(padded, s.window, frames))
    probe = np.concatenate(windows)
    tmp = out.with_name(out.stem + ".tmp.onnx")
    export_onnx(model, tmp, "activity", "frame")
    diff = onnx_torch_max_diff(model, tmp, probe, "activity", "frame")
    log.info("onnxruntime vs torch on %d held-out windows: max |diff| = %.3g (0..255 scale)",
             len(probe), diff)
    if not diff <= ONNX_TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"onnxruntime and torch disagree by {diff:.3g} (> {ONNX_TOLERANCE:.3g}) "
                         "on held-out input; the export is not trustworthy, nothing written")
    tmp.replace(out)
    size_mb = out.stat().st_size / 1e6
    if size_mb > 20:
        log.warning("%s is %.1f MB (> 20 MB); consider a smaller --readout", out, size_mb)
    card = ModelCard(neurons=shape.neurons, window=s.window, lag=s.lag, height=shape.height,
                     width=shape.width, onnx_max_abs_diff=diff, **info)
    save_card(card, out)
    save_mask(mask, out)
    return card
