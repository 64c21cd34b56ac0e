"""Polling with a timeout for tests: wait for a condition, never sleep a fixed time."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

TIMEOUT_S = 10.0


def wait_for(cond: Callable[[], Any], timeout: float = TIMEOUT_S, what: str = "") -> Any:
    """Poll ``cond`` until true (returns its value) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        threading.Event().wait(0.002)
    return value
