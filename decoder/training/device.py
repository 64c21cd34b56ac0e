"""The torch device of ``cortexcast train`` and ``reconstruct --method inversion``."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:N'; ValueError for an unknown name or
    CUDA asked for where it is not available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available")
    return dev
