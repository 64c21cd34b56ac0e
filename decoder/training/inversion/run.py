"""``cortexcast reconstruct --method inversion``: fit (or reuse) the encoders, invert each clip.

Writes ``out/<trial>.npy`` float32 (T, H, W) like the default method, so ``cortexcast
evaluate --recon out`` scores it, plus ``out/inversion.json`` (settings, encoder
validation scores, timings).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.offline.evaluate import choose_mask
from cortexcast.decoder.training.device import pick_device
from cortexcast.decoder.training.inversion.fit import (
    FitSettings, clip_behavior, fit_encoders, scaled_targets,
)
from cortexcast.decoder.training.inversion.invert import InversionSettings, invert_clip
from cortexcast.decoder.offline.reconstruct import ReconstructResult, missing_responses_message, tier_ids

log = logging.getLogger("cortexcast.decoder.training.inversion")


def reconstruct_inversion(data_dir: str | Path, tier: str, out_dir: str | Path, *,
                          encoder: str | Path | None = None, fit: FitSettings = FitSettings(),
                          inversion: InversionSettings = InversionSettings(),
                          mask_file: str | Path | None = None, device: str = "auto",
                          threads: int | None = None,
                          progress: bool = True) -> ReconstructResult:
    """Write the inversion's reconstruction of every trial of ``tier``.

    ``threads``: torch's CPU threads (the CLI passes 1 by default: the CPU may be shared).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    ds = SensoriumDataset(data_dir)
    ids = tier_ids(ds, tier)
    why = missing_responses_message(ds, tier)
    if why is not None:
        return ReconstructResult(skipped=f"{why}; nothing to reconstruct, skipped")
    dev = pick_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(encoder) if encoder is not None else out / "encoder.pt"
    t0 = time.monotonic()
    models, info = fit_encoders(ds, cache, fit, dev)
    fit_s = time.monotonic() - t0
    for m in models:
        m.requires_grad_(False)
    mask, mask_source = choose_mask(ds, None, mask_file)
    scale, stats = info.pop("response_scale"), info.pop("inputs")
    grey = float(stats["video_mean"]) if inversion.grey is None else float(inversion.grey)
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(ids) * len(models) * inversion.iterations, unit="step",
                       desc=f"invert {len(ids)} clips")
        except ImportError:
            bar = None
    step = (lambda: bar.update(1)) if bar is not None else None
    result = ReconstructResult()
    t1 = time.monotonic()
    nan_values = 0
    for k, tid in enumerate(ids):
        resp = ds.responses(tid)
        nan_values += int(np.count_nonzero(~np.isfinite(resp)))
        targets = scaled_targets(resp, scale)
        beh = clip_behavior(ds, tid, stats["behavior_mean"])
        recon = invert_clip(models, targets, beh, mask, inversion, grey, dev,
                            seed=fit.seed + k, step=step)
        path = out / f"{tid}.npy"
        np.save(path, recon)
        result.files.append(path)
    if bar is not None:
        bar.close()
    invert_s = time.monotonic() - t1
    result.nan_values = nan_values
    summary = {"method": "inversion", "data": str(ds.root), "tier": tier,
               "trials": [int(i) for i in ids], "device": str(dev),
               "mask": {"source": mask_source, "pixels": int(mask.sum())},
               "fit": asdict(fit), "inversion": asdict(inversion), "encoder": info,
               "time_s": {"encoders": round(fit_s, 1), "inversion": round(invert_s, 1),
                          "per_clip": round(invert_s / max(1, len(ids)), 1)}}
    (out / "inversion.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result
