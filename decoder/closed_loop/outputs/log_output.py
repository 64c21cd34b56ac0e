"""The simulated trigger output: fires instantly and only counts (for the simulated rig)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("loop")


class LogOutput:
    """An output with no device: the firing log is its only trace."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fired = 0

    def open(self) -> None:
        log.info("output %s: simulated (log only)", self.name)

    def fire(self) -> int:
        self.fired += 1
        return time.monotonic_ns()

    def close(self) -> None:
        pass
