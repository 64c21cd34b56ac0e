"""The encoding model the inversion method inverts: movie (+ behaviour) -> every neuron's rate.

Offline only (torch). Architecture, kept small enough to train in minutes on a CPU:

1. a causal temporal filter bank: ``temporal`` filters of ``frames`` video frames each,
   applied to every pixel (frame t sees frames t - frames + 1 .. t);
2. a 2-D conv core: three layers of ``channels`` maps at half resolution (18 x 32);
3. a per-neuron point readout: each neuron reads the feature vector at one learned position
   of the half-resolution map (bilinear), weighs it with its own feature weights, adds a
   behaviour term, and goes through ELU + 1 (a positive rate), times a behaviour gain.

Positions start at each neuron's receptive-field centre as estimated from the data
(:func:`estimate_positions`: where the squared correlation of its response with local
luminance and contrast, at a few lags, peaks), because a point readout trained from random
positions finds far-away fields slowly. The model takes RAW inputs (video 0..255, behaviour
in the dataset's units) and holds their normalisation as buffers, so the inversion can
optimise raw pixels directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cortexcast.core.behavior import N_BEHAVIOR



@dataclass(frozen=True)
class EncoderShape:
    """What fixes the parameter shapes (stored with the weights)."""

    neurons: int
    height: int = 36
    width: int = 64
    frames: int = 20
    """Video frames one prediction sees (the temporal kernel, 20 = 0.67 s at 30 Hz)."""
    temporal: int = 4
    channels: int = 16

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class VideoEncoder(nn.Module):
    """``forward(video (B, T, H, W) 0..255, behavior (B, T, 4) raw, frames, neurons)``
    -> rates ``(B, F, N')``.

    ``frames`` (a LongTensor of frame indices, or None for all T) picks the frames whose
    responses are predicted; the core only runs on those (the temporal filter runs on all).
    ``neurons`` (indices or None for all) picks the neurons read out.
    """

    def __init__(self, shape: EncoderShape) -> None:
        super().__init__()
        self.shape = shape
        k, c, n = shape.temporal, shape.channels, shape.neurons
        self.temporal = nn.Conv3d(1, k, (shape.frames, 1, 1), bias=False)
        self.conv1 = nn.Conv2d(k, c, 5, padding=2, stride=2)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.conv3 = nn.Conv2d(c, c, 3, padding=1)
        self.position = nn.Parameter(torch.zeros(n, 2))
        """(x, y) in grid_sample coordinates, -1..1."""
        self.features = nn.Parameter(torch.randn(n, c) / np.sqrt(c))
        self.bias = nn.Parameter(torch.zeros(n))
        self.behavior_add = nn.Parameter(torch.zeros(n, N_BEHAVIOR))
        self.behavior_gain = nn.Parameter(torch.zeros(n, N_BEHAVIOR))
        for name, size in (("video_mean", 1), ("video_std", 1), ("behavior_mean", N_BEHAVIOR),
                           ("behavior_std", N_BEHAVIOR)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name else torch.ones(size))

    def set_normalisation(self, video_mean: float, video_std: float,
                          behavior_mean: Sequence[float], behavior_std: Sequence[float]) -> None:
        with torch.no_grad():
            self.video_mean.fill_(float(video_mean))
            self.video_std.fill_(max(float(video_std), 1e-3))
            self.behavior_mean.copy_(torch.as_tensor(np.asarray(behavior_mean, np.float32)))
            self.behavior_std.copy_(torch.as_tensor(
                np.maximum(np.asarray(behavior_std, np.float32), 1e-3)))

    def set_positions(self, xy: np.ndarray) -> None:
        with torch.no_grad():
            self.position.copy_(torch.as_tensor(np.clip(xy, -1, 1), dtype=torch.float32))

    def core(self, video: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor:
        """(B, T, H, W) raw -> (B, F, C, h, w) features of the chosen frames."""
        b, t, h, w = video.shape
        d = self.shape.frames
        x = (video - self.video_mean) / self.video_std
        # zero (= mean grey) history before the first frame: causal, like a grey screen
        x = F.pad(x, (0, 0, 0, 0, d - 1, 0))
        if frames is None:
            frames = torch.arange(t, device=video.device)
        idx = frames[:, None] + torch.arange(d, device=video.device)[None]   # (F, D)
        # the temporal filter bank as one matmul over each chosen frame's window
        x = torch.einsum("bfdp,kd->bfkp", x[:, idx].reshape(b, len(frames), d, h * w),
                         self.temporal.weight.reshape(self.shape.temporal, d))
        f = x.shape[1]
        x = x.reshape(b * f, -1, h, w)
        x = F.elu(self.conv1(x))
        x = F.elu(self.conv2(x))
        x = F.elu(self.conv3(x))
        return x.reshape(b, f, *x.shape[1:])

    def forward(self, video: torch.Tensor, behavior: torch.Tensor,
                frames: torch.Tensor | None = None,
                neurons: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.core(video, frames)                    # (B, F, C, h, w)
        b, f = feats.shape[:2]
        pos, weights, bias = self.position, self.features, self.bias
        add, gain_w = self.behavior_add, self.behavior_gain
        if neurons is not None:
            pos, weights, bias = pos[neurons], weights[neurons], bias[neurons]
            add, gain_w = add[neurons], gain_w[neurons]
        grid = pos.clamp(-1, 1)[None, None].expand(b * f, 1, -1, 2)
        sampled = F.grid_sample(feats.reshape(b * f, *feats.shape[2:]), grid,
                                mode="bilinear", padding_mode="border", align_corners=False)
        drive = (sampled[:, :, 0, :] * weights.T[None]).sum(1)         # (B*F, N')
        drive = drive.reshape(b, f, -1)
        beh = behavior if frames is None else behavior[:, frames]
        z = (beh - self.behavior_mean) / self.behavior_std              # (B, F, 4)
        drive = drive + bias + z @ add.T
        gain = torch.exp((z @ gain_w.T).clamp(-3, 3))
        return (F.elu(drive) + 1.0) * gain


def poisson_loss(rate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Poisson negative log-likelihood (up to a constant) of ``target`` under ``rate``."""
    return (rate - target * torch.log(rate + 1e-6)).mean()


def estimate_positions(responses: Iterable[np.ndarray], videos: Iterable[np.ndarray],
                       lags: Sequence[int] = (2, 4, 6, 9), bin_px: int = 4,
                       max_frames: int = 4000) -> np.ndarray:
    """Each neuron's receptive-field centre, (N, 2) in grid_sample (x, y) coordinates.

    Correlates each neuron's response at frame t + lag with the binned luminance and
    the binned local contrast (|pixel - frame mean|) at frame t; the squared
    correlations, summed over lags and both features and lightly smoothed, peak at
    the field. Works for phase-invariant cells too (through contrast). A neuron
    without signal lands near the centre of mass of its map (close to the middle).
    """
    from scipy.ndimage import gaussian_filter

    maps = None
    used = 0
    hb = wb = 0
    for resp, vid in zip(responses, videos):
        v = np.nan_to_num(np.asarray(vid, np.float64))
        t, h, w = v.shape
        hb, wb = h // bin_px, w // bin_px
        v = v[:, : hb * bin_px, : wb * bin_px].reshape(t, hb, bin_px, wb, bin_px)
        lum = v.mean(axis=(2, 4)).reshape(t, -1)
        con = np.abs(v - v.mean(axis=(1, 2, 3, 4), keepdims=True)).mean(axis=(2, 4)).reshape(t, -1)
        r = np.nan_to_num(np.asarray(resp, np.float64))
        for lag in lags:
            n = t - lag
            if n < 2:
                continue
            for feat in (lum, con):
                x = feat[:n] - feat[:n].mean(0)
                x /= x.std(0) + 1e-9
                y = r[lag: lag + n] - r[lag: lag + n].mean(0)
                y /= y.std(0) + 1e-9
                c = (y.T @ x / n) ** 2                     # (N, pixels)
                maps = c if maps is None else maps + c
        used += t
        if used >= max_frames:
            break
    if maps is None:
        raise ValueError("estimate_positions needs at least one clip longer than the lags")
    maps = maps.reshape(-1, hb, wb)
    maps = gaussian_filter(maps, (0, 0.7, 0.7))
    maps = maps - maps.reshape(len(maps), -1).mean(1)[:, None, None]
    maps = np.maximum(maps, 0) ** 2
    total = maps.reshape(len(maps), -1).sum(1)
    yy, xx = np.mgrid[0:hb, 0:wb]
    safe = np.where(total > 0, total, 1.0)
    cy = (maps * yy).reshape(len(maps), -1).sum(1) / safe
    cx = (maps * xx).reshape(len(maps), -1).sum(1) / safe
    cy = np.where(total > 0, cy, (hb - 1) / 2)
    cx = np.where(total > 0, cx, (wb - 1) / 2)
    # bin centres -> pixel coordinates -> grid_sample coordinates (align_corners=False)
    px = (cx + 0.5) * bin_px
    py = (cy + 0.5) * bin_px
    return np.stack([2 * px / (wb * bin_px) - 1, 2 * py / (hb * bin_px) - 1], 1).astype(np.float32)
