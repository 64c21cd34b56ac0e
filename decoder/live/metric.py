"""The pixel correlation of Bauer et al. (eLife 2025), one implementation for everyone.

``evaluate``, the display and the benchmark all call :func:`pixel_correlation`:

1. smooth each reconstruction (not the target) with a Gaussian of
   ``sigma = (frames, px, px)``, default (0.5, 0.5, 0.5), over the whole clip;
2. keep frames ``start .. stop - 1`` (default 30..299), whatever of that
   range the clip has, so short clips still score;
3. one Pearson r per clip over every pixel x frame inside the evaluation mask;
4. average over clips.

NaN rules: pixel x frame pairs where either value is not finite (e.g. the NaN
padding after a Sensorium trial) are left out. A clip whose target is constant
over the kept pairs, or that has fewer than 2 of them, cannot be scored: its r
is NaN and it is left out of the mean. A constant *reconstruction* of a varying
target carries no information about it, and scores r = 0 (the limit of an
uninformative guess) rather than NaN, so a model cannot gain by going flat on
hard clips. The mean over clips is NaN only when no clip can be scored.

Pure numpy/scipy: no torch, cheap enough to call from the display.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

import numpy as np
from scipy.ndimage import gaussian_filter, label

Clips = Union[np.ndarray, Sequence[np.ndarray]]
"""One (T, H, W) array, a (clips, T, H, W) array, or a sequence of (T, H, W) arrays."""

SIGMA = (0.5, 0.5, 0.5)
START, STOP = 30, 300


def _as_clips(x: Clips, what: str) -> list[np.ndarray]:
    if isinstance(x, np.ndarray):
        if x.ndim == 3:
            return [x]
        if x.ndim == 4:
            return list(x)
        raise ValueError(f"{what}: expected (T, H, W) or (clips, T, H, W), got {x.shape}")
    clips = [np.asarray(c) for c in x]
    for i, c in enumerate(clips):
        if c.ndim != 3:
            raise ValueError(f"{what}[{i}]: expected (T, H, W), got {c.shape}")
    return clips


def clip_correlation(recon: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, *,
                     sigma: Sequence[float] = SIGMA, start: int = START,
                     stop: int = STOP) -> float:
    """Pixel correlation of one clip (see the module docstring for the NaN rules)."""
    r = np.asarray(recon, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if r.shape != t.shape:
        raise ValueError(f"reconstruction is {r.shape} but target is {t.shape}")
    if mask is not None and np.shape(mask) != r.shape[1:]:
        raise ValueError(f"mask is {np.shape(mask)} but frames are {r.shape[1:]}")
    if any(s > 0 for s in sigma):
        r = gaussian_filter(r, sigma=tuple(float(s) for s in sigma))
    r, t = r[start:stop], t[start:stop]
    if mask is not None:
        r, t = r[:, mask], t[:, mask]
    r, t = r.ravel(), t.ravel()
    ok = np.isfinite(r) & np.isfinite(t)
    if not ok.all():
        r, t = r[ok], t[ok]
    if r.size < 2 or np.ptp(t) == 0:
        return float("nan")
    if np.ptp(r) == 0:
        return 0.0
    rc, tc = r - r.mean(), t - t.mean()
    value = float(rc @ tc / np.sqrt((rc @ rc) * (tc @ tc)))
    return min(1.0, max(-1.0, value))


def per_clip_correlation(recons: Clips, targets: Clips, mask: np.ndarray | None = None, *,
                         sigma: Sequence[float] = SIGMA, start: int = START,
                         stop: int = STOP) -> np.ndarray:
    """One pixel correlation per clip, float64 (clips,); NaN where a clip cannot be scored.

    ``mask`` is a bool (H, W) evaluation mask; None scores every pixel.
    """
    rs, ts = _as_clips(recons, "recons"), _as_clips(targets, "targets")
    if len(rs) != len(ts):
        raise ValueError(f"{len(rs)} reconstructions but {len(ts)} targets")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError("the evaluation mask selects no pixel")
    out = np.empty(len(rs), dtype=np.float64)
    for i, (r, t) in enumerate(zip(rs, ts)):
        try:
            out[i] = clip_correlation(r, t, mask, sigma=sigma, start=start, stop=stop)
        except ValueError as exc:
            raise ValueError(f"clip {i}: {exc}") from exc
    return out


def pixel_correlation(recons: Clips, targets: Clips, mask: np.ndarray | None = None, *,
                      sigma: Sequence[float] = SIGMA, start: int = START,
                      stop: int = STOP) -> float:
    """Mean over clips of :func:`per_clip_correlation` (clips that cannot be scored left out)."""
    return mean_over_clips(
        per_clip_correlation(recons, targets, mask, sigma=sigma, start=start, stop=stop))


def mean_over_clips(per_clip: Sequence[float] | np.ndarray) -> float:
    """The average :func:`pixel_correlation` takes: clips that cannot be scored (NaN) left out.

    For callers that score clips one at a time (so as not to hold a whole tier).
    """
    per = np.asarray(per_clip, dtype=np.float64)
    scored = per[np.isfinite(per)]
    return float(scored.mean()) if scored.size else float("nan")


def estimate_eval_mask(clips: Iterable[tuple[np.ndarray, np.ndarray]], *, max_lag: int = 10,
                       max_neurons: int = 1000, bin_px: int = 2, fraction: float = 0.5,
                       smooth_px: float = 2.0, max_frames: int = 6000) -> np.ndarray:
    """Where the neurons' receptive fields lie, from the data alone: bool (H, W).

    Used when a dataset has no ``eval_mask.npy``. ``clips`` yields (responses
    (T, N), video (T, H, W)) pairs and is consumed lazily, until ``max_frames``
    frames are used. For each lag 0..max_lag, the correlation of every neuron's
    response at frame t + lag with every (``bin_px`` x ``bin_px`` binned) pixel
    at frame t; squared and summed over neurons it is a coverage map per lag.
    The maps of the lags that carry signal (contrast >= half the best lag's)
    are summed, upsampled, smoothed by ``smooth_px`` and thresholded at
    ``fraction`` of their range; specks under a tenth of the largest region
    are dropped. An evenly spaced subset of at most ``max_neurons`` neurons
    keeps memory ~ (max_lag + 1) x max_neurons x pixels / bin_px^2 x 8 bytes.

    Depends on the data only, not on a model, so every model of a dataset is
    scored with the same mask. Returns all True if nothing is learnable.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    lags = max_lag + 1
    acc: dict[str, np.ndarray] = {}
    used, shape, pick = 0, None, None
    for resp, vid in clips:
        v = np.asarray(vid, dtype=np.float64)
        if shape is None:
            shape = v.shape[1:]
            pick = np.unique(np.linspace(0, resp.shape[1] - 1, min(max_neurons, resp.shape[1]))
                             .round().astype(int))
        if resp.shape[0] != v.shape[0] or v.shape[1:] != shape:
            raise ValueError(f"responses {resp.shape} do not match video {v.shape}")
        n = v.shape[0] - max_lag
        if n < 2:
            continue
        r = np.nan_to_num(np.asarray(resp, dtype=np.float64)[:, pick])
        vb = np.nan_to_num(_bin(v, bin_px)[:n])
        rl = np.stack([r[lag: lag + n] for lag in range(lags)])     # (lags, n, neurons)
        # one 2-D product per lag: BLAS (a batched matmul of transposed views is not)
        parts = {"rv": np.stack([x.T @ vb for x in rl]), "r": rl.sum(1), "rr": (rl**2).sum(1),
                 "v": vb.sum(0), "vv": (vb**2).sum(0)}
        for key, value in parts.items():
            acc[key] = acc[key] + value if key in acc else value
        used += n
        if used >= max_frames:
            break
    if shape is None:
        raise ValueError("estimate_eval_mask needs at least one clip")
    if used < 2:
        return np.ones(shape, dtype=bool)
    mr, mv = acc["r"] / used, acc["v"] / used                       # (lags, k), (p,)
    cov = acc["rv"] / used - mr[:, :, None] * mv[None, None, :]
    sr = np.sqrt(np.maximum(acc["rr"] / used - mr**2, 0.0))
    sv = np.sqrt(np.maximum(acc["vv"] / used - mv**2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / (sr[:, :, None] * sv[None, None, :])
    maps = np.nan_to_num(corr**2).sum(1)                           # (lags, p)
    contrast = maps.max(1) - np.median(maps, axis=1)
    if not np.isfinite(contrast).all() or contrast.max() <= 0:
        return np.ones(shape, dtype=bool)
    hb, wb = -(-shape[0] // bin_px), -(-shape[1] // bin_px)
    energy = maps[contrast >= 0.5 * contrast.max()].sum(0).reshape(hb, wb)
    energy = np.kron(energy, np.ones((bin_px, bin_px)))[: shape[0], : shape[1]]
    if smooth_px > 0:
        energy = gaussian_filter(energy, smooth_px)
    lo, hi = float(energy.min()), float(energy.max())
    if not hi > lo:
        return np.ones(shape, dtype=bool)
    mask = energy >= lo + fraction * (hi - lo)
    labels, count = label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.1 * sizes.max()))
    return mask


def _bin(video: np.ndarray, px: int) -> np.ndarray:
    """(T, H, W) -> (T, ceil(H/px) * ceil(W/px)) block means (edge blocks padded by edge values)."""
    if px <= 1:
        return video.reshape(video.shape[0], -1)
    t, h, w = video.shape
    hb, wb = -(-h // px), -(-w // px)
    v = np.pad(video, ((0, 0), (0, hb * px - h), (0, wb * px - w)), mode="edge")
    return v.reshape(t, hb, px, wb, px).mean(axis=(2, 4)).reshape(t, -1)
