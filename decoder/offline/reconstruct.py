"""``cortexcast reconstruct``: stream recorded trials through the live decoding path.

Each trial's responses go through :meth:`PixelDecoder.push` one frame at a
time, exactly as the live decoder feeds it, so frame t of the output is made
from responses up to frame ``t + lag`` and never later. The decoder's window
starts as zeros for every trial, and after the trial's last frame ``lag`` zero
rows are pushed to flush out the reconstructions of the trial's last ``lag``
frames (the same padding the model was trained with). A model with a
``<stem>.norm.npz`` sees the dataset's responses re-standardised with the
dataset's own statistics onto its training scale.
Output: ``out_dir/<trial>.npy``, float32 ``(T, 36, 64)``, T = the trial's length.
No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.live.model_card import ModelError
from cortexcast.decoder.offline.streaming import decoder_for_dataset, stream_trial
from cortexcast.decoder.live.pixel_decoder import DEFAULT_PROVIDERS, PixelDecoder


def reconstruct_trial(decoder: PixelDecoder, responses: np.ndarray,
                      behavior: np.ndarray | None = None) -> np.ndarray:
    """(T, N) responses (and (T, 4) behaviour) -> (T, H, W) float32 reconstructions of
    stimulus frames 0..T-1, through the live path (:func:`cortexcast.decoder.offline.streaming.stream_trial`)."""
    if not getattr(decoder, "has_behavior", False):
        behavior = None
    return stream_trial(decoder, responses, behavior)


def check_neurons(ds: SensoriumDataset, decoder: PixelDecoder) -> None:
    if ds.n_neurons != decoder.neurons:
        raise ModelError(
            f"model {decoder.model_path} expects {decoder.neurons} neurons but the dataset "
            f"{ds.root} has {ds.n_neurons}; use a model trained on this dataset"
        )


def tier_ids(ds: SensoriumDataset, tier: str) -> list[int]:
    """Trial ids of ``tier``; DatasetError if the tier has no trials (e.g. a typo)."""
    ids = ds.trial_ids(tier)
    if not ids:
        raise DatasetError(f"{ds.root} has no trials in tier {tier!r} "
                           f"(tiers: {', '.join(ds.tiers())})")
    return ids


def missing_responses_message(ds: SensoriumDataset, tier: str) -> str | None:
    """Why ``tier`` cannot be decoded (responses withheld), or None if it can."""
    if not ds.has_responses(tier):
        return (f"tier {tier!r} of {ds.root} has no responses (withheld, as in the "
                "competition's test tiers)")
    return None


def iter_reconstructions(ds: SensoriumDataset, decoder: PixelDecoder, ids: Sequence[int],
                         transform: Callable[[np.ndarray], np.ndarray] | None = None,
                         ) -> Iterator[tuple[int, np.ndarray]]:
    """(trial id, (T, H, W) reconstruction) for each trial, one trial in memory at a time.

    ``transform`` maps each trial's (T, N) responses before decoding (e.g. the report's
    neuron dropping). Models that take behaviour get the trial's behaviour rows.
    """
    check_neurons(ds, decoder)
    for tid in ids:
        resp = ds.responses(tid)
        if transform is not None:
            resp = transform(resp)
        beh = ds.behavior_rows(tid) if getattr(decoder, "has_behavior", False) else None
        yield tid, reconstruct_trial(decoder, resp, beh)


@dataclass
class ReconstructResult:
    files: list[Path] = field(default_factory=list)
    skipped: str | None = None
    """Why nothing was written (tier without responses), else None."""
    nan_values: int = 0
    """Response values that were NaN/inf and were fed as 0."""


def reconstruct(data_dir: str | Path, model_path: str | Path, tier: str, out_dir: str | Path,
                *, providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int = 1,
                progress: bool = False) -> ReconstructResult:
    """Write ``out_dir/<trial>.npy`` for every trial of ``tier``."""
    ds = SensoriumDataset(data_dir)
    decoder = decoder_for_dataset(model_path, ds, providers=providers, threads=threads)
    ids = tier_ids(ds, tier)
    why = missing_responses_message(ds, tier)
    if why is not None:
        return ReconstructResult(skipped=f"{why}; nothing to reconstruct, skipped")
    check_neurons(ds, decoder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ReconstructResult()
    items = iter_reconstructions(ds, decoder, ids)
    if progress:
        try:
            from tqdm import tqdm

            items = tqdm(items, total=len(ids), unit="trial", desc="reconstruct")
        except ImportError:  # tqdm is a training extra; the command works without it
            pass
    for tid, frames in items:
        path = out / f"{tid}.npy"
        np.save(path, frames)
        result.files.append(path)
    result.nan_values = decoder.nan_count
    return result
