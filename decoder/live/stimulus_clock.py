"""Which stimulus frame each imaging frame showed, and which model rows it fills.

Plain bookkeeping the decoder process keeps from `sync` messages: :class:`SyncTracker` maps
imaging frames to stimulus frames (and the behavior then); :class:`StimulusClock` says which
stimulus-clock rows an imaging frame's activity fills when imaging is slower than the stimulus.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class SyncTracker:
    """Which stimulus frame was on screen at each imaging frame, and the mouse's behaviour
    then, from `sync` messages.

    Frames whose sync has not arrived yet are extrapolated from the newest known
    pair at the stimulus/imaging rate ratio; their behaviour is the newest known
    within ``BEHAVIOR_HOLD_FRAMES`` imaging frames.
    """

    BEHAVIOR_HOLD_FRAMES = 10

    def __init__(self, stim_per_imaging: float = 1.0, keep: int = 256) -> None:
        self.ratio = stim_per_imaging
        self._map: dict[int, int] = {}
        self._keep = keep
        self._last: tuple[int, int] | None = None
        self._behavior: dict[int, dict[str, Any]] = {}
        self._last_behavior: tuple[int, dict[str, Any]] | None = None

    @property
    def seen_any(self) -> bool:
        """True once any sync has arrived (so waiting for one makes sense)."""
        return self._last is not None

    def add(self, imaging_frame: int, stim_frame: int,
            behavior: dict[str, Any] | None = None) -> None:
        self._map[imaging_frame] = stim_frame
        if self._last is None or imaging_frame >= self._last[0]:
            self._last = (imaging_frame, stim_frame)
        if behavior:
            self._behavior[imaging_frame] = behavior
            if self._last_behavior is None or imaging_frame >= self._last_behavior[0]:
                self._last_behavior = (imaging_frame, behavior)
        for table in (self._map, self._behavior):
            if len(table) > self._keep:
                for k in sorted(table)[: len(table) - self._keep]:
                    del table[k]

    def known(self, imaging_frame: int) -> bool:
        return imaging_frame in self._map

    def stim_at(self, imaging_frame: int) -> int:
        if imaging_frame in self._map:
            return self._map[imaging_frame]
        if self._last is None or self._last[1] < 0:
            return -1
        return int(round(self._last[1] + (imaging_frame - self._last[0]) * self.ratio))

    def behavior_at(self, imaging_frame: int) -> dict[str, Any] | None:
        """The behaviour dict sent with this frame's sync, else the newest recent one."""
        b = self._behavior.get(imaging_frame)
        if b is not None:
            return b
        last = self._last_behavior
        if last is not None and abs(imaging_frame - last[0]) <= self.BEHAVIOR_HOLD_FRAMES:
            return last[1]
        return None


class StimulusClock:
    """Which stimulus-clock rows an imaging frame's activity fills (slow imaging, resampled).

    The training data (``cortexcast simulate``, as the competition data) gives
    stimulus frame f the activity of the imaging frame during which f was on
    screen at mid-frame, and a frame no imaging frame saw holds the previous
    one. So when imaging frame i arrives, showing stimulus frame s_i, the rows
    since the last one pushed are: ``s_i - s_{i-1} - 1`` rows of frame i-1's
    activity (held), then one of frame i's. Rows are capped at ``max_pushes``
    (a gap after dropped frames); with an unknown stimulus frame,
    ``round(ratio)`` rows named -1. At ratio <= 1 every frame is one row, as
    before.
    """

    def __init__(self, stim_per_imaging: float, max_pushes: int) -> None:
        self.ratio = stim_per_imaging
        self.resampling = stim_per_imaging > 1.0 + 1e-9
        self.fallback = max(1, round(stim_per_imaging))
        self.max_pushes = max(max_pushes, 2 * math.ceil(stim_per_imaging))
        self.last_row: int | None = None
        self.held: tuple[np.ndarray, np.ndarray | None] | None = None
        """(activity, behaviour) of the previous imaging frame."""

    def rows(self, stim: int) -> tuple[list[int], int]:
        """(stimulus rows to push, oldest first; how many of them take the held frame)."""
        if not self.resampling:
            return [stim], 0
        if stim < 0:
            self.last_row = None
            return [-1] * self.fallback, self.fallback - 1
        n = 1 if self.last_row is None else min(max(stim - self.last_row, 1), self.max_pushes)
        self.last_row = stim
        return list(range(stim - n + 1, stim + 1)), n - 1
