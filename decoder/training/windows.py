"""Training data as causal windows, streamed from the dataset a few trials at a time.

The window for stimulus frame t holds responses ``t + lag - W + 1 .. t + lag``.
Each trial's responses are padded with ``W - 1 - lag`` zero rows before and
``lag`` zero rows after, so the window of frame t is rows ``t .. t + W - 1`` of
the padded array. The zeros match what :class:`decoder.pixel_decoder.PixelDecoder`
sees at the start of a stream and what ``reconstruct`` feeds after a trial ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from decoder.dataset import SensoriumDataset


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
    s1, s2, count = np.zeros(n), np.zeros(n), np.zeros(n)
    v1 = v2 = vcount = 0.0
    for tid in train_ids:
        r = ds.responses(tid).astype(np.float64)
        ok = np.isfinite(r)
        r = np.where(ok, r, 0.0)
        s1 += r.sum(0)
        s2 += (r * r).sum(0)
        count += ok.sum(0)
        v = ds.video(tid).astype(np.float64)
        v1 += float(v.sum())
        v2 += float((v * v).sum())
        vcount += v.size
    count = np.maximum(count, 1)
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
    vmean = v1 / max(vcount, 1)
    vstd = float(np.sqrt(max(v2 / max(vcount, 1) - vmean**2, 0.0)))
    return Normalisation(mean.astype(np.float32), std.astype(np.float32), vmean, vstd,
                         "computed from training trials")


@dataclass
class Chunk:
    """A few trials on the device: padded responses and targets, concatenated."""

    padded: torch.Tensor     # (sum(T + W - 1), N)
    videos: torch.Tensor     # (sum(T), H, W), 0..255
    starts: list[tuple[int, int, int]]  # per trial: (padded offset, video offset, T)


def load_chunk(ds: SensoriumDataset, ids: Sequence[int], window: int, lag: int,
               device: torch.device) -> Chunk:
    pads, vids, starts = [], [], []
    p_off = v_off = 0
    for tid in ids:
        resp = ds.responses(tid)
        vid = ds.video(tid)
        pads.append(pad_responses(resp, window, lag))
        vids.append(vid)
        starts.append((p_off, v_off, len(vid)))
        p_off += len(pads[-1])
        v_off += len(vid)
    return Chunk(torch.from_numpy(np.concatenate(pads)).to(device),
                 torch.from_numpy(np.concatenate(vids)).to(device), starts)


def segment_batches(chunk: Chunk, segment: int, segments: int, window: int,
                    rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Random (segments, segment + W - 1, N) padded slices and their (segments, segment, H, W)
    targets, about one pass over the chunk's frames."""
    total = sum(t for _, _, t in chunk.starts)
    steps = max(1, total // (segment * segments))
    lengths = np.array([t for _, _, t in chunk.starts], dtype=np.float64)
    probs = lengths / lengths.sum()
    device = chunk.padded.device
    span = torch.arange(segment + window - 1, device=device)
    tspan = torch.arange(segment, device=device)
    for _ in range(steps):
        which = rng.choice(len(chunk.starts), size=segments, p=probs)
        p_idx, v_idx = [], []
        for i in which:
            p_off, v_off, t = chunk.starts[i]
            s = int(rng.integers(0, t - segment + 1))
            p_idx.append(p_off + s)
            v_idx.append(v_off + s)
        p = torch.as_tensor(p_idx, device=device)[:, None] + span
        v = torch.as_tensor(v_idx, device=device)[:, None] + tspan
        yield chunk.padded[p], chunk.videos[v]
