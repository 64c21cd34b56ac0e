"""Regions of interest: which pixels belong to which neuron, and its neuropil.

An :class:`ROISet` holds two sparse matrices over the flattened frame
(row-major, ``pixel = y * width + x``):

* ``masks``     (N, H*W) – soma weights of each neuron, each row sums to 1;
* ``neuropil``  (N, H*W) – weights of each neuron's surrounding neuropil
  (somata excluded), each row sums to 1.

To keep the per-frame cost low the neuropil is factored into a block-mean
image and a bilinear interpolation from block centres to each neuron
(``neuropil = interp @ blocks``), so it costs ~2 sparse products over the
frame rather than one with thousands of pixels per neuron.

Saved as ``.npz`` (``cortexcast`` ROI format). ROIs from suite2p's ``stat.npy``
and CaImAn plug in by producing an ``ROISet`` (see :func:`from_pixel_lists` and
:mod:`cortexcast.decoder.live.roi_loaders`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from cortexcast.core.errors import CortexcastError

FORMAT = "cortexcast-rois-1"


class ROIError(CortexcastError, ValueError):
    """An ROI file is missing, malformed, or does not fit the frames."""


#: What reading a damaged or truncated ``.npz`` raises (zipfile, numpy's header parser,
#: a missing array, a short read).
UNREADABLE = (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError)


def damaged(path: Path, exc: BaseException, what: str = "ROI file") -> ROIError:
    """The ROIError for a file whose bytes cannot be read back (cut short, overwritten)."""
    detail = f"no array {exc}" if isinstance(exc, KeyError) else (str(exc) or type(exc).__name__)
    return ROIError(f"{path}: cannot read the {what}: it is damaged or truncated ({detail}); "
                    "copy it again or make it again")


@dataclass(frozen=True)
class ROISet:
    masks: sp.csr_matrix
    blocks: sp.csr_matrix  # (n_blocks, H*W) mean over non-soma pixels of each block
    interp: sp.csr_matrix  # (N, n_blocks) bilinear weights from block centres
    frame_shape: tuple[int, int]
    centroids: np.ndarray  # (N, 2) float32, (y, x) pixels
    source: str = ""  # the file the ROIs came from, named in errors

    @property
    def n_neurons(self) -> int:
        return self.masks.shape[0]

    def check_frame(self, shape: Sequence[int]) -> None:
        if tuple(shape) != tuple(self.frame_shape):
            where = f" ({self.source})" if self.source else ""
            raise ROIError(
                f"frames are {tuple(shape)} but the ROIs{where} were drawn on "
                f"{tuple(self.frame_shape)} frames; use the ROI file made for this field of view"
            )


def _row_normalise(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / sums) @ m, dtype=np.float32)


def from_pixel_lists(
    ypix: Sequence[np.ndarray],
    xpix: Sequence[np.ndarray],
    weights: Sequence[np.ndarray] | None,
    frame_shape: tuple[int, int],
    block_px: int = 32,
) -> ROISet:
    """Build an ROISet from per-neuron pixel lists (suite2p ``stat`` style)."""
    h, w = frame_shape
    rows, cols, vals, cents = [], [], [], []
    for i, (yy, xx) in enumerate(zip(ypix, xpix)):
        yy = np.asarray(yy, dtype=np.int64)
        xx = np.asarray(xx, dtype=np.int64)
        if yy.size == 0:
            raise ROIError(f"ROI {i} has no pixels")
        if yy.min() < 0 or xx.min() < 0 or yy.max() >= h or xx.max() >= w:
            raise ROIError(f"ROI {i} has pixels outside the {h}x{w} frame")
        lam = np.ones(yy.size) if weights is None else np.asarray(weights[i], dtype=np.float64)
        rows.append(np.full(yy.size, i))
        cols.append(yy * w + xx)
        vals.append(lam)
        cents.append((np.average(yy, weights=lam), np.average(xx, weights=lam)))
    n = len(rows)
    masks = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, h * w)
    )
    masks.sum_duplicates()
    return from_masks(_row_normalise(masks), frame_shape, np.asarray(cents, np.float32), block_px)


def from_masks(masks: sp.csr_matrix, frame_shape: tuple[int, int],
               centroids: np.ndarray, block_px: int = 32) -> ROISet:
    """Add the block-neuropil model to soma masks."""
    h, w = frame_shape
    soma = np.zeros(h * w, bool)
    soma[masks.indices] = True
    by, bx = -(-h // block_px), -(-w // block_px)
    pix = np.arange(h * w)
    block_of = (pix // w // block_px) * bx + (pix % w) // block_px
    keep = ~soma
    blocks = sp.csr_matrix(
        (np.ones(keep.sum(), np.float32), (block_of[keep], pix[keep])), shape=(by * bx, h * w)
    )
    blocks = _row_normalise(blocks)
    # Bilinear interpolation from block centres to neuron centroids.
    gy = np.clip((centroids[:, 0] - block_px / 2 + 0.5) / block_px, 0, by - 1)
    gx = np.clip((centroids[:, 1] - block_px / 2 + 0.5) / block_px, 0, bx - 1)
    y0 = np.minimum(np.floor(gy).astype(int), max(by - 2, 0))
    x0 = np.minimum(np.floor(gx).astype(int), max(bx - 2, 0))
    fy, fx = gy - y0, gx - x0
    n = masks.shape[0]
    rows, cols, vals = [], [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy = np.minimum(y0 + dy, by - 1)
            xx = np.minimum(x0 + dx, bx - 1)
            rows.append(np.arange(n))
            cols.append(yy * bx + xx)
            vals.append(wy * wx)
    interp = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, by * bx)
    )
    interp.sum_duplicates()
    return ROISet(sp.csr_matrix(masks, dtype=np.float32), blocks,
                  sp.csr_matrix(interp, dtype=np.float32), (h, w), centroids.astype(np.float32))


def save_rois(path: str | Path, rois: ROISet, reference: np.ndarray | None = None,
              **extra: np.ndarray) -> None:
    """Write ``rois`` as a cortexcast ROI ``.npz``.

    ``reference``: the motion reference image (H x W) the ROIs were drawn on, saved as
    float32 under key ``reference`` so the decoder's motion correction aligns frames to
    exactly that image (``cortexcast.decoder.live.motion.load_reference`` reads it).
    ``extra``: further named arrays for the operator (e.g. the mean and correlation
    images of ``cortexcast rois``); :func:`load_rois` ignores them.
    """
    m = rois.masks
    arrays: dict[str, np.ndarray] = {}
    if reference is not None:
        ref = np.asarray(reference, np.float32)
        if ref.shape != tuple(rois.frame_shape):
            raise ROIError(f"{path}: motion reference is {ref.shape}, the ROIs' frames are "
                           f"{tuple(rois.frame_shape)}; save the reference of this field of view")
        arrays["reference"] = ref
    reserved = {"format", "data", "indices", "indptr", "shape", "frame_shape", "centroids",
                "reference"}
    for key, value in extra.items():
        if key in reserved:
            raise ValueError(f"save_rois: {key!r} is a reserved key of the ROI file")
        arrays[key] = np.asarray(value)
    np.savez_compressed(
        path, format=FORMAT, data=m.data, indices=m.indices, indptr=m.indptr,
        shape=np.asarray(m.shape), frame_shape=np.asarray(rois.frame_shape),
        centroids=rois.centroids, **arrays,
    )


def load_reference_of(path: str | Path) -> np.ndarray | None:
    """The motion reference saved with a cortexcast ROI file, or None if it has none."""
    p = Path(path)
    try:
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            fmt = str(z["format"]) if "format" in z.files else None
            ref = np.asarray(z["reference"], np.float32) if "reference" in z.files else None
    except ROIError:
        raise
    except UNREADABLE as exc:
        raise damaged(p, exc) from exc
    if fmt != FORMAT:
        raise ROIError(f"{p}: not a cortexcast ROI file (format {fmt!r})")
    return ref


def load_rois(path: str | Path, block_px: int = 32) -> ROISet:
    p = Path(path)
    if not p.exists():
        raise ROIError(f"ROI file {p} does not exist")
    try:
        # The file is opened here, not by np.load: np.load leaks its handle when the
        # zip directory is unreadable (a truncated file).
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            if str(z["format"]) != FORMAT:
                raise ROIError(f"{p}: not a cortexcast ROI file (format {z['format']!r})")
            masks = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            frame_shape = tuple(int(v) for v in z["frame_shape"])
            centroids = z["centroids"]
    except ROIError:
        raise
    except UNREADABLE as exc:
        raise damaged(p, exc) from exc
    if masks.shape[1] != frame_shape[0] * frame_shape[1]:
        raise ROIError(f"{p}: masks have {masks.shape[1]} columns, frame is {frame_shape}")
    return from_masks(masks, frame_shape, centroids, block_px)  # type: ignore[arg-type]
