"""Per-stage latency statistics from a message's ``(stage, monotonic_ns)`` stamps."""

from __future__ import annotations

from typing import Iterable

import numpy as np

#: The end-to-end span the project reports: frame published -> display received it.
END_TO_END = ("daq.pub", "display.recv")
#: Its key in :func:`spans` and :meth:`LatencyStats.summary` (what bench and status read).
END_TO_END_KEY = "end_to_end"


def span_name(first: str, last: str) -> str:
    return f"{first}\u2192{last}"


def spans(stamps: Iterable[tuple[str, int]],
          end_to_end: tuple[str, str] = END_TO_END) -> dict[str, float]:
    """Durations (ms) between consecutive stamps (``"a→b"``), plus ``"end_to_end"``
    (``end_to_end[0]`` to ``end_to_end[1]``) when both stamps are there."""
    stamps = list(stamps)
    out: dict[str, float] = {}
    for (a, ta), (b, tb) in zip(stamps, stamps[1:]):
        out[span_name(a, b)] = (tb - ta) / 1e6
    times = {}
    for stage, t in stamps:
        times.setdefault(stage, t)
    first, last = end_to_end
    if first in times and last in times:
        out[END_TO_END_KEY] = (times[last] - times[first]) / 1e6
    return out


class _Ring:
    """The last ``size`` values of one span in a preallocated array (cheap to summarise)."""

    def __init__(self, size: int) -> None:
        self.values = np.empty(size, np.float64)
        self.count = 0
        self.max = -np.inf

    def add(self, x: float) -> None:
        self.values[self.count % len(self.values)] = x
        self.count += 1
        if x > self.max:
            self.max = x

    def kept(self) -> np.ndarray:
        return self.values[: min(self.count, len(self.values))]


class LatencyStats:
    """Keeps the last ``max_samples`` durations (ms) of every span and summarises them.

    p50/p99 are over the kept samples (9,000 = 5 min at 30 Hz); ``max`` and
    ``n`` are over everything seen since the start.
    """

    def __init__(self, max_samples: int = 9000, end_to_end: tuple[str, str] = END_TO_END) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.max_samples = max_samples
        self.end_to_end = end_to_end
        self._spans: dict[str, _Ring] = {}

    @property
    def end_to_end_span(self) -> str:
        """What ``"end_to_end"`` measures, e.g. ``"daq.pub→display.recv"``."""
        return span_name(*self.end_to_end)

    def add(self, stamps: Iterable[tuple[str, int]]) -> None:
        for name, ms in spans(stamps, self.end_to_end).items():
            ring = self._spans.get(name)
            if ring is None:
                ring = self._spans[name] = _Ring(self.max_samples)
            ring.add(ms)

    def samples(self, name: str) -> np.ndarray:
        """The kept samples of one span (in no particular order)."""
        ring = self._spans.get(name)
        return ring.kept().copy() if ring is not None else np.empty(0)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{span: {n, p50, p99, max}}`` (ms) in pipeline order, ``"end_to_end"`` last."""
        out: dict[str, dict[str, float]] = {}
        e2e = END_TO_END_KEY
        names = [n for n in self._spans if n != e2e] + ([e2e] if e2e in self._spans else [])
        for name in names:
            ring = self._spans[name]
            p50, p99 = np.percentile(ring.kept(), [50, 99])
            out[name] = {
                "n": ring.count,
                "p50": round(float(p50), 4),
                "p99": round(float(p99), 4),
                "max": round(float(ring.max), 4),
            }
        return out
