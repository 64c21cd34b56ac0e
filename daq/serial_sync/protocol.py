"""The sync box's line protocol: one ASCII line per event, parsed by a configurable regex.

Default (docs/rig.md): ``@I_<micros>_<count>`` imaging pulse, ``@V_<micros>_<count>``
screen flip, ``@P_<micros>_<position>`` encoder position, each ended by ``\\n`` (``\\r\\n``
accepted). ``micros`` is the box's microsecond clock, which wraps; :class:`MicrosClock`
unwraps it to seconds.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceEvent:
    kind: str
    micros: int
    value: int


class LineParser:
    """bytes line -> DeviceEvent, or None for garbage (counted; the first few logged)."""

    def __init__(self, pattern: str, kinds: tuple[str, ...], name: str = "serial") -> None:
        self.rx = re.compile(pattern)
        self.kinds = frozenset(kinds)
        self.name = name
        self.garbage = 0

    def __call__(self, line: bytes) -> DeviceEvent | None:
        text = line.rstrip(b"\r\n")
        try:
            m = self.rx.match(text.decode("ascii"))
            event = None if m is None else DeviceEvent(m["kind"], int(m["micros"]), int(m["value"]))
        except (UnicodeDecodeError, ValueError):
            event = None
        if event is None or event.kind not in self.kinds:
            self.garbage += 1
            if self.garbage <= 3 or self.garbage % 1000 == 0:
                log.warning("%s: skipping a line that is not the sync protocol (%d so far): %r",
                            self.name, self.garbage, text[:80])
            return None
        return event


class MicrosClock:
    """Unwraps a device's wrapping microsecond counter into seconds (monotonic per device)."""

    def __init__(self, bits: int = 32) -> None:
        self.modulus = 1 << bits
        self._last: int | None = None
        self._wraps = 0

    def reset(self) -> None:
        """The device restarted (its clock may have gone back): start unwrapping afresh."""
        self._last, self._wraps = None, 0

    def __call__(self, micros: int) -> float:
        micros %= self.modulus
        if self._last is not None and micros < self._last - self.modulus // 2:
            self._wraps += 1
        self._last = micros
        return (micros + self._wraps * self.modulus) / 1e6
