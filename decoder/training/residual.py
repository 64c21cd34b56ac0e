"""The live decoder graph: gain-corrected front end, ridge branch, nonlinear members, eye shift.

One graph, ``activity (1, W, N)`` [+ ``behavior (1, W, 4)``] -> ``frame (1, H, W)``:

1. **gain** (fixed): ``x' = x * exp(-(pupil_z, running_z) @ G)`` per neuron and row;
2. **front end** (fixed): z-score, project onto K principal axes: ``f = z @ V`` per row (the
   ``Linear(N -> K)`` that dominates the live cost);
3. **linear branch** (fixed): ridge from the W x K window to the top P principal components
   of the frames, *in retinal coordinates* (targets shifted by the eye position);
4. **nonlinear members** (learned, output layers start at zero): a per-frame gain on the
   ridge coefficients from behaviour and the leading PCs, plus a free residual (per-row
   ``Linear(K -> k)`` GELU, ``Linear(W x (k + 4) -> D)`` GELU, ``Linear(D -> P)``); their
   mean is added to the ridge coefficients;
5. frame = mean frame + coefficients @ basis, then shifted back from retinal to screen
   coordinates by ``c x pupil-centre z`` pixels (bilinear GridSample, border padding).

With the members at zero the graph is exactly the ridge branch, the state every member
starts from; training keeps a member's best validation state, so the ensemble starts from,
and is selected against, the ridge solution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cortexcast.decoder.training.features import FrontEnd


@dataclass(frozen=True)
class ResidualShape:
    neurons: int
    window: int
    lag: int
    components: int
    """K: principal components of the front end."""
    pixels: int
    """P: principal components of the frames the output is made of."""
    height: int = 36
    width: int = 64
    row_features: int = 16
    """k: features per window row inside a member."""
    hidden: int = 64
    """D: width of a member's temporal mixing layer."""
    dropout: float = 0.5
    members: int = 1
    behavior: bool = True
    """Whether the graph takes the ``behavior`` input."""
    eye_shift_px: float = 0.0
    """c: the retinal image is the screen seen shifted by c x pupil-centre z (pixels)."""
    gain: bool = False
    """Whether the front end divides out a behavioural gain per neuron (kept only where it
    helps; the graph is the same either way, with zero gains)."""

    def describe(self) -> str:
        beh = (("behavioural gain divided out per neuron, " if self.gain else "")
               + f"eye shift {self.eye_shift_px:g} px per z, " if self.behavior else "")
        return (f"{beh}z-score -> PCA({self.neurons}->{self.components}) per frame -> ridge "
                f"on the {self.window}-frame window to {self.pixels} frame PCs + "
                f"{self.members} nonlinear member(s) [Linear({self.components}->"
                f"{self.row_features}) GELU per frame, Linear({self.window}x"
                f"{self.row_features + (4 if self.behavior else 0)}->{self.hidden}) GELU, "
                f"Linear->{self.pixels}] averaged in the graph")

    def to_dict(self) -> dict:
        return asdict(self)


class Member(nn.Module):
    """A nonlinear correction in frame-PC space from standardised features and behaviour z:
    a per-frame gain on the ridge coefficients, ``lin x (exp(g) - 1)`` with g from the
    behaviour and the leading PCs of the window (the state the front end cannot see, e.g.
    shared fluctuations), plus a free residual; both start at zero."""

    GAIN_PCS = 8

    def __init__(self, s: ResidualShape) -> None:
        super().__init__()
        nb = 4 if s.behavior else 0
        self.gain = nn.Sequential(nn.Linear(s.window * (nb + self.GAIN_PCS), 16), nn.Tanh(),
                                  nn.Linear(16, 1))
        self.row = nn.Linear(s.components, s.row_features)
        self.mix = nn.Sequential(nn.Dropout(s.dropout),
                                 nn.Linear(s.window * (s.row_features + nb), s.hidden),
                                 nn.GELU(), nn.Dropout(s.dropout))
        self.out = nn.Linear(s.hidden, s.pixels)
        for layer in (self.out, self.gain[2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.in_dropout = nn.Dropout(s.dropout / 2)

    def forward(self, fz: torch.Tensor, bz: torch.Tensor | None,
                lin: torch.Tensor) -> torch.Tensor:
        g_in = fz[..., : self.GAIN_PCS]
        if bz is not None:
            g_in = torch.cat([g_in, bz], -1)
        g = torch.clamp(self.gain(g_in.flatten(1)), -1.0, 1.0)
        h = F.gelu(self.row(self.in_dropout(fz)))
        if bz is not None:
            h = torch.cat([h, bz], -1)
        return lin * (torch.exp(g) - 1.0) + self.out(self.mix(h.flatten(1)))


class ResidualDecoder(nn.Module):
    """(B, W, N) raw activity [, (B, W, 4) raw behaviour] -> (B, H, W) frames, 0..255."""

    def __init__(self, s: ResidualShape, front: FrontEnd, *, feat_mean: np.ndarray,
                 feat_std: np.ndarray, lin_weight: np.ndarray, lin_bias: np.ndarray,
                 pix_mean: np.ndarray, pix_basis: np.ndarray) -> None:
        super().__init__()
        self.s = s
        f32 = torch.float32

        def buf(name: str, value) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=f32))

        buf("front", front.axes / front.resp_std[:, None])            # (N, K)
        buf("c0", front.c0)                                           # (K,)
        buf("gain", front.gain)                                       # (2, N)
        buf("beh_mean", front.beh_mean)
        buf("beh_inv", 1.0 / front.beh_std)
        buf("feat_mean", feat_mean)
        buf("feat_inv", 1.0 / np.maximum(feat_std, 1e-6))
        buf("lin_weight", lin_weight)                                 # (W*K, P)
        buf("lin_bias", lin_bias)                                     # (P,)
        buf("pix_mean", pix_mean)                                     # (H*W,)
        buf("pix_basis_t", np.ascontiguousarray(np.asarray(pix_basis).T))  # (P, H*W)
        ys = torch.linspace(-1 + 1 / s.height, 1 - 1 / s.height, s.height)
        xs = torch.linspace(-1 + 1 / s.width, 1 - 1 / s.width, s.width)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("base_grid", torch.stack([gx, gy], -1)[None], persistent=False)
        self.register_buffer("px_to_grid", torch.tensor([2.0 / s.width, 2.0 / s.height]),
                             persistent=False)
        self.members = nn.ModuleList(Member(s) for _ in range(s.members))

    # ------------------------------------------------------------- pieces
    def behavior_z(self, b: torch.Tensor | None) -> torch.Tensor | None:
        if b is None or not self.s.behavior:
            return None
        return torch.clamp((b - self.beh_mean) * self.beh_inv, -5.0, 5.0)

    def features(self, x: torch.Tensor, bz: torch.Tensor | None) -> torch.Tensor:
        """(B, W, N) raw activity -> (B, W, K) front-end features ``f``."""
        if bz is not None:
            x = x * torch.exp(-(bz[..., :2] @ self.gain))
        return x @ self.front - self.c0

    def linear(self, f: torch.Tensor) -> torch.Tensor:
        """(B, W, K) -> (B, P) ridge coefficients (retinal coordinates)."""
        return f.flatten(1) @ self.lin_weight + self.lin_bias

    def residual(self, f: torch.Tensor, bz: torch.Tensor | None, lin: torch.Tensor,
                 members: list[int] | None = None) -> torch.Tensor:
        """Mean of the chosen members' (B, P) corrections to the ridge coefficients ``lin``."""
        fz = (f - self.feat_mean) * self.feat_inv
        chosen = range(len(self.members)) if members is None else members
        outs = [self.members[i](fz, bz, lin) for i in chosen]
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)

    def to_frames(self, coef: torch.Tensor, bz: torch.Tensor | None) -> torch.Tensor:
        """(B, P) retinal coefficients -> (B, H, W) screen frames, 0..255."""
        s = self.s
        pix = (coef @ self.pix_basis_t + self.pix_mean).view(-1, s.height, s.width)
        if bz is None or s.eye_shift_px == 0:
            return pix
        eye = bz[:, s.window - 1 - s.lag, 2:4]                       # (B, 2)
        grid = self.base_grid - (s.eye_shift_px * eye * self.px_to_grid)[:, None, None, :]
        return F.grid_sample(pix[:, None], grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[:, 0]

    def forward(self, activity: torch.Tensor, behavior: torch.Tensor | None = None
                ) -> torch.Tensor:
        bz = self.behavior_z(behavior)
        f = self.features(activity, bz)
        lin = self.linear(f)
        return self.to_frames(lin + self.residual(f, bz, lin), bz)


def export_residual(model: ResidualDecoder, path, opset: int = 17) -> None:
    """Fixed batch 1: ``activity`` (1, W, N) [+ ``behavior`` (1, W, 4)] -> ``frame``."""
    s = model.s
    model = model.cpu().eval()
    x = torch.zeros(1, s.window, s.neurons)
    if s.behavior:
        args, names = (x, torch.zeros(1, s.window, 4)), ["activity", "behavior"]
    else:
        args, names = (x,), ["activity"]
    torch.onnx.export(model, args, str(path), input_names=names, output_names=["frame"],
                      opset_version=opset, dynamo=False)
