"""The window decoder network, its ONNX export, and the onnxruntime/torch check.

Architecture (sizes for N = 7,800, W = 10, defaults K = 48, D = 384, C = 8):

1. normalise each neuron: ``z = (x - mean) / std`` (constants in the graph);
2. a per-frame readout shared over time, ``Linear(N -> K)``: each imaging frame
   becomes K features (this is where almost all parameters and FLOPs are);
3. temporal mixing: the W x K window, flattened, through ``Linear(W*K -> D)``
   and GELU;
4. ``Linear(D -> C x H/2 x W/2)``, two 3x3 convs at half resolution and a
   pixel shuffle (x2) give the frame, scaled back to 0..255 with the video's
   mean/std.

About 2.3 M parameters (9 MB float32) and 6 M multiply-adds per frame at N = 7,800.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17


@dataclass(frozen=True)
class ModelShape:
    neurons: int
    window: int
    height: int = 36
    width: int = 64
    readout: int = 48
    """K: features per imaging frame."""
    hidden: int = 384
    """D: width of the temporal mixing layer."""
    channels: int = 8
    """C: channels of the half-resolution map that is upsampled."""
    dropout: float = 0.2

    def describe(self) -> str:
        return (f"normalise -> shared Linear({self.neurons}->{self.readout}) per frame -> "
                f"Linear({self.window}x{self.readout}->{self.hidden}) GELU -> "
                f"Linear->{self.channels}x{self.height // 2}x{self.width // 2} -> "
                "conv3x3 GELU conv3x3 -> pixel shuffle x2 -> 0..255")


class WindowDecoder(nn.Module):
    """(B, W, N) raw activity -> (B, H, W) frames on the 0..255 scale."""

    def __init__(self, shape: ModelShape, resp_mean: np.ndarray, resp_std: np.ndarray,
                 video_mean: float, video_std: float) -> None:
        super().__init__()
        if shape.height % 2 or shape.width % 2:
            raise ValueError(f"frame size {shape.height}x{shape.width} must be even")
        self.shape = shape
        std = np.where(np.asarray(resp_std) > 1e-6, resp_std, 1.0)
        self.register_buffer("resp_mean", torch.as_tensor(resp_mean, dtype=torch.float32))
        self.register_buffer("resp_scale", torch.as_tensor(1.0 / std, dtype=torch.float32))
        self.video_mean = float(video_mean)
        self.video_std = float(video_std) if video_std > 1e-6 else 1.0
        s = shape
        self.neuron_dropout = nn.Dropout(s.dropout)
        self.readout = nn.Linear(s.neurons, s.readout)
        self.temporal = nn.Sequential(nn.Flatten(1), nn.Linear(s.window * s.readout, s.hidden),
                                      nn.GELU(), nn.Dropout(s.dropout))
        self.project = nn.Linear(s.hidden, s.channels * (s.height // 2) * (s.width // 2))
        # Convs at half resolution then PixelShuffle: the same receptive field as
        # upsample-then-conv at a quarter of the cost (full-size convs with few
        # channels are slow on CPUs, in training and in onnxruntime alike).
        self.refine = nn.Sequential(
            nn.Conv2d(s.channels, s.channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(s.channels, 4, 3, padding=1), nn.PixelShuffle(2),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(..., N) raw activity -> (..., K) per-frame features."""
        z = (x - self.resp_mean) * self.resp_scale
        return self.readout(self.neuron_dropout(z))

    def head_normalised(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, W, K) window features -> (B, H, W) frames in video z-units."""
        s = self.shape
        h = self.project(self.temporal(feats))
        h = h.view(-1, s.channels, s.height // 2, s.width // 2)
        return self.refine(h)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_normalised(self.features(x)) * self.video_std + self.video_mean

    def decode_padded(self, padded: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Every window of one padded trial (T + W - 1, N) -> (T, H, W), 0..255.

        Same numbers as calling forward on each window; the readout runs once per frame.
        """
        w = self.shape.window
        feats = self.features(padded)                       # (T + W - 1, K)
        windows = feats.unfold(0, w, 1).permute(0, 2, 1)    # (T, W, K)
        out = [self.head_normalised(windows[i: i + batch]) for i in range(0, len(windows), batch)]
        return torch.cat(out) * self.video_std + self.video_mean


def export_onnx(model: WindowDecoder, path: Path, input_name: str, output_name: str) -> None:
    """Fixed batch 1: input (1, W, N) float32, output (1, H, W) float32."""
    s = model.shape
    model = model.cpu().eval()
    dummy = torch.zeros(1, s.window, s.neurons, dtype=torch.float32)
    torch.onnx.export(model, (dummy,), str(path), input_names=[input_name],
                      output_names=[output_name], opset_version=OPSET, dynamo=False)


def onnx_torch_max_diff(model: WindowDecoder, path: Path, windows: np.ndarray,
                        input_name: str, output_name: str) -> float:
    """Max |onnxruntime - torch| over held-out windows (n, W, N), both on the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    model = model.cpu().eval()
    with torch.no_grad():
        ref = model(torch.as_tensor(windows, dtype=torch.float32)).numpy()
    worst = 0.0
    for x, r in zip(windows, ref):
        got = sess.run([output_name], {input_name: np.ascontiguousarray(x[None], np.float32)})[0]
        worst = max(worst, float(np.max(np.abs(got[0] - r))))
    return worst
