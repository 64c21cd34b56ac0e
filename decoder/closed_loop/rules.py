"""Closed-loop rules: plain objects that look at each reconstruction and say when to fire.

A rule turns a frame into one number (:meth:`Rule.value`), compares it with
a threshold, and fires when the condition has held for ``frames``
consecutive reconstructions, outside the refractory period of its previous
firing. No sockets, no devices: :meth:`Rule.update` takes an array and a
time and returns a :class:`Firing` or None, so it is tested with arrays.

Semantics (the same for every rule):

* a frame *qualifies* when its value is finite and beyond the threshold;
  a frame with any NaN/inf in the pixels the rule reads never qualifies and
  ends the streak (so NaN input can never fire);
* the rule fires on the ``frames``-th qualifying frame in a row;
* after a firing, frames until ``t_fire + refractory_s`` (the rig clock of
  the frames, seconds) do not count; a new firing needs ``frames`` fresh
  qualifying frames after that. A frame older than the last firing means the
  rig clock restarted (a new acquisition): the refractory period ends.

Kinds (``kind`` in a ``[[loop.rules]]`` table):

* ``correlation`` – Pearson correlation of the reconstruction with a target image
  (``target``: .npy or .png, 36x64), optionally over a ``mask``;
* ``brightness``  – mean of the reconstruction over a region (``rect = [y0, y1, x0, x1]``,
  half-open, or a ``mask`` file), ``direction`` "above" or "below" the threshold.
"""

from __future__ import annotations

from cortexcast.core.config import path_field
from cortexcast.core.errors import CortexcastError
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

FRAME_SHAPE = (36, 64)


class RuleError(CortexcastError, ValueError):
    """A rule's settings or files are wrong (the message names the rule and the file)."""


@dataclass(frozen=True)
class RuleSettings:
    name: str
    """Appears in the firing log and on the `loop` topic."""
    output: str
    """Name of the ``[[loop.outputs]]`` entry this rule drives."""
    kind: Literal["correlation", "brightness"]
    threshold: float
    """Correlation (-1..1), or brightness on the reconstruction's 0..255 scale."""
    frames: int = 1
    """Consecutive qualifying reconstructions needed to fire (k)."""
    refractory_s: float = 1.0
    """No new firing (nor counting towards one) for this long after a firing, rig clock (s)."""
    direction: Literal["above", "below"] = "above"
    """Fire when the value is at or above / at or below the threshold."""
    target: str = path_field("")
    """correlation: target image (.npy float or .png grayscale, 36x64)."""
    mask: str = path_field("")
    """Pixels the rule reads (.npy bool or .png, nonzero = in); brightness: the region."""
    rect: tuple[int, ...] = ()
    """brightness: region [y0, y1, x0, x1] (half-open), instead of a mask."""

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not self.name:
            raise ValueError("a rule needs a name")
        if not math.isfinite(self.threshold):
            raise ValueError(f"{where}: threshold must be a finite number")
        if self.frames < 1:
            raise ValueError(f"{where}: frames must be >= 1, got {self.frames}")
        if not 0 <= self.refractory_s <= 3600:
            raise ValueError(f"{where}: refractory_s must be in [0, 3600], got {self.refractory_s}")
        if self.kind == "correlation":
            if not self.target:
                raise ValueError(f"{where}: kind 'correlation' needs target = 'image.npy|png'")
            if not -1 <= self.threshold <= 1:
                raise ValueError(f"{where}: a correlation threshold is in [-1, 1], "
                                 f"got {self.threshold}")
            if self.rect:
                raise ValueError(f"{where}: rect is for kind 'brightness' (use mask)")
        else:
            if bool(self.rect) == bool(self.mask):
                raise ValueError(f"{where}: kind 'brightness' needs exactly one of "
                                 "rect = [y0, y1, x0, x1] or mask = 'region.npy|png'")
            if self.target:
                raise ValueError(f"{where}: target is for kind 'correlation'")
        if self.rect:
            check_rect(self.rect, where)


def check_rect(rect: tuple[int, ...], where: str) -> None:
    h, w = FRAME_SHAPE
    if len(rect) != 4:
        raise ValueError(f"{where}: rect must be [y0, y1, x0, x1], got {list(rect)}")
    y0, y1, x0, x1 = rect
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"{where}: rect {list(rect)} is empty or outside the {h}x{w} frame")


@dataclass(frozen=True)
class Firing:
    """A rule decided to fire on this frame."""

    rule: str
    output: str
    value: float
    t: float
    """Rig-clock time of the frame that completed the streak (s)."""
    streak: int


class Rule:
    """Streak and refractory bookkeeping around :meth:`value` (subclasses compute it)."""

    def __init__(self, name: str, output: str, threshold: float, frames: int = 1,
                 refractory_s: float = 1.0, direction: str = "above") -> None:
        if frames < 1:
            raise RuleError(f"rule {name!r}: frames must be >= 1")
        self.name = name
        self.output = output
        self.threshold = float(threshold)
        self.frames = int(frames)
        self.refractory_s = float(refractory_s)
        self.above = direction == "above"
        self.streak = 0
        self.last_fire_t: float | None = None
        self.last_value = float("nan")
        self.fired = 0

    def value(self, frame: np.ndarray) -> float:
        raise NotImplementedError

    def qualifies(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value >= self.threshold if self.above else value <= self.threshold

    def in_refractory(self, t: float) -> bool:
        return self.last_fire_t is not None and t < self.last_fire_t + self.refractory_s

    def update(self, frame: np.ndarray, t: float) -> Firing | None:
        """Feed one reconstruction (36x64) taken at rig time ``t``; a Firing or None."""
        v = self.value(frame)
        self.last_value = v
        if self.last_fire_t is not None and t < self.last_fire_t:
            self.last_fire_t = None  # the clock went back: a new acquisition (ScanImage restarts)
        if self.in_refractory(t) or not self.qualifies(v):
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.frames:
            return None
        firing = Firing(self.name, self.output, v, t, self.streak)
        self.streak = 0
        self.last_fire_t = t
        self.fired += 1
        return firing

    def reset(self) -> None:
        self.streak = 0
        self.last_fire_t = None


def _selection(mask: np.ndarray | None) -> np.ndarray | slice:
    return slice(None) if mask is None else mask.ravel()


class CorrelationRule(Rule):
    """Pearson correlation with a target image (over ``mask`` pixels if given)."""

    def __init__(self, name: str, output: str, target: np.ndarray, threshold: float,
                 frames: int = 1, refractory_s: float = 1.0, direction: str = "above",
                 mask: np.ndarray | None = None) -> None:
        super().__init__(name, output, threshold, frames, refractory_s, direction)
        target = np.asarray(target, np.float64)
        if target.shape != FRAME_SHAPE:
            raise RuleError(f"rule {name!r}: target is {target.shape}, expected {FRAME_SHAPE}")
        self._sel = _selection(mask)
        t = target.ravel()[self._sel]
        if t.size < 2 or not np.isfinite(t).all():
            raise RuleError(f"rule {name!r}: target needs >= 2 finite pixels (in the mask)")
        t = t - t.mean()
        norm = float(np.sqrt(t @ t))
        if norm == 0:
            raise RuleError(f"rule {name!r}: target image is flat; a correlation with it is "
                            "undefined")
        self._t = t / norm

    def value(self, frame: np.ndarray) -> float:
        x = np.asarray(frame, np.float64).ravel()[self._sel]
        if x.size != self._t.size or not np.isfinite(x).all():
            return float("nan")  # never qualifies
        x = x - x.mean()
        norm = math.sqrt(float(x @ x))
        if not norm > 0:  # flat frame: correlation undefined
            return float("nan")
        return float(x @ self._t) / norm


class BrightnessRule(Rule):
    """Mean brightness over a region (0..255 scale of the reconstruction)."""

    def __init__(self, name: str, output: str, region: np.ndarray, threshold: float,
                 frames: int = 1, refractory_s: float = 1.0, direction: str = "above") -> None:
        super().__init__(name, output, threshold, frames, refractory_s, direction)
        region = np.asarray(region, bool)
        if region.shape != FRAME_SHAPE or not region.any():
            raise RuleError(f"rule {name!r}: region must be a non-empty {FRAME_SHAPE} mask")
        self._idx = np.flatnonzero(region)

    def value(self, frame: np.ndarray) -> float:
        x = np.asarray(frame, np.float64).ravel()
        if x.size != FRAME_SHAPE[0] * FRAME_SHAPE[1]:
            return float("nan")
        region = x[self._idx]
        if not np.isfinite(region).all():
            return float("nan")  # never qualifies (an inf would otherwise pass "above")
        return float(region.mean())


def rect_mask(rect: tuple[int, ...]) -> np.ndarray:
    y0, y1, x0, x1 = rect
    m = np.zeros(FRAME_SHAPE, bool)
    m[y0:y1, x0:x1] = True
    return m


def load_image(path: str | Path, what: str) -> np.ndarray:
    """A 36x64 float image from .npy (any numeric dtype) or an image file (as grayscale)."""
    p = Path(path)
    if not p.exists():
        raise RuleError(f"{what}: {p} does not exist")
    try:
        if p.suffix.lower() == ".npy":
            img = np.load(p, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(p) as im:
                img = np.asarray(im.convert("L"))
    except (OSError, ValueError) as exc:
        raise RuleError(f"{what}: cannot read {p}: {exc}") from exc
    if img.shape != FRAME_SHAPE or img.dtype.kind not in "biuf":
        raise RuleError(f"{what}: {p} is {img.shape} {img.dtype}, expected a {FRAME_SHAPE} "
                        "numeric image (the reconstruction's size)")
    return img.astype(np.float64)


def build_rule(s: RuleSettings) -> Rule:
    """The rule object a ``[[loop.rules]]`` table describes (reads its files)."""
    what = f"rule {s.name!r}"
    mask = load_image(s.mask, f"{what} mask") != 0 if s.mask else None
    if s.kind == "correlation":
        return CorrelationRule(s.name, s.output, load_image(s.target, f"{what} target"),
                               s.threshold, s.frames, s.refractory_s, s.direction, mask)
    region = rect_mask(s.rect) if s.rect else mask
    assert region is not None
    return BrightnessRule(s.name, s.output, region, s.threshold, s.frames, s.refractory_s,
                          s.direction)
