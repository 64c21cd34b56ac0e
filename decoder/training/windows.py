"""Training data as causal windows, and the normalisation statistics training uses.

The window for stimulus frame t holds responses ``t + lag - W + 1 .. t + lag``.
Each trial's responses are padded with ``W - 1 - lag`` zero rows before and
``lag`` zero rows after, so the window of frame t is rows ``t .. t + W - 1`` of
the padded array. The zeros match what :class:`cortexcast.decoder.live.pixel_decoder.PixelDecoder`
sees at the start of a stream and what ``reconstruct`` feeds after a trial ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cortexcast.decoder.offline.dataset import SensoriumDataset

MIN_STD = 1e-6
"""A response std at or below this (or not finite) counts as 1 when z-scoring."""


def pad_responses(responses: np.ndarray, window: int, lag: int) -> np.ndarray:
    """(T, N) -> (T + W - 1, N) float32, NaN -> 0, zero rows around the trial."""
    t, n = responses.shape
    out = np.zeros((t + window - 1, n), dtype=np.float32)
    before = window - 1 - lag
    out[before: before + t] = np.nan_to_num(responses, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def windows_of(padded: np.ndarray, window: int, frames: Sequence[int]) -> np.ndarray:
    """(len(frames), W, N) windows of chosen frames from one padded trial."""
    idx = np.asarray(frames)[:, None] + np.arange(window)[None]
    return padded[idx]


@dataclass(frozen=True)
class Normalisation:
    resp_mean: np.ndarray
    resp_std: np.ndarray
    video_mean: float
    video_std: float
    source: str
    """'dataset statistics' or 'computed from training trials'."""

    def safe_std(self) -> np.ndarray:
        """(N,) float64 response std with non-finite or ~0 values replaced by 1 (z-scoring)."""
        std = np.asarray(self.resp_std, np.float64)
        return np.where(np.isfinite(std) & (std > MIN_STD), std, 1.0)


def normalisation(ds: SensoriumDataset, train_ids: Sequence[int]) -> Normalisation:
    """Per-neuron response mean/std and scalar video mean/std.

    From ``meta/statistics`` when present (and of the right size), else one
    streaming pass over the training trials.
    """
    rs, vs = ds.statistics("responses"), ds.statistics("videos")
    n = ds.n_neurons
    if ("mean" in rs and "std" in rs and np.size(rs["mean"]) == n and np.size(rs["std"]) == n
            and "mean" in vs and "std" in vs):
        return Normalisation(np.asarray(rs["mean"], np.float32).ravel(),
                             np.asarray(rs["std"], np.float32).ravel(),
                             float(np.mean(vs["mean"])), float(np.mean(vs["std"])),
                             "dataset statistics")
    mean, std, _ = ds.response_moments(train_ids)
    v1 = v2 = vcount = 0.0
    for tid in train_ids:
        v = ds.video(tid).astype(np.float64)
        v1 += float(v.sum())
        v2 += float((v * v).sum())
        vcount += v.size
    vmean = v1 / max(vcount, 1)
    vstd = float(np.sqrt(max(v2 / max(vcount, 1) - vmean**2, 0.0)))
    return Normalisation(mean.astype(np.float32), std.astype(np.float32), vmean, vstd,
                         "computed from training trials")
