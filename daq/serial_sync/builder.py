"""Parsed sync-box events -> SyncEvents (with running speed). Pure: no ports, no threads.

* an imaging pulse ``I`` (value = the box's pulse count) -> one SyncEvent: imaging frame
  ``first_frame + count`` (or counted from the first pulse seen), ``t`` = the box's time, the
  stimulus frame of the latest flip, and ``behavior["running"]`` (cm/s) once an encoder spoke;
* a flip ``V`` (value = flip count = stimulus frame index) sets what is on screen;
* an encoder reading ``P`` (cumulative ticks) updates the running speed.

A count that jumps ahead means pulses were lost (e.g. while unplugged): they are counted in
``lost_pulses``, and the numbering stays the box's. A count that goes back means the box
restarted (re-plugging resets most microcontrollers): numbering continues from the last frame
and the restart is counted.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

from cortexcast.daq.serial_sync.protocol import DeviceEvent, MicrosClock
from cortexcast.daq.serial_sync.settings import SerialSettings
from cortexcast.core.events import SyncEvent

log = logging.getLogger(__name__)


class _Counter:
    """Maps a device count to our index: gaps are lost events, a count going back a restart."""

    def __init__(self, what: str, first: int, from_first_seen: bool) -> None:
        self.what, self.first, self.from_first_seen = what, first, from_first_seen
        self.offset: int | None = None
        self.last_count: int | None = None
        self.lost = 0
        self.gaps = 0
        self.restarts = 0

    def __call__(self, count: int) -> int:
        if self.offset is None or self.last_count is None:
            self.offset = self.first - (count if self.from_first_seen else 0)
        elif count <= self.last_count:
            last_index = self.last_count + self.offset
            self.offset = last_index + 1 - count
            self.restarts += 1
            log.warning("sync box %s count went back (%d after %d): the box restarted; "
                        "numbering continues at %d", self.what, count, self.last_count,
                        last_index + 1)
        elif count > self.last_count + 1:
            missed = count - self.last_count - 1
            self.lost += missed
            self.gaps += 1
            if self.gaps <= 3 or missed > 1 or self.gaps % 100 == 0:
                log.warning("sync box: %d %s event(s) lost before count %d (%d lost in %d "
                            "gaps so far)", missed, self.what, count, self.lost, self.gaps)
        self.last_count = count
        return count + self.offset


class SerialSyncBuilder:
    """Feed (device name, DeviceEvent, host time) in arrival order; get SyncEvents out."""

    def __init__(self, settings: SerialSettings) -> None:
        s = self.s = settings
        first_seen = s.numbering == "first_seen"
        self.frames = _Counter("imaging", s.first_frame, first_seen)
        self.flips = _Counter("flip", 0, first_seen)
        self._clocks: dict[str, MicrosClock] = {}
        self._stim = -1
        self._t_flip: float | None = None
        self._positions: deque[tuple[float, int]] = deque()
        self._speed: float | None = None
        self._speed_host_t = 0.0
        self._cm_per_tick = math.pi * s.wheel_diameter_cm / s.ticks_per_rev
        self.pulses = 0

    def device_restarted(self, device: str) -> None:
        """A device re-connected: its clock may have restarted."""
        if device in self._clocks:
            self._clocks[device].reset()
        self._positions.clear()

    def status(self) -> dict[str, Any]:
        return {"serial_pulses": self.pulses, "serial_lost_pulses": self.frames.lost,
                "serial_lost_flips": self.flips.lost,
                "serial_box_restarts": self.frames.restarts,
                "serial_running_cm_s": None if self._speed is None else round(self._speed, 3)}

    def __call__(self, device: str, ev: DeviceEvent, host_t: float) -> SyncEvent | None:
        clock = self._clocks.setdefault(device, MicrosClock(self.s.micros_bits))
        t = clock(ev.micros)
        if ev.kind == self.s.position_kind:
            self._position(t, ev.value, host_t)
            return None
        if ev.kind == self.s.flip_kind:
            self._stim, self._t_flip = self.flips(ev.value), t
            return None
        if ev.kind != self.s.imaging_kind:
            return None
        self.pulses += 1
        frame = self.frames(ev.value)
        behavior: dict[str, float] = {}
        if self._speed is not None:
            still = host_t - self._speed_host_t > self.s.speed_timeout_s
            behavior["running"] = 0.0 if still else self._speed
        return SyncEvent(imaging_frame=frame, t=t, stim_frame=self._stim, t_flip=self._t_flip,
                         behavior=behavior)

    def _position(self, t: float, ticks: int, host_t: float) -> None:
        self._positions.append((t, ticks))
        while len(self._positions) > 2 and t - self._positions[1][0] >= self.s.speed_window_s:
            self._positions.popleft()
        t0, p0 = self._positions[0]
        if t > t0:
            self._speed = (ticks - p0) * self._cm_per_tick / (t - t0)
        elif self._speed is None:
            self._speed = 0.0
        self._speed_host_t = host_t
