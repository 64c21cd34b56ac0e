"""Per-stage latency statistics from a message's ``(stage, monotonic_ns)`` stamps."""

from __future__ import annotations

from typing import Iterable

import numpy as np

#: The end-to-end span the project reports: frame published -> display received it.
END_TO_END = ("daq.pub", "display.recv")
#: Its key in :func:`spans` and :meth:`LatencyStats.summary` (what bench and status read).
END_TO_END_KEY = "end_to_end"
#: Where spans past :attr:`LatencyStats.max_spans` (or with absurd names) are counted.
OTHER_KEY = "other"
#: Stamp names come off the wire: a span name longer than this is counted as ``"other"``.
MAX_SPAN_NAME = 200


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

    Stamp names are whatever the producers wrote (the decoder forwards its input's), so
    the number of spans is capped: the first ``max_spans`` distinct spans (plus
    ``"end_to_end"``) get their own buffer, every later one, and any span whose name is
    longer than :data:`MAX_SPAN_NAME`, is pooled into one ``"other"`` buffer.
    """

    def __init__(self, max_samples: int = 9000, end_to_end: tuple[str, str] = END_TO_END,
                 *, max_spans: int = 32) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if max_spans < 1:
            raise ValueError(f"max_spans must be >= 1, got {max_spans}")
        self.max_samples = max_samples
        self.max_spans = max_spans
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
                if name != END_TO_END_KEY and (
                        len(name) > MAX_SPAN_NAME
                        or sum(n not in (END_TO_END_KEY, OTHER_KEY) for n in self._spans)
                        >= self.max_spans):
                    name = OTHER_KEY
                ring = self._spans.get(name)
                if ring is None:
                    ring = self._spans[name] = _Ring(self.max_samples)
            ring.add(ms)

    def samples(self, name: str) -> np.ndarray:
        """The kept samples of one span (in no particular order)."""
        ring = self._spans.get(name)
        return ring.kept().copy() if ring is not None else np.empty(0)

    def cdf(self) -> dict[str, list[list[float]]]:
        """``{span: [[percentile, ms], ...]}`` at every 2nd percentile plus 99 and 99.9: the
        distribution in a few hundred bytes (``bench`` draws it)."""
        points = [*range(0, 100, 2), 99.0, 99.9, 100.0]
        return {name: [[float(p), round(float(v), 4)]
                       for p, v in zip(points, np.percentile(ring.kept(), points))]
                for name, ring in self._spans.items()}

    def summary(self) -> dict[str, dict[str, float]]:
        """``{span: {n, p50, p99, max}}`` (ms) in pipeline order, then ``"other"`` (spans
        past the cap, pooled) and ``"end_to_end"`` last."""
        out: dict[str, dict[str, float]] = {}
        tail = [k for k in (OTHER_KEY, END_TO_END_KEY) if k in self._spans]
        names = [n for n in self._spans if n not in tail] + tail
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
