"""Pacing against absolute deadlines: the one pacer of the simulator and of replays.

A deadline is ``start + t / speed``; a late wake-up never moves the deadlines after it,
so lateness never accumulates (no drift). :class:`Pacer` waits for recorded times
(replays); :class:`FramePacer` puts it on a fixed frame rate and adds ``rest``, which
keeps the simulator's own CPU burst away from the moment its last frame is being
decoded and displayed (docs/architecture.md). Clocks and sleep are injectable for tests.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable


class Pacer:
    """Waits for absolute deadlines ``start + t / speed`` (``speed=None``: never waits).

    Sleeps at most ``max_sleep_s`` at a time, calling ``idle`` (e.g. a publisher's
    heartbeat) in between and giving up when ``should_stop()``. ``clock`` counts
    ``ticks_per_s`` per second (1 for ``time.monotonic``, 1e9 for ``monotonic_ns``);
    ``sleep`` takes seconds.
    """

    def __init__(self, speed: float | None = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, max_sleep_s: float = 0.05,
                 idle: Callable[[], Any] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 ticks_per_s: float = 1.0) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be > 0 or None, got {speed}")
        self.speed = speed
        self._clock, self._sleep, self.max_sleep_s = clock, sleep, max_sleep_s
        self._idle = idle or (lambda: None)
        self._should_stop = should_stop or (lambda: False)
        self.ticks_per_s = ticks_per_s
        self.t0: float | None = None
        """Clock reading at recorded time 0 (set by :meth:`start`)."""
        self.max_late_s = 0.0
        """Largest delay (s) between a deadline and the return of :meth:`wait`."""

    def start(self) -> None:
        """Make now the time of recorded time 0 (``wait`` calls it if needed)."""
        self.t0 = self._clock()

    def wait(self, t: float) -> bool:
        """Wait until recorded time ``t`` (s since recorded time 0); False if stopped."""
        if self.t0 is None:
            self.start()
        if self.speed is None:
            return not self._should_stop()
        return self.sleep_until(self.t0 + t / self.speed * self.ticks_per_s)  # type: ignore[operator]

    def sleep_until(self, deadline: float) -> bool:
        """Sleep until the clock reads ``deadline``; False if stopped first."""
        while not self._should_stop():
            left = deadline - self._clock()
            if left <= 0:
                self.max_late_s = max(self.max_late_s, -left / self.ticks_per_s)
                return True
            self._sleep(min(left / self.ticks_per_s, self.max_sleep_s))
            self._idle()
        return False


class FramePacer:
    """Frames at ``rate_hz`` on a :class:`Pacer`: frame ``i`` is due ``(i + 1) / rate`` after
    start. ``clock`` returns nanoseconds (deadlines are integers); ``sleep`` takes seconds."""

    def __init__(self, rate_hz: float, clock: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be > 0")
        self.period_ns = 1e9 / rate_hz
        self.clock = clock
        self._pacer = Pacer(1.0, clock=clock, sleep=sleep, max_sleep_s=math.inf, ticks_per_s=1e9)
        self.start()

    @property
    def t0_ns(self) -> int:
        return int(self._pacer.t0)  # type: ignore[arg-type]

    def start(self) -> None:
        self._pacer.start()

    def due(self, i: int) -> int:
        """Monotonic ns at which frame ``i`` is complete."""
        return self.t0_ns + round((i + 1) * self.period_ns)

    def rest(self, i: int, compute_ns: float, fraction: float = 0.3) -> None:
        """Before computing frame ``i``, sleep ``fraction`` of a period past frame ``i - 1``.

        A microscope costs the host nothing while the frame it just delivered is decoded and
        displayed; the simulator's own CPU burst for the next frame should not land on that
        moment either, or it measures itself. It still wakes ``2 * compute_ns`` (the recent
        compute time) before frame ``i`` is due, so a slow host is not made late.
        """
        self._pacer.sleep_until(math.ceil(min(self.due(i - 1) + fraction * self.period_ns,
                                              self.due(i) - 2 * compute_ns)))

    def wait(self, i: int) -> int:
        """Sleep until frame ``i`` is due; returns its deadline (ns)."""
        deadline = self.due(i)
        self._pacer.sleep_until(deadline)
        return deadline
