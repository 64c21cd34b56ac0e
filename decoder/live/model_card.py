"""The model card: what a pixel-decoder ONNX file expects and how it was made.

A model is three files side by side::

    model.onnx       the graph: input ``(1, window, neurons)`` float32 raw activity,
                     oldest row first; output ``(1, height, width)`` float32, 0..255 scale
    model.json       this card (JSON)
    model.mask.npy   the evaluation mask it was scored with, bool ``(height, width)``

Timing convention: the newest input row is imaging frame ``t + lag``, so the
output reconstructs stimulus frame ``t`` from frames ``t + lag - window + 1 ..
t + lag``. ``lag <= window - 1`` keeps frame ``t`` itself inside the window.
Any normalisation of the activity lives inside the ONNX graph, so a consumer
feeds the activity exactly as the extraction (or the dataset) produces it.

A model trained on a dataset from a session (``cortexcast export``) records the ROI
set's fingerprint in ``extra["rois"]`` (see :mod:`cortexcast.core.roi_fingerprint`);
:func:`check_model_rois` refuses another ROI set.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cortexcast.core.errors import CortexcastError
from cortexcast.core.roi_fingerprint import fingerprint_differences, roi_fingerprint
from cortexcast.core.rois import ROISet
from cortexcast.decoder.live.mask_file import read_mask

log = logging.getLogger("cortexcast.decoder.live.model_card")

FORMAT = "cortexcast-pixel-decoder-1"
MAX_WINDOW = 10
"""At most the 10 newest imaging frames (~300 ms at 30 Hz) feed one reconstruction."""
MAX_LAG = 10


class ModelError(CortexcastError, ValueError):
    """A model file or card is missing, malformed, or does not fit the data."""


@dataclass(frozen=True)
class ModelCard:
    neurons: int
    """N: length of the activity vector the model takes."""
    window: int
    """W: imaging frames per reconstruction (1..10)."""
    lag: int
    """L: frames of responses after the reconstructed frame the model uses (0..W-1)."""
    height: int = 36
    """Output frame height (px)."""
    width: int = 64
    """Output frame width (px)."""
    input_name: str = "activity"
    output_name: str = "frame"
    method: str = ""
    """Short description of the architecture and training."""
    validation_score: float | None = None
    """Pixel correlation on the validation tier (see cortexcast.decoder.live.metric)."""
    training_time_s: float | None = None
    data_used: dict[str, Any] = field(default_factory=dict)
    """Dataset folder, tiers and trial counts used for training and validation."""
    onnx_max_abs_diff: float | None = None
    """Max |onnxruntime - torch| on held-out input (0..255 scale)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else, e.g. the simulator settings the model was trained on."""
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ModelError(f"model card format {self.format!r} is not {FORMAT!r}")
        for name in ("neurons", "window", "lag", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ModelError(f"model card: {name} must be an integer, got {value!r}")
        if self.neurons < 1:
            raise ModelError(f"model card: neurons must be >= 1, got {self.neurons}")
        if not 1 <= self.window <= MAX_WINDOW:
            raise ModelError(f"model card: window must be in 1..{MAX_WINDOW}, got {self.window}")
        if not 0 <= self.lag <= min(MAX_LAG, self.window - 1):
            raise ModelError(
                f"model card: lag must be in 0..{min(MAX_LAG, self.window - 1)} "
                f"(window - 1), got {self.lag}"
            )
        if self.height < 1 or self.width < 1:
            raise ModelError(f"model card: bad frame size {self.height}x{self.width}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.window, self.neurons)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (1, self.height, self.width)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        return json.dumps(_json_safe(data), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "model card") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{where}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{where}: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(
                f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        missing = [k for k in ("neurons", "window", "lag") if k not in data]
        if missing:
            raise ModelError(f"{where}: missing key {missing[0]!r}")
        try:
            return cls(**data)
        except ModelError as exc:
            raise ModelError(f"{where}: {exc}") from exc


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, so the card is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def card_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def mask_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".mask.npy")


def save_card(card: ModelCard, model_path: str | Path) -> Path:
    p = card_path(model_path)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(card.to_json())
    tmp.replace(p)
    return p


def load_card(model_path: str | Path) -> ModelCard:
    """Card of ``model_path``; raises ModelError if the model or its card is missing."""
    m = Path(model_path)
    if not m.is_file():
        raise ModelError(f"model file {m} does not exist")
    p = card_path(m)
    if not p.is_file():
        raise ModelError(f"model {m} has no card: expected {p} beside it")
    return ModelCard.from_json(p.read_text(), where=str(p))


def save_mask(mask: np.ndarray, model_path: str | Path) -> Path:
    p = mask_path(model_path)
    np.save(p, np.asarray(mask, dtype=bool))
    return p


def load_mask(model_path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """The evaluation mask stored with a model, or None if there is none."""
    p = mask_path(model_path)
    if not p.is_file():
        return None
    return read_mask(p, shape, ModelError)


# -- the ROI set a model was trained on ------------------------------------------------------

def card_rois(card: ModelCard, where: str = "model card") -> dict[str, Any] | None:
    """The card's ``extra["rois"]`` (fingerprint, ROI file name, motion reference hash), or
    None for a model that records none (older models, the bundled one)."""
    meta = card.extra.get("rois")
    if meta is None:
        return None
    fp = meta.get("fingerprint") if isinstance(meta, dict) else None
    if not isinstance(fp, dict) or not {"count", "frame_shape", "sha256"} <= set(fp):
        raise ModelError(f"{where}: extra.rois has no ROI fingerprint (count, frame_shape, "
                         "sha256); re-train the model with `cortexcast train`")
    return meta


def check_model_rois(card: ModelCard, rois: ROISet, model_path: str | Path,
                     rois_path: str | Path) -> None:
    """Raise ModelError when ``rois`` (loaded from ``rois_path``) do not fit the model at
    ``model_path``: another neuron count, or not the ROI set it was trained on (naming both
    files and what differs). The live decoder runs it at start, ``up`` before it starts
    anything.

    A card that records no fingerprint is checked on the neuron count only (logged).
    """
    meta = card_rois(card, str(card_path(model_path)))
    if meta is None and card.neurons != rois.n_neurons:
        raise ModelError(f"model {model_path} expects {card.neurons} neurons but the ROI file "
                         f"{rois_path} has {rois.n_neurons}: use the ROI file the model was "
                         "trained with, or train a model on these ROIs (`cortexcast export`, "
                         "`cortexcast train`)")
    if meta is None:
        log.info("%s records no ROI fingerprint (trained before ROI fingerprints, or on "
                 "simulated data); the ROI set %s is not checked against it",
                 card_path(model_path), rois_path)
        return
    trained = meta["fingerprint"]
    loaded = roi_fingerprint(rois)
    diffs = fingerprint_differences(trained, loaded)
    if not diffs:
        return
    th, tw = trained["frame_shape"]
    lh, lw = loaded["frame_shape"]
    trained_file = meta.get("rois_file") or "its training dataset's rois.npz"
    raise ModelError(
        f"model {model_path} was trained on another ROI set than {rois_path} "
        f"({'; '.join(diffs)}, trained vs loaded): trained on {trained['count']} ROIs on "
        f"{th}x{tw} frames from {trained_file}, {rois_path} has {loaded['count']} ROIs on "
        f"{lh}x{lw} frames. Use the ROI file the model was trained with ({trained_file}), "
        f"or make a model for this ROI set: `cortexcast export --recording F.ccr --rois "
        f"{rois_path} --out DIR`, then `cortexcast train --data DIR --out MODEL.onnx`")
