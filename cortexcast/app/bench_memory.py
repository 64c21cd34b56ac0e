"""Memory growth of each process over a bench run (the soak test's figure).

A process that leaks grows without end; one that does not settles after its buffers,
caches and allocator pools fill. So growth is measured from the end of a warm-up (5 min
of an hour-long soak, a third of a short run) to the end: the median RSS of the last
30 s over the median of the 30 s after the warm-up. Target: < 5 %.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

#: Growth allowed after the warm-up (fraction).
MAX_GROWTH = 0.05
WARMUP_S = 300.0
WINDOW_S = 30.0


def warmup_for(duration_s: float) -> float:
    """5 minutes, or a third of a run shorter than 15 minutes."""
    return min(WARMUP_S, duration_s / 3)


def growth(series: Sequence[Sequence[float]], warmup_s: float,
           window_s: float = WINDOW_S) -> dict[str, Any] | None:
    """From ``[[t_s, rss_mb], ...]``: RSS after the warm-up, at the end, and the growth.

    None when the run is too short to have both windows.
    """
    if not series:
        return None
    end = series[-1][0]
    window = min(window_s, max(1.0, (end - warmup_s) / 4))
    base = [mb for t, mb in series if warmup_s <= t <= warmup_s + window]
    last = [mb for t, mb in series if t >= end - window]
    if not base or not last or end - warmup_s < 2 * window:
        return None
    b, e = statistics.median(base), statistics.median(last)
    return {"after_warmup_mb": round(b, 1), "end_mb": round(e, 1),
            "growth_pct": round(100 * (e - b) / b, 2) if b > 0 else None,
            "warmup_s": warmup_s, "samples": len(series)}


def memory_report(resources: dict[str, dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """Per process growth (see :func:`growth`) and whether every process kept under
    :data:`MAX_GROWTH`."""
    warmup = warmup_for(duration_s)
    per = {name: growth(r.get("rss_mb") or [], warmup) for name, r in resources.items()}
    measured = [g["growth_pct"] for g in per.values() if g and g["growth_pct"] is not None]
    return {"per_process": per, "max_growth_pct": max(measured) if measured else None,
            "target_pct": 100 * MAX_GROWTH,
            "met": bool(measured) and max(measured) < 100 * MAX_GROWTH}
