"""Streamed per-column mean and standard deviation that skip NaN/inf (numpy only)."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def finite_moments(arrays: Iterable[np.ndarray | None], width: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column (mean, std, finite count) float64 over (rows, ``width``) arrays, one in
    memory at a time (float64 sums; NaN/inf skipped; None skipped). A column without a finite
    value has mean 0 and std 0."""
    s1, s2, count = np.zeros(width), np.zeros(width), np.zeros(width)
    for a in arrays:
        if a is None:
            continue
        a = np.asarray(a, np.float64)
        ok = np.isfinite(a)
        a = np.where(ok, a, 0.0)
        s1 += a.sum(0)
        s2 += (a * a).sum(0)
        count += ok.sum(0)
    safe = np.maximum(count, 1)
    mean = s1 / safe
    return mean, np.sqrt(np.maximum(s2 / safe - mean**2, 0.0)), count
