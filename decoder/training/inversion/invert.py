"""Reconstruct a clip by gradient descent on its pixels (Bauer, Margrie & Clopath, eLife 2025).

For each encoding model: start from a grey movie, predict the responses, take the gradient
of the Poisson loss against the recorded responses with respect to the pixels, smooth it
with a Gaussian (space and time), zero it outside the mask, take an Adam step, clip the
pixels to 0..255. The reconstructions of the model instances are averaged. Pixels outside
the mask never move from grey.

``model`` is any ``torch.nn.Module`` called as ``model(video (1, T, H, W) 0..255,
behavior (1, T, 4), frames, neurons) -> (1, F, N')`` rates for the chosen frames and
neurons (index tensors; None = all) (see
:class:`cortexcast.decoder.training.inversion.encoder.VideoEncoder`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cortexcast.decoder.training.inversion.encoder import poisson_loss


@dataclass(frozen=True)
class InversionSettings:
    iterations: int = 50
    lr: float = 12.0
    """Adam step in pixel units (0..255 scale) at the start; cosine decay to 10 %."""
    sigma_px: float = 1.0
    """Gaussian smoothing of the pixel gradient in space (px)."""
    sigma_frames: float = 1.0
    """... and in time (frames)."""
    frames_per_step: int = 96
    """Responses (frames) in the loss per step, drawn at random; 0 = every frame."""
    neurons_per_step: int = 2048
    """Neurons in the loss per step, drawn at random; 0 = all. Drawing subsets makes each
    step cheaper on a CPU; every frame and neuron is still used over the iterations."""
    grey: float | None = None
    """Start value; None = the model's mean video luminance."""

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be > 0, got {self.lr}")
        if min(self.sigma_px, self.sigma_frames, self.frames_per_step,
               self.neurons_per_step) < 0:
            raise ValueError("sigma_px, sigma_frames, frames_per_step and neurons_per_step "
                             "must be >= 0")


def _kernel(sigma: float, device: torch.device) -> torch.Tensor | None:
    if sigma <= 0:
        return None
    half = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-half, half + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth(x: torch.Tensor, sigma_frames: float, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of a (T, H, W) tensor ('reflect'-free: zero padding)."""
    out = x[None, None]
    for axis, sigma in ((2, sigma_frames), (3, sigma_px), (4, sigma_px)):
        k = _kernel(sigma, x.device)
        if k is None:
            continue
        shape = [1, 1, 1, 1, 1]
        shape[axis] = len(k)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = len(k) // 2
        out = F.conv3d(F.pad(out, pad), k.reshape(shape))
    return out[0, 0]


def invert_one(model: torch.nn.Module, targets: torch.Tensor, behavior: torch.Tensor,
               mask: torch.Tensor, s: InversionSettings, grey: float,
               generator: torch.Generator | None = None,
               step: Callable[[], None] | None = None) -> torch.Tensor:
    """One model's reconstruction: (T, H, W) float32 on the 0..255 scale.

    ``targets`` (T, N) non-negative, ``behavior`` (T, 4) raw, ``mask`` (H, W) bool.
    """
    t_len, n_all = targets.shape
    h, w = mask.shape
    video = torch.full((t_len, h, w), float(grey), device=targets.device, requires_grad=True)
    opt = torch.optim.Adam([video], lr=s.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / max(1, s.iterations))))
    keep = mask.to(torch.float32)[None]
    for _ in range(s.iterations):
        if s.frames_per_step and s.frames_per_step < t_len:
            frames = torch.randperm(t_len, generator=generator)[: s.frames_per_step]
            frames = frames.sort().values.to(targets.device)
        else:
            frames = torch.arange(t_len, device=targets.device)
        neurons = None
        if s.neurons_per_step and s.neurons_per_step < n_all:
            neurons = torch.randperm(n_all, generator=generator)[: s.neurons_per_step]
            neurons = neurons.to(targets.device)
        pred = model(video[None], behavior[None], frames, neurons)[0]
        target = targets[frames] if neurons is None else targets[frames][:, neurons]
        loss = poisson_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            video.grad = smooth(video.grad, s.sigma_frames, s.sigma_px) * keep
        opt.step()
        sched.step()
        with torch.no_grad():
            video.clamp_(0.0, 255.0)
        if step is not None:
            step()
    return video.detach()


def invert_clip(models: Sequence[torch.nn.Module], targets: np.ndarray, behavior: np.ndarray,
                mask: np.ndarray, s: InversionSettings, grey: float,
                device: torch.device | str = "cpu", seed: int = 0,
                step: Callable[[], None] | None = None) -> np.ndarray:
    """The average of every model's reconstruction, (T, H, W) float32, 0..255."""
    dev = torch.device(device)
    t = torch.as_tensor(np.ascontiguousarray(targets, np.float32), device=dev)
    b = torch.as_tensor(np.ascontiguousarray(behavior, np.float32), device=dev)
    m = torch.as_tensor(np.asarray(mask, bool), device=dev)
    gen = torch.Generator().manual_seed(seed)
    total = None
    for model in models:
        r = invert_one(model, t, b, m, s, grey, gen, step)
        total = r if total is None else total + r
    assert total is not None
    return (total / len(models)).clamp(0, 255).cpu().numpy().astype(np.float32)
