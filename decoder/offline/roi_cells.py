"""Images and cells from a registered, binned movie (for
:mod:`cortexcast.decoder.offline.roi_detection`).

Images: each pixel's time course (one value per bin) is spatially high-passed and
z-scored (:func:`normalise_bins`; the correlation of two pixels is then the mean of
their product), the local correlation images (:func:`local_correlation`), and the soma
size from the mean image (:func:`estimate_diameter`).

* **Seeds**: local maxima (within a quarter soma diameter, at least the 4 nearest
  pixels) of the sum of the robust z-scores of the correlation image and of the mean
  image sharpened by a Laplacian of Gaussian at the soma scale (an active cell stands
  out in the first, a bright one in the second, and the Laplacian separates touching
  somata that a plain high-pass merges); plus the local maxima of the correlation image
  alone that also stand out of the sharpened mean image (an active cell dimmer than a
  touching neighbour: on the simulated rig these add ~8 % recall at the same
  precision; maxima in the dark gaps between cells, or in the neuropil of a sparse
  field, would be false).
* **Footprint**: the seed's time course is correlated with every pixel of a disk of a
  soma radius + 1 px around it; pixels reaching ``pixel_threshold`` of the best
  neighbour's correlation (and ~3 SD above chance) and connected to the seed form the
  footprint, weighted by that correlation. Done twice, the second time with the
  footprint's weighted mean time course (less noisy than one pixel's).
* **Duplicates**: candidates are taken best seed first; one sharing more than
  ``max_overlap`` of its pixels with ROIs already kept is dropped, as is one smaller
  than a quarter of a soma (and 3 px).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from cortexcast.core.errors import CortexcastError
from cortexcast.core.rois import ROISet, from_pixel_lists

CHUNK_VALUES = 40_000_000
"""Float32 values gathered at once when growing footprints (bins x seeds x pixels)."""

Footprint = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(ypix, xpix, weights) of one ROI."""


class DetectionError(CortexcastError, ValueError):
    """The session cannot give ROIs (too few frames, no cells found, bad settings)."""


def highpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` (2-D) minus a smooth version (two box filters ~ a Gaussian of ``sigma``)."""
    size = max(3, int(round(np.sqrt(6 * sigma * sigma + 1))) | 1)
    smooth = ndimage.uniform_filter(img, size, mode="nearest")
    ndimage.uniform_filter(smooth, size, output=smooth, mode="nearest")
    return img - smooth


def normalise_bins(bins: np.ndarray, sigma: float) -> np.ndarray:
    """Bins spatially high-passed and z-scored over time per pixel (in place, float32)."""
    z = bins
    s1 = np.zeros(z.shape[1:], np.float64)
    s2 = np.zeros(z.shape[1:], np.float64)
    for k in range(z.shape[0]):
        z[k] = highpass(z[k], sigma)
        s1 += z[k]
        s2 += np.square(z[k], dtype=np.float64)
    n = max(z.shape[0], 1)
    mu = s1 / n
    inv = (1.0 / np.sqrt(np.maximum(s2 / n - mu * mu, 1e-12))).astype(np.float32)
    mu32 = mu.astype(np.float32)
    for k in range(z.shape[0]):
        z[k] -= mu32
        z[k] *= inv
    return z


def local_correlation(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(8-neighbour, 4-neighbour) mean correlation of each pixel with its neighbours;
    ``z`` is z-scored over axis 0."""
    t, h, w = z.shape
    acc8, cnt8 = np.zeros((h, w), np.float64), np.zeros((h, w), np.float64)
    acc4, cnt4 = np.zeros((h, w), np.float64), np.zeros((h, w), np.float64)
    for dy, dx in ((0, 1), (1, 0), (1, -1), (1, 1)):
        ys, yd = slice(0, h - dy), slice(dy, h)
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w),
                                                                    slice(0, w + dx))
        c = np.zeros((h - dy, w - abs(dx)), np.float64)
        for k0 in range(0, t, 64):  # in chunks: no (t, h, w) temporary
            a, b = z[k0:k0 + 64, ys, xs], z[k0:k0 + 64, yd, xd]
            c += np.einsum("tij,tij->ij", a, b, dtype=np.float32)
        c /= max(t, 1)
        for acc, cnt in ((acc8, cnt8), (acc4, cnt4)) if abs(dx) + dy == 1 else ((acc8, cnt8),):
            acc[ys, xs] += c
            acc[yd, xd] += c
            cnt[ys, xs] += 1
            cnt[yd, xd] += 1
    return (acc8 / cnt8).astype(np.float32), (acc4 / cnt4).astype(np.float32)


def estimate_diameter(mean: np.ndarray) -> float:
    """Soma diameter (px) from the mean image: the scale of strongest blob response.

    Scale-normalised Laplacian of Gaussian at sigmas 0.7..12 px; at each scale the mean
    response over the brightest local blobs; a disk of diameter d responds most at
    ``sigma = d / (2 sqrt 2)``.
    """
    img = mean.astype(np.float32)
    img = (img - img.mean()) / (img.std() or 1.0)
    sigmas = np.geomspace(0.7, 12.0, 16)
    score = []
    for s in sigmas:
        r = -(s * s) * ndimage.gaussian_laplace(img, s)
        peaks = r[ndimage.maximum_filter(r, size=max(3, int(2 * s) | 1)) == r]
        top = np.sort(peaks)[-max(10, peaks.size // 10):]
        score.append(float(top.mean()))
    best = int(np.argmax(score))
    return float(np.clip(2 * np.sqrt(2) * sigmas[best], 2.0, 60.0))


def robust_z(img: np.ndarray) -> np.ndarray:
    """(img - median) / (1.4826 MAD)."""
    med = float(np.median(img))
    mad = float(np.median(np.abs(img - med))) * 1.4826
    return (img - med) / (mad or float(img.std()) or 1.0)


def seeds_of(mean: np.ndarray, corr4: np.ndarray, diameter: float, threshold: float,
             active_threshold: float) -> np.ndarray:
    """(n, 2) int (y, x) seeds, best first (see the module docstring)."""
    functional = robust_z(corr4)
    sharp = robust_z(-ndimage.gaussian_laplace(mean.astype(np.float32), 0.28 * diameter))
    score = functional + sharp
    both = find_seeds(score, diameter, threshold)
    active = find_seeds(functional, diameter, active_threshold)
    active = active[sharp[active[:, 0], active[:, 1]] > threshold]
    pts = np.unique(np.concatenate([both, active]), axis=0)
    return pts[np.argsort(-score[pts[:, 0], pts[:, 1]], kind="stable")]


def find_seeds(score: np.ndarray, diameter: float, threshold: float) -> np.ndarray:
    """(n, 2) int (y, x) local maxima above ``threshold``, best first."""
    r = max(1.0, diameter / 4)
    half = int(r)
    dy, dx = np.mgrid[-half:half + 1, -half:half + 1]
    disk = dy * dy + dx * dx <= r * r
    peak = (ndimage.maximum_filter(score, footprint=disk, mode="nearest") == score) & (
        score > threshold)
    ys, xs = np.nonzero(peak)
    order = np.argsort(-score[ys, xs], kind="stable")
    return np.stack([ys[order], xs[order]], axis=1)


def _window(diameter: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Offsets (dy, dx) of the disk searched around a seed, and its half-width."""
    r = diameter / 2 + 1.0
    half = int(np.ceil(r))
    dy, dx = np.mgrid[-half:half + 1, -half:half + 1]
    keep = dy * dy + dx * dx <= r * r
    return dy[keep], dx[keep], half


def grow(z: np.ndarray, seeds: np.ndarray, diameter: float,
         pixel_threshold: float) -> list[Footprint]:
    """Per seed, its footprint (always holds the seed pixel)."""
    t, h, w = z.shape
    oy, ox, half = _window(diameter)
    k = oy.size
    centre = int(np.flatnonzero((oy == 0) & (ox == 0))[0])
    gy, gx = oy + half, ox + half
    floor = 3.0 / np.sqrt(t)  # ~3 SD of the correlation of two unrelated pixels
    out: list[Footprint] = []
    chunk = max(1, CHUNK_VALUES // (t * k))
    for c0 in range(0, len(seeds), chunk):
        s = seeds[c0:c0 + chunk]
        yy = s[:, 0, None] + oy[None, :]
        xx = s[:, 1, None] + ox[None, :]
        valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        traces = z[:, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # (t, n, k)
        traces *= valid[None]
        ref = traces[:, :, centre]
        for _ in range(2):
            c = np.einsum("tnk,tn->nk", traces, ref) / t
            c /= np.maximum(np.sqrt((ref * ref).mean(axis=0)), 1e-6)[:, None]
            c[~valid] = 0
            keep = _select(c, centre, gy, gx, 2 * half + 1, pixel_threshold, floor)
            wgt = np.where(keep, c, 0.0).astype(np.float32)
            ref = np.einsum("tnk,nk->tn", traces, wgt)
            ref /= np.maximum(wgt.sum(axis=1), 1e-6)[None]
        for j in range(len(s)):
            m = keep[j]
            out.append((yy[j, m], xx[j, m], np.maximum(c[j, m], 1e-3).astype(np.float32)))
    return out


def _select(c: np.ndarray, centre: int, gy: np.ndarray, gx: np.ndarray, side: int,
            frac: float, floor: float) -> np.ndarray:
    """(n, k) bool: pixels above threshold and connected (4-way) to the seed."""
    others = c.copy()
    others[:, centre] = -np.inf
    thr = np.maximum(frac * others.max(axis=1), floor)[:, None]
    above = c >= thr
    above[:, centre] = True
    keep = np.zeros_like(above)
    img = np.zeros((side, side), bool)
    for j in range(c.shape[0]):
        if above[j].all():
            keep[j] = True
            continue
        img[:] = False
        img[gy[above[j]], gx[above[j]]] = True
        lab, _ = ndimage.label(img)
        keep[j] = lab[gy, gx] == lab[gy[centre], gx[centre]]
    return keep


def dedupe(cands: list[Footprint], frame_shape: tuple[int, int], min_pixels: int,
           max_overlap: float) -> list[int]:
    """Indices of the candidates kept (earlier ones win)."""
    taken = np.zeros(frame_shape, bool)
    kept = []
    for i, (y, x, _) in enumerate(cands):
        if y.size < min_pixels or taken[y, x].mean() > max_overlap:
            continue
        taken[y, x] = True
        kept.append(i)
    return kept


def inner_region(shape: tuple[int, int], shifts: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels that lay inside the field in every registered frame.

    Registration repeats the edge pixels into the strip a shift uncovers; those copies
    correlate perfectly with their neighbours and would look like active cells.
    """
    h, w = shape
    inner = np.zeros(shape, bool)
    if shifts.size == 0:
        inner[:] = True
        return inner
    dy, dx = shifts[:, 0], shifts[:, 1]
    top, bottom = int(np.ceil(max(0.0, -dy.min()))), int(np.ceil(max(0.0, dy.max())))
    left, right = int(np.ceil(max(0.0, -dx.min()))), int(np.ceil(max(0.0, dx.max())))
    inner[top + 1:h - bottom - 1, left + 1:w - right - 1] = True
    return inner


def find_cells(z: np.ndarray, mean: np.ndarray, corr4: np.ndarray, diameter: float,
               settings: Any, inner: np.ndarray | None = None) -> ROISet:
    """The ROI set (with its neuropil model) of the cells in ``z``.

    ``settings``: a :class:`~cortexcast.decoder.offline.roi_detection.DetectionSettings`;
    ``inner``: where seeds may lie (:func:`inner_region`; None: anywhere).
    """
    h, w = mean.shape
    seeds = seeds_of(mean, corr4, diameter, settings.seed_threshold, settings.active_threshold)
    if inner is not None:
        seeds = seeds[inner[seeds[:, 0], seeds[:, 1]]]
    if seeds.size == 0:
        raise DetectionError("no cells found: no seed stands out of the correlation and mean "
                             "images; check --diameter and that the frames show cells")
    cands = grow(z, seeds, diameter, settings.pixel_threshold)
    area = np.pi * diameter * diameter / 4
    kept = dedupe(cands, (h, w), max(3, int(area / 4)), settings.max_overlap)
    if not kept:
        raise DetectionError("no cells found: every candidate was too small; check --diameter")
    return from_pixel_lists([cands[i][0] for i in kept], [cands[i][1] for i in kept],
                            [cands[i][2] for i in kept], (h, w), settings.block_px)
