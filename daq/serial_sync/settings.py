"""Settings of the serial sync source (table ``[daq.serial]``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

#: The default line protocol: ``@<kind>_<micros>_<value>`` (see docs/rig.md).
DEFAULT_PATTERN = r"^@(?P<kind>[A-Z])_(?P<micros>\d+)_(?P<value>-?\d+)$"


@dataclass(frozen=True)
class SerialSettings:
    port: str = ""
    """Sync box serial port, required when [daq] sync names "serial" (e.g. "/dev/ttyACM0",
    "COM3", or a /dev/serial/by-id/... link, which survives re-plugging into another USB
    socket)."""
    encoder_port: str = ""
    """Optional separate running-wheel encoder speaking the same protocol ("P" lines);
    "" when the sync box sends the encoder lines itself."""
    baudrate: int = 115200
    pattern: str = DEFAULT_PATTERN
    """Regex for one line (without the newline) with named groups kind, micros, value."""
    imaging_kind: str = "I"
    """Kind letter of an imaging (frame clock) pulse; value = pulse count."""
    flip_kind: str = "V"
    """Kind letter of a stimulus screen flip (photodiode/vsync); value = flip count, which
    is the stimulus frame index."""
    position_kind: str = "P"
    """Kind letter of a wheel encoder reading; value = cumulative position in ticks."""
    micros_bits: int = 32
    """Width of the device's microsecond counter (Arduino micros() wraps at 2**32 µs)."""
    numbering: Literal["count", "first_seen"] = "count"
    """Imaging frame index = first_frame + the pulse count the box sends ("count"), or
    + pulses since the first one this source saw ("first_seen")."""
    first_frame: int = 0
    ticks_per_rev: float = 1024.0
    """Encoder ticks per wheel revolution."""
    wheel_diameter_cm: float = 15.0
    speed_window_s: float = 0.25
    """Running speed is the distance over (about) this window, divided by its duration."""
    speed_timeout_s: float = 1.0
    """No encoder line for this long: the wheel stands still (speed 0)."""
    read_timeout_s: float = 0.05
    """Serial read timeout: how quickly the reader notices a stop request."""
    reconnect_min_s: float = 0.05
    reconnect_max_s: float = 2.0
    """Back-off between re-open attempts after an unplug (doubling from min to max)."""
    max_line: int = 256
    """Longer lines are garbage (counted and skipped)."""
    require_device: bool = True
    """Fail at start if the port cannot be opened (false: wait for it to be plugged in)."""

    def __post_init__(self) -> None:
        try:
            rx = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regex: {exc}") from exc
        missing = {"kind", "micros", "value"} - set(rx.groupindex)
        if missing:
            raise ValueError(f"pattern needs the named groups {sorted(missing)}")
        kinds = (self.imaging_kind, self.flip_kind, self.position_kind)
        if len(set(kinds)) != 3 or not all(kinds):
            raise ValueError("imaging_kind, flip_kind and position_kind must be distinct "
                             "and non-empty")
        if self.baudrate <= 0 or self.ticks_per_rev <= 0 or self.wheel_diameter_cm <= 0:
            raise ValueError("baudrate, ticks_per_rev and wheel_diameter_cm must be > 0")
        if not 8 <= self.micros_bits <= 64:
            raise ValueError("micros_bits must be in [8, 64]")
        if min(self.speed_window_s, self.speed_timeout_s, self.read_timeout_s,
               self.reconnect_min_s) <= 0 or self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("timeouts must be > 0 and reconnect_max_s >= reconnect_min_s")
        if self.max_line < 8:
            raise ValueError("max_line must be >= 8")
