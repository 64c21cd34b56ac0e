"""``cortexcast evaluate``: the pixel correlation of reconstructions of one tier.

Reconstructions come either from a folder written by ``reconstruct``
(``--recon``; targets need only the videos, so this works on tiers whose
responses are withheld) or from a model run through the live path in memory
(``--model``). The evaluation mask is, in order of preference: ``--mask``
FILE, the dataset's ``eval_mask.npy``, the mask stored with ``--model``, or
one estimated from the dataset's training responses
(:func:`cortexcast.decoder.live.metric.estimate_eval_mask`). No torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.live.metric import (
    SIGMA, START, STOP, estimate_eval_mask, mean_over_clips, per_clip_correlation,
)
from cortexcast.decoder.live.model_card import load_mask
from cortexcast.decoder.offline.streaming import decoder_for_dataset
from cortexcast.decoder.live.pixel_decoder import DEFAULT_PROVIDERS
from cortexcast.decoder.offline.reconstruct import iter_reconstructions, missing_responses_message, tier_ids


@dataclass
class EvalResult:
    data: str
    tier: str
    source: str
    """'recon <folder>' or 'model <file>'."""
    per_clip: dict[int, float]
    mean: float
    mask: np.ndarray
    mask_source: str

    @property
    def scored(self) -> int:
        return sum(1 for r in self.per_clip.values() if math.isfinite(r))

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "data": self.data, "tier": self.tier, "source": self.source,
            "metric": {"name": "pixel_correlation", "sigma": list(SIGMA),
                       "frames": [START, STOP]},
            "mask": {"source": self.mask_source, "pixels": int(self.mask.sum()),
                     "shape": list(self.mask.shape)},
            "per_clip": {str(k): num(v) for k, v in self.per_clip.items()},
            "clips": len(self.per_clip), "clips_scored": self.scored, "mean": num(self.mean),
        }

    def report(self) -> str:
        lines = [f"{self.data} tier {self.tier}, reconstructions from {self.source}",
                 f"mask: {int(self.mask.sum())} of {self.mask.size} px ({self.mask_source})"]
        lines += [f"  trial {tid:>6}: r = {r:.4f}" for tid, r in self.per_clip.items()]
        lines.append(f"mean pixel correlation over {self.scored} of {len(self.per_clip)} clips: "
                     f"{self.mean:.4f}")
        return "\n".join(lines)


def choose_mask(ds: SensoriumDataset, model_path: str | Path | None = None,
                mask_file: str | Path | None = None) -> tuple[np.ndarray, str]:
    """The evaluation mask and where it came from (see the module docstring)."""
    if mask_file is not None:
        p = Path(mask_file)
        if not p.is_file():
            raise DatasetError(f"mask file {p} does not exist")
        mask = np.load(p, allow_pickle=False).astype(bool)
        if mask.shape != ds.frame_shape or not mask.any():
            raise DatasetError(f"{p}: mask is {mask.shape} with {int(mask.sum())} px; "
                               f"need {ds.frame_shape} with at least one")
        return mask, str(p)
    mask = ds.eval_mask()
    if mask is not None:
        return mask, "eval_mask.npy of the dataset"
    if model_path is not None:
        mask = load_mask(model_path, ds.frame_shape)
        if mask is not None:
            return mask, f"stored with the model ({Path(model_path).name})"
    for tier in ("train", *ds.tiers()):
        ids = [i for i in ds.trial_ids(tier) if ds.trials[i].has_responses][:40]
        if ids:
            mask = estimate_eval_mask((ds.responses(i), ds.video(i)) for i in ids)
            return mask, f"estimated from {len(ids)} {tier} trials"
    return np.ones(ds.frame_shape, bool), "all pixels (no responses to estimate a mask from)"


def load_reconstruction(ds: SensoriumDataset, folder: str | Path, tid: int,
                        tier: str) -> np.ndarray:
    """``folder/<tid>.npy``, checked against the trial's shape; DatasetError if absent/wrong."""
    p = Path(folder) / f"{tid}.npy"
    if not p.is_file():
        raise DatasetError(f"{folder} has no reconstruction of trial {tid} ({p.name}); "
                           f"run `cortexcast reconstruct --tier {tier}` first")
    try:
        recon = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{p}: cannot read the reconstruction: {exc}") from exc
    want = (ds.length(tid), *ds.frame_shape)
    if recon.shape != want:
        raise DatasetError(f"{p}: reconstruction is {recon.shape}, trial is {want}")
    return recon


def evaluate(data_dir: str | Path, tier: str, *, recon_dir: str | Path | None = None,
             model_path: str | Path | None = None, mask_file: str | Path | None = None,
             mask: tuple[np.ndarray, str] | None = None,
             providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int = 1) -> EvalResult:
    """Score one tier. Exactly one of ``recon_dir`` and ``model_path``.

    ``mask`` (array, where it came from) overrides the choice of :func:`choose_mask`.

    Raises DatasetError when a reconstruction is missing or has the wrong shape,
    or (with ``model_path``) when the tier has no responses.
    """
    if (recon_dir is None) == (model_path is None):
        raise ValueError("give exactly one of recon_dir and model_path")
    ds = SensoriumDataset(data_dir)
    ids = tier_ids(ds, tier)
    mask, mask_source = mask if mask is not None else choose_mask(ds, model_path, mask_file)
    per_clip: dict[int, float] = {}
    source = ""
    if recon_dir is not None:
        folder = Path(recon_dir)
        for tid in ids:
            recon = load_reconstruction(ds, folder, tid, tier)
            per_clip[tid] = float(per_clip_correlation(recon, ds.video(tid), mask)[0])
        source = f"recon {folder}"
    elif model_path is not None:
        why = missing_responses_message(ds, tier)
        if why is not None:
            raise DatasetError(f"{why}; --model needs responses. To score this tier, pass "
                               "reconstructions made elsewhere with --recon")
        decoder = decoder_for_dataset(model_path, ds, providers=providers, threads=threads)
        for tid, recon in iter_reconstructions(ds, decoder, ids):
            per_clip[tid] = float(per_clip_correlation(recon, ds.video(tid), mask)[0])
        source = f"model {model_path}"
    mean = mean_over_clips(list(per_clip.values()))
    return EvalResult(str(ds.root), tier, source, per_clip, mean, mask, mask_source)


def write_json(result: EvalResult, path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
