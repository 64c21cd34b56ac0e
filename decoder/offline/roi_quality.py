"""How well detected ROIs match known ones: precision and recall at an IoU threshold.

Each footprint is binarised at :data:`BINARY_FRACTION` of its own peak weight (the faint
soft edge of a simulated soma, or the tail of a suite2p ``lam``, is not part of it), and
a detected ROI matches a true one when the intersection over union of those pixel sets
is at least ``iou`` (0.5, as in the suite2p and CaImAn benchmarks). Pairs are matched
one to one, best IoU first.

Detected ROIs live in the coordinates of the motion reference they were drawn on, which
is the brain at the average position of the frames that built it, not necessarily where
the simulator's true footprints are. :func:`match_rois` therefore first finds the global
(sub-pixel) offset between the two sets by phase correlation of their footprint images,
moves the true footprints by it (bilinear), and reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from cortexcast.core.rois import ROISet
from cortexcast.decoder.live.motion import MotionSettings, PhaseCorrelator

BINARY_FRACTION = 0.2
"""A footprint's pixels are those with at least this fraction of its peak weight."""


@dataclass(frozen=True)
class MatchResult:
    n_detected: int
    n_true: int
    n_matched: int
    offset: tuple[float, float]
    """(dy, dx) px the true footprints were moved by to line up with the detected ones."""
    matched_iou: np.ndarray
    """IoU of each matched pair."""
    true_index: np.ndarray
    """For each detected ROI, the true ROI it matched (-1: none)."""

    @property
    def precision(self) -> float:
        return self.n_matched / self.n_detected if self.n_detected else 0.0

    @property
    def recall(self) -> float:
        return self.n_matched / self.n_true if self.n_true else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def summary(self) -> str:
        return (f"precision {self.precision:.3f}, recall {self.recall:.3f}, F1 {self.f1:.3f} "
                f"({self.n_matched} of {self.n_detected} detected match one of {self.n_true} "
                f"true ROIs at IoU >= 0.5; median IoU of matches "
                f"{np.median(self.matched_iou) if self.matched_iou.size else 0:.2f}; "
                f"offset {self.offset[0]:+.2f}, {self.offset[1]:+.2f} px)")


def binarise(masks: sp.spmatrix, fraction: float = BINARY_FRACTION) -> sp.csr_matrix:
    """0/1 CSR: each row's pixels with at least ``fraction`` of the row's peak weight."""
    m = sp.csr_matrix(masks, dtype=np.float64, copy=True)
    m.sum_duplicates()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    peak = np.zeros(m.shape[0])
    np.maximum.at(peak, rows, m.data)
    keep = (m.data >= fraction * peak[rows]) & (m.data > 0)
    out = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], m.indices[keep])),
                        shape=m.shape)
    return out


def shift_masks(masks: sp.spmatrix, frame_shape: tuple[int, int], dy: float,
                dx: float) -> sp.csr_matrix:
    """Footprints moved by (dy, dx) px (bilinear splatting; pixels leaving the frame drop)."""
    h, w = frame_shape
    m = sp.coo_matrix(masks)
    y, x = np.divmod(m.col, w)
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = dy - iy, dx - ix
    rows, cols, vals = [], [], []
    for oy, wy in ((0, 1 - fy), (1, fy)):
        for ox, wx in ((0, 1 - fx), (1, fx)):
            if wy * wx == 0:
                continue
            yy, xx = y + iy + oy, x + ix + ox
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            rows.append(m.row[ok])
            cols.append(yy[ok] * w + xx[ok])
            vals.append(m.data[ok] * (wy * wx))
    out = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=m.shape)
    out.sum_duplicates()
    return out


def _image(masks: sp.spmatrix, frame_shape: tuple[int, int]) -> np.ndarray:
    """Sum of the peak-normalised footprints (an image of the ROI set)."""
    b = binarise(masks)
    return np.asarray(b.sum(axis=0), np.float32).reshape(frame_shape)


def find_offset(detected: ROISet, truth: ROISet, max_shift: float = 10.0) -> tuple[float, float]:
    """(dy, dx): the detected ROIs are the true ones moved by this much."""
    corr = PhaseCorrelator(_image(truth.masks, truth.frame_shape),
                           MotionSettings(max_shift_px=max_shift, taper_px=0.0))
    dy, dx, _ = corr.shift_of(_image(detected.masks, detected.frame_shape))
    return dy, dx


def match_rois(detected: ROISet, truth: ROISet, iou: float = 0.5,
               align: bool = True) -> MatchResult:
    """Match detected ROIs to true footprints one to one at IoU >= ``iou``."""
    if tuple(detected.frame_shape) != tuple(truth.frame_shape):
        raise ValueError(f"detected ROIs are on {detected.frame_shape} frames, the true ones on "
                         f"{truth.frame_shape}")
    offset = find_offset(detected, truth) if align else (0.0, 0.0)
    tmasks = shift_masks(truth.masks, truth.frame_shape, *offset) if align else truth.masks
    a, b = binarise(detected.masks), binarise(tmasks)
    inter = sp.coo_matrix(a @ b.T)
    na = np.asarray(a.sum(axis=1)).ravel()
    nb = np.asarray(b.sum(axis=1)).ravel()
    score = inter.data / (na[inter.row] + nb[inter.col] - inter.data)
    ok = score >= iou
    order = np.argsort(-score[ok], kind="stable")
    rows, cols, vals = inter.row[ok][order], inter.col[ok][order], score[ok][order]
    used_a = np.zeros(a.shape[0], bool)
    used_b = np.zeros(b.shape[0], bool)
    true_index = np.full(a.shape[0], -1, np.int64)
    ious = []
    for r, c, v in zip(rows, cols, vals):
        if used_a[r] or used_b[c]:
            continue
        used_a[r] = used_b[c] = True
        true_index[r] = c
        ious.append(v)
    return MatchResult(a.shape[0], b.shape[0], int(used_a.sum()), (float(offset[0]),
                       float(offset[1])), np.asarray(ious, np.float64), true_index)
