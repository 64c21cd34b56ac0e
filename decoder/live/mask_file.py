"""Reading a (36, 64) evaluation mask from ``.npy`` — shared by datasets, model cards and
the display, each of which reports a bad file with its own exception class."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_mask(path: str | Path, shape: tuple[int, int] | None = None,
              error: type[Exception] = ValueError) -> np.ndarray:
    """A 2-D bool mask from ``path``; ``error`` (naming the file) if unreadable or misshapen."""
    try:
        mask = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise error(f"{path}: cannot read mask: {exc}") from exc
    if mask.ndim != 2 or (shape is not None and mask.shape != tuple(shape)):
        raise error(f"{path}: mask is {mask.shape}, expected {shape or '2-D'}")
    return mask.astype(bool)
