"""The behaviour vocabulary: which variables, in which order, and how missing data reads.

A behaviour row is ``[pupil, running, pupil_x, pupil_y]`` (:data:`BEHAVIOR_KEYS`): a
dataset's ``behavior`` file (pupil dilation, running speed) followed by its ``pupil_center``
file (eye x, y). This is the order the ONNX models' ``behavior`` input takes, the order the
live rig's sync events are read in, and the order of ``behavior_mean``/``behavior_std`` in
a model's card and ``.norm.npz``.

Missing data is NaN, per variable: an absent file leaves its two columns NaN, a file short
of rows leaves the rows after its end NaN, and NaN values in a file stay NaN. Whoever feeds a
model fills NaN with the training mean (:func:`fill_missing`), which is what the live
decoder does; statistics skip NaN (:func:`behavior_statistics`). Keeping the present
variables of a partly missing trial is why NaN is used rather than dropping the whole row.

Ground layer: numpy and :mod:`cortexcast.core.moments` only.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from cortexcast.core.moments import finite_moments

BEHAVIOR_KEYS = ("pupil", "running", "pupil_x", "pupil_y")
"""Order of the behaviour vector: the dataset's ``behavior`` rows, then ``pupil_center``."""
N_BEHAVIOR = len(BEHAVIOR_KEYS)
MIN_STD = 1e-6
"""A standard deviation at or below this is replaced by 1 (a constant variable)."""


def behavior_rows(behavior: np.ndarray | None, pupil_center: np.ndarray | None,
                  length: int) -> np.ndarray | None:
    """(``length``, 4) float32 ``[pupil, running, pupil_x, pupil_y]`` from a trial's (T, 2)
    behaviour and (T, 2) pupil centre (either may be None); NaN where a file is absent, short
    of rows or of columns. None when both are absent."""
    if behavior is None and pupil_center is None:
        return None
    out = np.full((length, N_BEHAVIOR), np.nan, np.float32)
    for col, a in ((0, behavior), (2, pupil_center)):
        if a is not None:
            a = np.asarray(a)
            k = min(2, a.shape[1]) if a.ndim == 2 else 0
            out[: min(len(a), length), col: col + k] = a[:length, :k]
    return out


def complete(rows: np.ndarray | None) -> bool:
    """True when every variable of ``rows`` has at least one finite value (all four present)."""
    return rows is not None and bool(np.isfinite(rows).any(axis=0).all())


def fill_missing(rows: np.ndarray | None, mean: np.ndarray, length: int | None = None
                 ) -> np.ndarray:
    """NaN (or ``rows`` None: ``length`` rows of it) -> ``mean``, so missing values add nothing."""
    mean = np.asarray(mean, np.float32)
    if rows is None:
        if length is None:
            raise ValueError("fill_missing needs a length when there are no rows")
        return np.repeat(mean[None], length, axis=0)
    return np.where(np.isfinite(rows), rows, mean[None]).astype(np.float32)


def behavior_statistics(rows: Iterable[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (4,) float32 of behaviour rows, NaN skipped per variable (float64 sums).

    A variable with no finite value gets mean 0 and std 1; a std <= :data:`MIN_STD` is 1.
    """
    mean, std, _ = finite_moments(rows, N_BEHAVIOR)
    return mean.astype(np.float32), np.where(std > MIN_STD, std, 1.0).astype(np.float32)
