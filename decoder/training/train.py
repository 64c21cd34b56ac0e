"""``cortexcast train``: fit a pixel decoder on a Sensorium-layout folder, export ONNX.

``--method ridge`` is :func:`cortexcast.decoder.training.ridge.train_ridge`. ``--method decoder`` (the
default) is the live decoder of :mod:`cortexcast.decoder.training.residual`:

1. open the dataset; training trials = tier ``train``; validation = tier ``oracle`` if it has
   responses, else a seeded 10 % of the training trials; refuse training trials whose
   responses are all NaN; evaluation mask = the one ``evaluate`` would choose;
2. the fixed front end (:mod:`cortexcast.decoder.training.features`): each neuron's behavioural gain
   (pupil, running) divided out, z-score with the dataset's statistics, top K principal
   axes; every padded training and validation row goes through it once (the cache);
3. the ridge branch in closed form on the cached windows, to the top P principal components
   of the frames in *retinal* coordinates; the eye-shift gain (pixels per pupil-centre z)
   and alpha are chosen together on validation (gain 0 = the plain screen-coordinate ridge);
4. ``ensemble`` nonlinear members trained at once by AdamW on random frames, each starting
   at zero (= the ridge branch) and early-stopped on its own validation score, until the
   time budget runs out;
5. export one ONNX graph (members averaged inside), check onnxruntime against torch on
   held-out windows, write the card, the mask and ``<stem>.norm.npz``.

Several ``--data`` folders: :mod:`cortexcast.decoder.training.multi_mouse`.
Only this module and ``cortexcast.decoder.training`` import torch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.live.model_card import ModelCard

log = logging.getLogger("cortexcast.decoder.training.train")

ONNX_TOLERANCE = 1e-3 * 255
"""Max |onnxruntime - torch| accepted, on the 0..255 scale."""
DEFAULT_TIME_BUDGET_S = 1200.0
DEFAULT_ENSEMBLE = 4
DEFAULT_ALPHAS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
"""The ridge grid of ``--method ridge``."""


@dataclass(frozen=True)
class TrainSettings:
    data: str
    """Dataset folder (Sensorium 2023 layout)."""
    out: str
    """Path of the ONNX file; the card (.json), mask (.mask.npy) and .norm.npz go beside it."""
    window: int = 10
    """W: imaging frames per reconstruction (1..10)."""
    lag: int = 5
    """L: frames of responses after the reconstructed frame (0..W-1); 5 = 167 ms at 30 Hz."""
    epochs: int = 200
    """Most passes over the training frames (early stopping and the budget usually end it)."""
    time_budget_s: float | None = DEFAULT_TIME_BUDGET_S
    """Wall-clock limit (s) from the start of ``train`` (setup included) to the end of the
    last training step; the last validation and the export come after. None = no limit."""
    seed: int = 0
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ..."""
    lr: float = 3e-4
    weight_decay: float = 1e-2
    batch: int = 128
    """Frames per member per step."""
    chunk_trials: int = 16
    """Kept for compatibility: trials are read one at a time (RAM ~ frames x K floats)."""
    patience: int = 10
    corr_weight: float = 1.0
    readout: int = 256
    """K: principal components per imaging frame (the front end, and the ridge branch)."""
    pixels: int = 256
    """P: principal components of the frames the decoder outputs (the rest is never decoded)."""
    row_features: int = 16
    hidden: int = 64
    dropout: float = 0.5
    ensemble: int = DEFAULT_ENSEMBLE
    """Members averaged inside the one ONNX graph."""
    behavior: bool = True
    """Use pupil, running and pupil centre (when the dataset has them)."""
    gain: bool = True
    """Divide out each neuron's behavioural (pupil, running) gain (needs behaviour)."""
    eye_shifts: tuple[float, ...] = (0.0, 1.5, -1.5, 3.0, -3.0, 4.5, -4.5)
    """Eye-shift gains (pixels per pupil-centre z) tried for the retinal ridge branch."""
    feature_noise: float = 0.3
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    pca_frames: int = 8000
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
        if min(self.epochs, self.batch, self.chunk_trials, self.readout, self.ensemble,
               self.row_features, self.hidden, self.pixels, self.patience) < 1:
            raise ValueError("epochs, batch, chunk_trials, readout, ensemble, patience and the "
                             "layer sizes must be >= 1")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time budget must be > 0 s, got {self.time_budget_s}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
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
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available")
    return dev


def _split(ds: SensoriumDataset, s: Any) -> tuple[list[int], list[int], str]:
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


def train(s: TrainSettings) -> TrainResult:
    """Fit, export and check one residual decoder; returns where it went and its card."""
    from cortexcast.decoder.training.mouse import prepare_mouse, fit_and_export

    t0 = time.monotonic()
    torch.manual_seed(s.seed)
    device = pick_device(s.device)
    mouse = prepare_mouse(s.data, s, device)
    return fit_and_export(mouse, s, device, t0)
