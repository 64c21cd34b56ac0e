"""What ``--method ridge`` and ``--method decoder`` share, without torch.

The settings and result of ``cortexcast train``, the train/validation split, the card extras
every trained model gets (the simulator's ``sim.json``, the ROI set's fingerprint, the
activity kind), the export tolerance and the one ridge alpha grid. ``--method ridge`` runs
in an environment without torch, so nothing here (nor in
:mod:`~cortexcast.decoder.training.ridge`) may import it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexcast.core.roi_fingerprint import DATASET_ROI_META, read_dataset_roi_meta
from cortexcast.decoder.live.model_card import ModelCard, save_card, save_mask
from cortexcast.decoder.live.pixel_decoder import save_training_stats
from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset

log = logging.getLogger("cortexcast.decoder.training.train")

ONNX_TOLERANCE = 1e-3 * 255
"""Max |onnxruntime - reference| accepted on held-out windows, on the 0..255 scale."""
DEFAULT_TIME_BUDGET_S = 1200.0
DEFAULT_ENSEMBLE = 4
ALPHAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
"""Relative ridge penalties tried (penalty = alpha x mean eigenvalue of the centred XᵀX), by
``--method ridge`` and by the decoder's ridge branch; the best on validation wins."""


@dataclass(frozen=True)
class ModelSettings:
    """What every ``cortexcast train`` method takes first: data, model path, window and lag."""

    data: str
    """Dataset folder (Sensorium 2023 layout)."""
    out: str
    """Path of the ONNX file; the card (.json), mask (.mask.npy) and .norm.npz go beside it."""
    window: int = 10
    """W: imaging frames per reconstruction (1..10); with ``lag`` None, the longest tried."""
    lag: int | None = None
    """L: frames of responses after the reconstructed frame (0..W-1; 9 = 300 ms at 30 Hz).
    None: window and lag are chosen on validation with lag <= ``max_lag_ms``
    (:mod:`~cortexcast.decoder.training.lag_choice`)."""
    max_lag_ms: float = 300.0
    """Latency budget of the lag choice (ms of responses after the frame)."""
    default_alpha: float | None = 0.03
    """The ridge penalty kept unless another beats it on the held-out clips by more than two
    standard errors of the paired per-clip difference (None: plain arg-max). A few validation
    clips pick alpha too noisily; this is the plain ridge's fixed penalty (issue 12)."""

    train_trials: int | None = None
    """Fit on the first this many training trials only (learning curves); None: all."""

    def __post_init__(self) -> None:
        if self.train_trials is not None and self.train_trials < 1:
            raise ValueError(f"train_trials must be >= 1, got {self.train_trials}")
        if not 1 <= self.window <= 10:
            raise ValueError(f"window must be in 1..10, got {self.window}")
        if self.lag is not None and not 0 <= self.lag <= self.window - 1:
            raise ValueError(f"lag must be in 0..window-1 ({self.window - 1}), got {self.lag}")
        if not (self.max_lag_ms >= 0 and np.isfinite(self.max_lag_ms)):
            raise ValueError(f"max lag must be a finite number of ms >= 0, got {self.max_lag_ms}")
        if self.default_alpha is not None and not self.default_alpha > 0:
            raise ValueError(f"default_alpha must be > 0 or None, got {self.default_alpha}")
        if not str(self.out).endswith(".onnx"):
            raise ValueError(f"the model path must end in .onnx, got {self.out}")


@dataclass(frozen=True)
class TrainSettings(ModelSettings):
    """``cortexcast train --method decoder`` (one or several ``--data`` folders)."""

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
    neuron_weights: bool = True
    """Weigh each z-scored neuron by how well a linear encoding model predicts it from the
    movie (cross-validated on the training trials) before the front end's PCA; the
    unweighted population is used where it clearly wins on the selection split."""
    eye_shifts: tuple[float, ...] = (0.0, 1.5, -1.5, 3.0, -3.0, 4.5, -4.5)
    """Eye-shift gains (pixels per pupil-centre z) tried for the retinal ridge branch."""
    feature_noise: float = 0.3
    """Std of Gaussian noise added to standardised features while training (augmentation)."""
    alphas: tuple[float, ...] = ALPHAS
    pca_frames: int = 20_000
    """Training frames (evenly spread) the front end's PCA is fitted on (see ``RidgeSettings``)."""
    train_tier: str = "train"
    val_tier: str = "oracle"
    core: str | None = None
    """A shared core pretrained on other mice (``<stem>.core.npz`` from several ``--data``):
    calibrate this mouse on it (its window, lag, member shapes and frame basis are used)."""
    core_lr_scale: float = 0.1
    """With ``core``: the core's learning rate is ``lr`` x this (0 = frozen)."""
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    """Copied into the card's ``extra``; a dataset's ``sim.json`` (from ``cortexcast
    simulate``) is copied there as ``simulation`` and its ``meta/rois.json`` (from
    ``cortexcast export``) as ``rois`` without asking."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.epochs, self.batch, self.readout, self.ensemble, self.row_features,
               self.hidden, self.pixels, self.patience) < 1:
            raise ValueError("epochs, batch, readout, ensemble, patience and the layer sizes "
                             "must be >= 1")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time budget must be > 0 s, got {self.time_budget_s}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.core_lr_scale >= 0 and np.isfinite(self.core_lr_scale)):
            raise ValueError(f"core_lr_scale must be a finite number >= 0, got "
                             f"{self.core_lr_scale}")


@dataclass
class TrainResult:
    model_path: Path
    card: ModelCard
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]


def split_trials(ds: SensoriumDataset, train_tier: str, val_tier: str, seed: int,
                 limit: int | None = None) -> tuple[list[int], list[int], str]:
    """(training ids, validation ids, description): the trials of ``train_tier`` with
    responses; validation = ``val_tier``'s trials with responses, else a seeded 10 % of the
    training trials held out (with fewer than 2 training trials: validation on them).
    ``limit``: keep only the first ``limit`` training trials (after the hold-out)."""
    train, val, desc = _split_trials(ds, train_tier, val_tier, seed)
    if limit is not None and limit < len(train):
        log.info("training on the first %d of %d training trials", limit, len(train))
        train = train[:limit]
    return train, val, desc


def _split_trials(ds: SensoriumDataset, train_tier: str, val_tier: str,
                  seed: int) -> tuple[list[int], list[int], str]:
    train_ids = [i for i in ds.trial_ids(train_tier) if ds.trials[i].has_responses]
    if not train_ids:
        raise DatasetError(f"{ds.root}: tier {train_tier!r} has no trials with responses")
    val_ids = [i for i in ds.trial_ids(val_tier) if ds.trials[i].has_responses]
    if val_ids:
        return train_ids, val_ids, val_tier
    if ds.trial_ids(val_tier):
        log.warning("tier %s has no responses; holding out training trials", val_tier)
    if len(train_ids) < 2:
        return train_ids, train_ids, f"{train_tier} (no held-out trials!)"
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(train_ids))
    n_val = max(1, len(order) // 10)
    return sorted(int(i) for i in order[n_val:]), sorted(int(i) for i in order[:n_val]), \
        f"{n_val} trials held out of {train_tier}"


def split_validation(ds: SensoriumDataset, ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """(early-stopping ids, selection ids): the validation trials split by clip, repeats of
    one clip on the same side, alternate clips to each side (issue 12: a branch is kept only
    where it beats the simpler model on trials early stopping never looked at). With a single
    clip there is nothing independent to split: both sides are every trial."""
    groups: dict[bytes, list[int]] = {}
    for tid in ids:
        key = hashlib.blake2b(np.ascontiguousarray(ds.video(tid)).tobytes(),
                              digest_size=16).digest()
        groups.setdefault(key, []).append(int(tid))
    clips = sorted(groups.values())
    if len(clips) < 2:
        return list(ids), list(ids)
    stop = sorted(t for g in clips[0::2] for t in g)
    select = sorted(t for g in clips[1::2] for t in g)
    return stop, select


def simulation_extra(ds: SensoriumDataset) -> dict[str, Any]:
    """``{"simulation": ...}`` from the ``sim.json`` that ``cortexcast simulate`` writes."""
    p = ds.root / "sim.json"
    if not p.is_file():
        return {}
    try:
        return {"simulation": json.loads(p.read_text())}
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: not readable JSON (%s); not copied into the card", p, exc)
        return {}


def rois_extra(ds: SensoriumDataset) -> dict[str, Any]:
    """``{"rois": meta/rois.json}`` for a dataset made from a session (``cortexcast export``).

    The ROI set's fingerprint, file name and motion reference hash go into the card, so the
    live decoder and ``doctor`` can refuse another ROI set. ``{}`` for a dataset without it
    (``cortexcast simulate``, Sensorium downloads).
    """
    meta = read_dataset_roi_meta(ds.root)
    if meta is None:
        return {}
    count = int(meta["fingerprint"]["count"])
    if count != ds.n_neurons:
        raise DatasetError(f"{ds.root / DATASET_ROI_META} names {count} ROIs but the dataset "
                           f"has {ds.n_neurons} neurons; re-run `cortexcast export`")
    return {"rois": meta}


def dataset_extra(ds: SensoriumDataset) -> dict[str, Any]:
    """What every trained model's card ``extra`` gets from its dataset: the simulator
    settings (``simulation``) and the ROI set (``rois``), where the dataset records them."""
    return {**simulation_extra(ds), **rois_extra(ds)}


def activity_kind(ds: SensoriumDataset, ids: Sequence[int]) -> str:
    """'dff' when responses go negative (ΔF/F), else 'deconvolved' (non-negative)."""
    for tid in ids[:5]:
        if np.nanmin(ds.responses(tid)) < 0:
            return "dff"
    return "deconvolved"


def save_beside(out: Path, card: ModelCard, mask: np.ndarray, resp_mean: np.ndarray,
                resp_std: np.ndarray, behavior_mean: np.ndarray,
                behavior_std: np.ndarray) -> None:
    """The files every trained model has beside its ``.onnx``: card, mask and ``.norm.npz``."""
    save_card(card, out)
    save_mask(mask, out)
    save_training_stats(out, resp_mean, resp_std, behavior_mean, behavior_std)
