"""A streaming Schmitt-trigger edge detector for sampled logic-ish signals (pure numpy)."""

from __future__ import annotations

import numpy as np


class EdgeDetector:
    """Finds transitions of a noisy two-level signal, block by block.

    The state goes high when the signal rises above ``threshold + hysteresis/2``
    and low when it falls below ``threshold - hysteresis/2``; in between it
    keeps its state, so noise around the threshold adds no edges. An edge is
    reported at the first sample of the new state, as a global sample number
    (blocks must be fed in order; the state carries over). The first sample
    fixes the initial state without an edge.
    """

    def __init__(self, threshold: float, hysteresis: float = 0.0) -> None:
        if hysteresis < 0:
            raise ValueError("hysteresis must be >= 0")
        self.upper = threshold + hysteresis / 2
        self.lower = threshold - hysteresis / 2
        self.state: bool | None = None

    def reset(self) -> None:
        """Forget the state (after a gap in the samples)."""
        self.state = None

    def __call__(self, x: np.ndarray, first_sample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(rising, falling) edge sample numbers within ``x`` (1-D), offset by ``first_sample``."""
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty
        hi, lo = x > self.upper, x < self.lower
        decided = hi | lo
        if self.state is None:
            self.state = bool(hi[decided][0]) if decided.any() else False
        idx = np.where(decided, np.arange(x.size), -1)
        np.maximum.accumulate(idx, out=idx)
        state = np.where(idx >= 0, hi[np.maximum(idx, 0)], self.state)
        prev = np.concatenate(([self.state], state[:-1]))
        self.state = bool(state[-1])
        rising = np.flatnonzero(state & ~prev) + first_sample
        falling = np.flatnonzero(~state & prev) + first_sample
        return rising.astype(np.int64), falling.astype(np.int64)
