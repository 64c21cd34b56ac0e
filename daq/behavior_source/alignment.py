"""Time alignment of eye-tracker samples to the daq's monotonic clock, and the merge step.

Every sample is stored with its time on this host's ``time.monotonic()`` clock:

- UDP: the receive time; when the datagram carries the sender's time ``t``, ``t`` plus the
  sender's clock offset, estimated as the minimum of recent receive-minus-sender
  differences (the least delayed datagram), so network jitter does not move samples. A
  sender whose clock jumps back (a restarted program) resets the estimate.
- LSL: the sample's timestamp plus ``inlet.time_correction()`` is on this host's LSL clock
  (``pylsl.local_clock()``), mapped to ``time.monotonic()`` by a measured offset.

:meth:`BehaviorFeed.enrich` then gives each SyncEvent the latest sample whose time is at or
before the sync's arrival, if it is at most ``stale_s`` old; otherwise the eye channels are
absent and ``behavior_stale = 1.0``. Outages are logged once each (start and end), counted
per sync, never per message.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator

from cortexcast.core.events import SyncEvent
from cortexcast.daq.behavior_source.settings import BehaviorSettings
from cortexcast.daq.source import AcquisitionSource

log = logging.getLogger("cortexcast.daq.behavior")

STALE_KEY = "behavior_stale"
BUFFER_SAMPLES = 1024
"""Samples kept for lookup (~2 s at 500 Hz, far more than stale_s at eye-camera rates)."""


class SampleBuffer:
    """Recent ``(t_mono, values)`` samples, written by the reader thread, read by the merger."""

    def __init__(self, maxlen: int = BUFFER_SAMPLES) -> None:
        self._items: deque[tuple[float, dict[str, float]]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, t: float, values: dict[str, float]) -> None:
        with self._lock:
            self._items.append((t, values))

    def latest_before(self, t: float, max_age_s: float) -> tuple[float, dict[str, float]] | None:
        """The latest sample with time in ``[t - max_age_s, t]``, or None."""
        best: tuple[float, dict[str, float]] | None = None
        with self._lock:
            for item in reversed(self._items):
                ts = item[0]
                if ts < t - max_age_s:  # older ones follow (arrival order, up to jitter)
                    break
                if ts <= t and (best is None or ts > best[0]):
                    best = item
        return best

    def last_time(self) -> float | None:
        with self._lock:
            return self._items[-1][0] if self._items else None


class SenderClock:
    """Sender time -> local monotonic time, from the minimum receive-minus-sender difference."""

    def __init__(self, window: int = 200, reset_s: float = 1.0) -> None:
        self._diffs: deque[float] = deque(maxlen=window)
        self.reset_s = reset_s
        self.offset: float | None = None
        self.resets = 0

    def to_local(self, t_sender: float, t_recv: float) -> float:
        d = t_recv - t_sender
        if self.offset is not None and d - self.offset > self.reset_s:
            # a datagram "older" than any plausible delay: the sender's clock jumped back
            self._diffs.clear()
            self.resets += 1
            log.info("behaviour: the eye tracker's clock jumped by %.3f s (restarted?): "
                     "re-estimating its offset", d - self.offset)
        self._diffs.append(d)
        self.offset = min(self._diffs)
        return t_sender + self.offset


class ClockMap:
    """``mono - other`` for another steady clock (LSL's ``local_clock``), re-measured now and
    then: the reading with the shortest bracket of two monotonic reads wins."""

    def __init__(self, other: Callable[[], float], monotonic: Callable[[], float] = time.monotonic,
                 every_s: float = 10.0, tries: int = 5) -> None:
        self.other, self.monotonic, self.every_s, self.tries = other, monotonic, every_s, tries
        self._offset = 0.0
        self._measured: float | None = None

    def offset(self) -> float:
        now = self.monotonic()
        if self._measured is None or now - self._measured > self.every_s:
            best = math.inf
            for _ in range(self.tries):
                a = self.monotonic()
                o = self.other()
                b = self.monotonic()
                if b - a < best:
                    best, self._offset = b - a, (a + b) / 2 - o
            self._measured = now
        return self._offset


class BehaviorFeed(AcquisitionSource):
    """A behaviour source: fills a :class:`SampleBuffer` from its reader (``events()``, which
    yields nothing and runs until closed), and :meth:`enrich` es the merged stream's syncs."""

    def __init__(self, settings: BehaviorSettings, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.s = settings
        self.mapping = settings.channel_map()
        self._monotonic = monotonic
        self.buffer = SampleBuffer()
        self.samples = self.bad = self.missing = 0
        self.stale_syncs = self.fresh_syncs = self.outages = 0
        self._stale: bool | None = None  # None: no sync seen yet
        self._stale_since = 0
        self._closed = False

    # -- reader side -------------------------------------------------------------------------
    def add_sample(self, t_mono: float, values: dict[str, float]) -> None:
        self.samples += 1
        self.buffer.add(t_mono, values)

    def count_bad(self, what: str, detail: Any) -> None:
        """A message that cannot be read: counted, the first few and every 1000th logged."""
        self.bad += 1
        if self.bad <= 3 or self.bad % 1000 == 0:
            log.warning("behaviour: skipping a bad %s (%d so far): %s", what, self.bad, detail)

    def convert(self, raw: dict[str, Any]) -> dict[str, float] | None:
        """Model-unit values of one reading (keys: model channels); None when a value is
        missing (null/NaN: the tracker lost the pupil, a blink), which is counted."""
        out: dict[str, float] = {}
        for channel, value in raw.items():
            if value is None or not math.isfinite(value):
                self.missing += 1
                return None
            out[channel] = self.s.convert(channel, float(value))
        return out

    # -- merge side ----------------------------------------------------------------------------
    def enrich(self, ev: SyncEvent, t_arrival: float) -> SyncEvent:
        """``ev`` with the eye channels of the latest fresh sample, or marked stale."""
        behavior = {k: v for k, v in ev.behavior.items()
                    if k not in self.mapping and k != STALE_KEY}
        found = self.buffer.latest_before(t_arrival, self.s.stale_s)
        if found is not None:
            behavior.update(found[1])
            self.fresh_syncs += 1
            if self._stale:
                log.info("behaviour: eye-tracker samples back after %d stale sync(s)",
                         self.stale_syncs - self._stale_since)
            self._stale = False
        else:
            behavior[STALE_KEY] = 1.0
            self.stale_syncs += 1
            if not self._stale:
                self.outages += 1
                self._stale_since = self.stale_syncs - 1
                last = self.buffer.last_time()
                why = ("no eye-tracker sample yet" if last is None or last > t_arrival else
                       f"no eye-tracker sample for {t_arrival - last:.2f} s "
                       f"(stale_s = {self.s.stale_s:g})")
                log.warning("behaviour: %s; imaging frame %d on, syncs carry behavior_stale = 1 "
                            "(counted as behavior_stale_syncs; logged once per outage)", why,
                            ev.imaging_frame)
            self._stale = True
        return dataclasses.replace(ev, behavior=behavior)

    def status(self) -> dict[str, Any]:
        return {"behavior_samples": self.samples, "behavior_bad": self.bad,
                "behavior_missing": self.missing, "behavior_stale_syncs": self.stale_syncs,
                "behavior_fresh_syncs": self.fresh_syncs, "behavior_outages": self.outages}

    # -- AcquisitionSource ---------------------------------------------------------------------
    def events(self) -> Iterator[Any]:
        """Read samples until closed; yields nothing (samples reach syncs via :meth:`enrich`),
        and never ends on its own, so a silent eye tracker never ends the merged stream."""
        self._read()
        return
        yield  # a generator

    def _read(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._closed = True
