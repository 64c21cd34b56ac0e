"""The decoder loop's bounded bookkeeping: which upstream stamps it forwards, its recent busy
times, and rate-limited counting of bad input. Names and counts that come off the wire are
bounded here, so a sender cannot grow the decoder's memory (issue 10)."""

from __future__ import annotations

import logging
import re
import time
from collections import deque

import numpy as np

from cortexcast.core.runtime import percentiles_ms

log = logging.getLogger("decoder")


MAX_FORWARDED_STAMPS = 4
"""Upstream latency stamps a frame's outputs carry on (then the decoder's own three)."""
_FORWARDED_STAMP = re.compile(r"[a-z][a-z0-9_]{0,23}\.(acq|pub)")
"""What an upstream stamp's name must look like to be forwarded: a producer's acquisition or
publish stage (``daq.acq``, ``daq.pub``, ``replay.pub``). Names a sender makes up otherwise
are dropped here, so they do not become per-name entries downstream."""


def forwarded_stamps(stamps: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """The upstream stamps worth forwarding: well-formed stage names, each once, at most
    :data:`MAX_FORWARDED_STAMPS` of them (the first ones)."""
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for name, t in stamps:
        if len(out) >= MAX_FORWARDED_STAMPS:
            break
        if (isinstance(name, str) and name not in seen and name != "decoder.recv"
                and _FORWARDED_STAMP.fullmatch(name)):
            seen.add(name)
            out.append((name, t))
    return tuple(out)


class BusyTimes:
    """Per-frame busy times (ns): the newest :attr:`KEEP` for the percentiles, a total count
    and maximum over the whole run. Bounded, however long the run."""

    KEEP = 10_000

    def __init__(self, keep: int | None = None) -> None:
        self._ring: deque[int] = deque(maxlen=keep or self.KEEP)
        self.total = 0
        self.max_ns = 0

    def append(self, ns: int) -> None:
        self._ring.append(ns)
        self.total += 1
        self.max_ns = max(self.max_ns, ns)

    def __len__(self) -> int:
        return len(self._ring)

    def percentiles_ms(self) -> dict[str, float | int]:
        """p50/p99 of the newest frames, max and n over the whole run."""
        out = percentiles_ms(np.fromiter(self._ring, np.int64, len(self._ring)))
        if self.total:
            out.update(n=self.total, max=self.max_ns / 1e6)
        return out


BAD_LOG_INTERVAL_S = 60.0
"""After the first of a kind, bad input is logged at most once per this many seconds."""
_bad_logged: dict[str, tuple[float, int]] = {}  # counter key -> (last logged, count then)


def count_bad(counts: dict[str, int], key: str, exc: Exception) -> None:
    """Count one bad input under ``key`` (a fixed name); log the first, then at most one line
    per :data:`BAD_LOG_INTERVAL_S` with the count since."""
    counts[key] = counts.get(key, 0) + 1
    now = time.monotonic()
    last = _bad_logged.get(key)
    if counts[key] == 1 or last is None:
        log.error("%s (skipped; further ones counted in %s, logged at most once a minute)",
                  exc, key)
        _bad_logged[key] = (now, counts[key])
    elif now - last[0] >= BAD_LOG_INTERVAL_S:
        log.error("%d more %s in %.0f s, the newest: %s (skipped)", counts[key] - last[1],
                  key, now - last[0], exc)
        _bad_logged[key] = (now, counts[key])
