"""Where the simulated neurons are: real cortical coordinates -> pixels -> soma footprints.

The neurons of a Sensorium 2023 mouse were imaged in 10 planes 25 µm apart,
each ~630 µm across. The simulated frame shows those planes side by side as
a mosaic of square tiles (as ScanImage does for multi-ROI/multi-plane
acquisitions), each neuron at its real (x, y) inside its plane's tile.

* fewer neurons than the mouse has: a random subset, from as few planes as
  hold them (so they keep a realistic density);
* more: the field of view is repeated as further planes below the real
  ones, with a few µm of jitter.

A soma is an ellipse of ``soma_diameter_um`` (±12 %) at the tile's µm/px,
at least ~2.4 px across, with a soft edge and, when large enough, a darker
nucleus (GCaMP is cytosolic). The footprints are the ground-truth ROIs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from cortexcast.daq.sim.meta import MouseMeta

MIN_RADIUS_PX = 1.2
PLANE_REPEAT_UM = 250.0  # depth added per repetition of the field of view


@dataclass(frozen=True)
class Layout:
    coords_um: np.ndarray  # (N, 3) float64: cortical x, y, z (µm)
    source_index: np.ndarray  # (N,) index of the real neuron each one copies
    tile: np.ndarray  # (N,) mosaic tile (= imaging plane) of each neuron
    centre_px: np.ndarray  # (N, 2) float64 (y, x) footprint centre in the frame
    radius_px: np.ndarray  # (N,)
    um_per_px: float
    tile_px: int
    n_tiles: int
    frame_shape: tuple[int, int]
    footprints: sp.csr_matrix  # (N, H*W) float32 weights, peak ~1

    @property
    def n_neurons(self) -> int:
        return int(self.coords_um.shape[0])


def mosaic_grid(n_tiles: int, height: int, width: int) -> tuple[int, int, int]:
    """(rows, cols, tile side in px) of the square-tile grid with the largest tiles."""
    best = (1, n_tiles, 0)
    for cols in range(1, n_tiles + 1):
        rows = -(-n_tiles // cols)
        side = min(height // rows, width // cols)
        if side > best[2]:
            best = (rows, cols, side)
    return best


def _choose_neurons(meta: MouseMeta, n: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source index, plane number, coords µm) of n neurons, sorted by plane."""
    coords = meta.coords
    n0 = coords.shape[0]
    zs = np.unique(coords[:, 2])
    plane_of = np.searchsorted(zs, coords[:, 2])
    if n <= n0:
        per_plane = np.bincount(plane_of, minlength=zs.size)
        order = rng.permutation(zs.size)
        chosen: list[int] = []
        for p in order:
            chosen.append(int(p))
            if per_plane[chosen].sum() >= n:
                break
        cand = np.flatnonzero(np.isin(plane_of, chosen))
        src = np.sort(rng.choice(cand, size=n, replace=False))
        rank = {p: i for i, p in enumerate(sorted(chosen))}
        plane = np.array([rank[int(p)] for p in plane_of[src]])
        xyz = coords[src].copy()
    else:
        # Repeat the field of view as further planes; each repetition holds at most 1.25x the
        # real neurons (the extra ones are new cells placed near real ones).
        copies = -(-n // int(1.25 * n0))
        counts = np.full(copies, n // copies)
        counts[: n % copies] += 1
        srcs, planes, xyzs = [], [], []
        for c, k in enumerate(counts):
            if k <= n0:
                s_c = rng.choice(n0, size=k, replace=False)
                extra = np.zeros(k, bool)
            else:
                s_c = np.concatenate([np.arange(n0), rng.choice(n0, size=k - n0, replace=False)])
                extra = np.arange(k) >= n0
            x_c = coords[s_c].copy()
            x_c[:, :2] += rng.normal(0.0, 4.0, size=(k, 2)) * (c > 0)
            x_c[extra, :2] += rng.normal(0.0, 12.0, size=(int(extra.sum()), 2))
            x_c[:, 2] += c * PLANE_REPEAT_UM
            srcs.append(s_c)
            planes.append(c * zs.size + plane_of[s_c])
            xyzs.append(x_c)
        src, xyz = np.concatenate(srcs), np.concatenate(xyzs)
        _, plane = np.unique(np.concatenate(planes), return_inverse=True)
    order = np.lexsort((src, plane))
    return src[order], plane[order], xyz[order]


def build_layout(meta: MouseMeta, n_neurons: int, frame_shape: tuple[int, int],
                 soma_diameter_um: float, rng: np.random.Generator) -> Layout:
    h, w = frame_shape
    src, plane, xyz = _choose_neurons(meta, n_neurons, rng)
    n_tiles = int(plane.max()) + 1
    rows, cols, side = mosaic_grid(n_tiles, h, w)
    lo = meta.coords[:, :2].min(axis=0)
    span_xy = meta.coords[:, :2].max(axis=0) - lo + 60.0  # + room for jittered cells
    span = float(span_xy.max())
    # µm per px and the margin that keeps every footprint inside its tile
    upp = span / max(side, 1)
    for _ in range(3):
        r_max = max(MIN_RADIUS_PX, soma_diameter_um / 2 / upp) * 1.12 * 1.25
        margin = math.ceil(r_max) + 1
        usable = side - 2 * margin
        if usable < 4:
            raise ValueError(
                f"a {h}x{w} frame is too small for {n_neurons} neurons in {n_tiles} planes "
                f"(tiles of {side} px); use a larger frame or fewer neurons"
            )
        upp = span / usable
    oy = (h - rows * side) // 2
    ox = (w - cols * side) // 2
    ty, tx = np.divmod(plane, cols)
    pos = np.clip(xyz[:, :2] - lo + 30.0, 0.0, span_xy) / upp  # (x, y) px inside the usable area
    offset = (usable - (span_xy / upp)) / 2  # centre the smaller extent
    cy = oy + ty * side + margin + offset[1] + pos[:, 1]
    cx = ox + tx * side + margin + offset[0] + pos[:, 0]
    centre = np.stack([cy, cx], axis=1)
    radius = np.maximum(MIN_RADIUS_PX, soma_diameter_um / 2 / upp
                        * np.clip(rng.lognormal(0.0, 0.1, n_neurons), 0.88, 1.12))
    fp = _footprints(centre, radius, frame_shape, rng)
    return Layout(xyz, src, plane, centre, radius, float(upp), int(side), n_tiles,
                  (int(h), int(w)), fp)


def _footprints(centre: np.ndarray, radius: np.ndarray, frame_shape: tuple[int, int],
                rng: np.random.Generator) -> sp.csr_matrix:
    """Soft elliptical somata, all evaluated at once on one K×K patch per neuron."""
    h, w = frame_shape
    n = centre.shape[0]
    ratio = rng.uniform(1.0, 1.25, n)  # axis ratio
    angle = rng.uniform(0.0, np.pi, n)
    a = radius * np.sqrt(ratio)  # semi-axes with area pi r^2
    b = radius / np.sqrt(ratio)
    half = math.ceil(float(a.max()) * 1.15) + 1
    d = np.arange(-half, half + 1)
    iy = np.rint(centre[:, 0]).astype(np.int64)
    ix = np.rint(centre[:, 1]).astype(np.int64)
    py = (iy[:, None, None] + d[None, :, None])  # (N, K, 1)
    px = (ix[:, None, None] + d[None, None, :])  # (N, 1, K)
    ry = py - centre[:, 0, None, None]
    rx = px - centre[:, 1, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (rx * c + ry * s) / a[:, None, None]
    v = (-rx * s + ry * c) / b[:, None, None]
    dist = np.sqrt(u * u + v * v)
    edge = 0.6 / radius[:, None, None]  # ~0.6 px soft edge
    wgt = np.clip((1.0 + edge - dist) / (2 * edge), 0.0, 1.0)
    big = (radius >= 3.5)[:, None, None]
    wgt = np.where(big, wgt * (1.0 - 0.55 * np.exp(-(dist / 0.45) ** 2)), wgt)
    py_b, px_b = np.broadcast_arrays(py, px)
    keep = (wgt > 0.03) & (py_b >= 0) & (py_b < h) & (px_b >= 0) & (px_b < w)
    rows = np.broadcast_to(np.arange(n)[:, None, None], wgt.shape)[keep]
    cols = (py_b * w + px_b)[keep]
    m = sp.csr_matrix((wgt[keep].astype(np.float32), (rows, cols)), shape=(n, h * w))
    m.sum_duplicates()
    return m
