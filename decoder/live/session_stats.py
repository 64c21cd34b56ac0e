"""A session's per-neuron response statistics, as the live decoder reads them.

``[decoder] session_stats`` names an ``.npz`` (``resp_mean``/``resp_std``, or ``mean``/``std``)
or a dataset folder in the Sensorium 2023 layout. A folder's statistics are its
``meta/statistics/responses/all/{mean,std}.npy`` when present and of the right size, else one
streaming pass over the trials of the tiers whose every trial has responses.

The live decoder may not import the offline dataset reader
(:class:`cortexcast.decoder.offline.dataset.SensoriumDataset`), so the few facts about the
layout that both need live here, and the reader delegates to them: the statistics folders
(:func:`read_statistics`), a trial's length (:func:`first_nan`), withheld responses
(:func:`withheld`) and the streamed moments (:func:`moments`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from cortexcast.core.moments import finite_moments
from cortexcast.decoder.live.model_card import ModelError

STAT_SPELLINGS = (("videos", "video"), ("responses", "response"))


def read_statistics(root: Path, variable: str, error: type[Exception] = ModelError
                    ) -> dict[str, np.ndarray]:
    """``meta/statistics/<variable>/all/*.npy`` of folder ``root`` as {name: array}; {} if absent.

    Accepts ``responses``/``response`` and ``videos``/``video`` spellings, and folders with or
    without the ``all/`` level; an unreadable file raises ``error``.
    """
    base = Path(root) / "meta/statistics"
    names = next((g for g in STAT_SPELLINGS if variable in g), (variable,))
    for name in names:
        for folder in (base / name / "all", base / name):
            files = sorted(folder.glob("*.npy")) if folder.is_dir() else []
            if files:
                try:
                    return {f.stem: np.load(f, allow_pickle=False) for f in files}
                except (ValueError, OSError) as exc:
                    raise error(f"{folder}: cannot read statistics: {exc}") from exc
    return {}


def sized_stats(st: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) float64 of a statistics dict when it has both, each of ``n`` values."""
    if "mean" in st and "std" in st and np.size(st["mean"]) == n and np.size(st["std"]) == n:
        return (np.asarray(st["mean"], np.float64).ravel(),
                np.asarray(st["std"], np.float64).ravel())
    return None


def first_nan(trace: np.ndarray) -> int:
    """Index of the first NaN of a 1-D trace (its length if none): a trial's frame count."""
    nan = np.flatnonzero(np.isnan(trace))
    return int(nan[0]) if nan.size else int(trace.shape[0])


def withheld(resp: np.ndarray, length: int, probe: int = 64) -> bool:
    """True when a trial's (N, T) responses are placeholders: its first neuron all NaN, or its
    first ``probe`` neurons all exactly 0 (how a withheld test tier can be filled). Reads only
    those rows of a memory map."""
    first = np.asarray(resp[0, :length], dtype=np.float64)
    if np.isnan(first).all():
        return True
    block = np.asarray(resp[:probe, :length], dtype=np.float64)
    return bool(block.size) and not bool(np.any(block != 0))


def moments(trials: Iterable[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-neuron (mean, std, finite count) of (T, N) response arrays, one in memory at a time
    (:func:`cortexcast.core.moments.finite_moments`: float64 sums, NaN/inf skipped)."""
    return finite_moments(trials, n)


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ModelError(f"{path}: cannot read: {exc}") from exc


def _complete_tier_responses(root: Path) -> list[np.ndarray]:
    """(T, N) memory-mapped responses of every trial in a tier whose trials all have them
    (the trials ``SensoriumDataset`` would report under such a tier)."""
    try:
        tiers = np.load(root / "meta/trials/tiers.npy", allow_pickle=True).astype(str)
    except (ValueError, OSError) as exc:
        raise ModelError(f"{root}: cannot read meta/trials/tiers.npy: {exc}") from exc
    by_tier: dict[str, list[np.ndarray | None]] = {}
    for video in sorted((root / "data/videos").glob("*.npy")):
        if not video.stem.isdigit() or int(video.stem) >= len(tiers):
            continue
        length = first_nan(np.asarray(_load(video)[0, 0, :], np.float64))
        rp = root / "data/responses" / video.name
        resp = _load(rp) if rp.is_file() else None
        ok = resp is not None and resp.ndim == 2 and not withheld(resp, length)
        by_tier.setdefault(str(tiers[int(video.stem)]), []).append(
            resp[:, :length].T if ok else None)
    return [r for trials in by_tier.values() if all(t is not None for t in trials)
            for r in trials if r is not None]


def folder_session_stats(root: str | Path, n: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron response (mean, std) of a dataset folder (see the module docstring);
    ``n``: its neuron count when already known."""
    root = Path(root)
    if not (root / "meta/trials/tiers.npy").is_file():
        raise ModelError(f"{root} is not a dataset in the Sensorium 2023 layout (no "
                         "meta/trials/tiers.npy)")
    if n is None:
        first = next(iter(sorted((root / "data/responses").glob("*.npy"))), None)
        unit_ids = root / "meta/neurons/unit_ids.npy"
        n = (int(_load(first).shape[0]) if first is not None else
             int(_load(unit_ids).shape[0]) if unit_ids.is_file() else 0)
    stats = sized_stats(read_statistics(root, "responses"), n)
    if stats is not None:
        return stats
    mean, std, count = moments(_complete_tier_responses(root), n)
    if not count.any():
        raise ModelError(f"{root}: no responses to compute the session's statistics from")
    return mean, std


def read_session_stats(source: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) from an .npz (``resp_mean``/``resp_std``, or ``mean``/``std``) or a dataset
    folder (:func:`folder_session_stats`); None for an empty ``source``."""
    if not str(source):
        return None
    p = Path(source)
    if p.is_dir():
        return folder_session_stats(p)
    if not p.is_file():
        raise ModelError(f"session statistics {p} do not exist (an .npz or a dataset folder)")
    try:
        with np.load(p, allow_pickle=False) as z:
            for m, s in (("resp_mean", "resp_std"), ("mean", "std")):
                if m in z.files and s in z.files:
                    return np.asarray(z[m], np.float64), np.asarray(z[s], np.float64)
            found = z.files
    except (ValueError, OSError) as exc:
        raise ModelError(f"{p}: cannot read session statistics: {exc}") from exc
    raise ModelError(f"{p}: expected arrays resp_mean and resp_std, found {', '.join(found)}")
