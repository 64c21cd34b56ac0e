"""The fingerprint of an ROI set: which neurons a model was trained on.

A decoder's input is one number per ROI, in ROI order. A model trained on one
ROI set gives nonsense on another with the same count (another session's
detection, another field of view), so the model card records the ROI set's
fingerprint and the live decoder and ``doctor`` compare it with the ROIs they
load.

The fingerprint hashes the soma footprints only (``ROISet.masks``: CSR
structure and weights) and the frame shape; the neuropil model is derived from
them. Weights are float32 rounded to 1e-6 before hashing, so a save/load round
trip, or a suite2p / CaImAn import read again, gives the same hash.

A dataset made from a session (``cortexcast export``) records the fingerprint
and the motion reference's hash in ``meta/rois.json`` (:data:`DATASET_ROI_META`);
``cortexcast train`` copies that into the card's ``extra["rois"]``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cortexcast.core.errors import CortexcastError
from cortexcast.core.rois import ROISet

DATASET_ROI_META = "meta/rois.json"
"""Relative to a dataset root: the ROI set (and motion reference) its responses came from."""
FINGERPRINT_VERSION = "cortexcast-roi-fingerprint-1"
WEIGHT_QUANTUM = 1e-6
"""Footprint weights are rounded to this before hashing (float32 noise is far below it)."""


class RoiMetaError(CortexcastError, ValueError):
    """A dataset's ``meta/rois.json`` is unreadable or malformed."""


def _canonical(masks: sp.spmatrix) -> sp.csr_matrix:
    """Sorted indices, no duplicates, no stored zeros: one CSR form per footprint set."""
    m = sp.csr_matrix(masks, dtype=np.float64, copy=True)
    m.sum_duplicates()  # also sorts the indices
    m.eliminate_zeros()
    m.sort_indices()
    return m


def roi_fingerprint(rois: ROISet) -> dict[str, Any]:
    """``{"count", "frame_shape": [h, w], "sha256"}`` of ``rois``' footprints.

    ``sha256`` covers the number of ROIs, the frame shape, each ROI's pixels (in
    ROI order) and their weights rounded to :data:`WEIGHT_QUANTUM`.
    """
    m = _canonical(rois.masks)
    h, w = (int(v) for v in rois.frame_shape)
    # float32 first: the ROI file stores float32, so a float64 import hashes as its reload does
    weights = np.rint(m.data.astype(np.float32).astype(np.float64) / WEIGHT_QUANTUM)
    digest = hashlib.sha256()
    digest.update(FINGERPRINT_VERSION.encode())
    digest.update(np.asarray([m.shape[0], m.shape[1], h, w], "<i8").tobytes())
    digest.update(np.asarray(m.indptr, "<i8").tobytes())
    digest.update(np.asarray(m.indices, "<i8").tobytes())
    digest.update(weights.astype("<i8").tobytes())
    return {"count": int(m.shape[0]), "frame_shape": [h, w], "sha256": digest.hexdigest()}


def reference_sha256(reference: np.ndarray | None) -> str | None:
    """sha256 of a motion reference image as C-ordered float32 bytes (None for None)."""
    if reference is None:
        return None
    ref = np.ascontiguousarray(np.asarray(reference, dtype="<f4"))
    digest = hashlib.sha256()
    digest.update(np.asarray(ref.shape, "<i8").tobytes())
    digest.update(ref.tobytes())
    return digest.hexdigest()


def fingerprint_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, ``expected`` first, in words (empty: same)."""
    out = []
    if int(expected.get("count", -1)) != int(actual.get("count", -1)):
        out.append(f"{expected.get('count')} vs {actual.get('count')} ROIs")
    ef, af = expected.get("frame_shape"), actual.get("frame_shape")
    if ef is not None and af is not None and [int(v) for v in ef] != [int(v) for v in af]:
        out.append(f"{ef[0]}x{ef[1]} vs {af[0]}x{af[1]} frames")
    if expected.get("sha256") != actual.get("sha256"):
        out.append(f"footprints {str(expected.get('sha256'))[:12]} vs "
                   f"{str(actual.get('sha256'))[:12]}")
    return out


def write_dataset_roi_meta(root: str | Path, rois: ROISet, *, rois_file: str,
                           reference: np.ndarray | None) -> Path:
    """Write ``root/meta/rois.json``: the ROI set's fingerprint, file name and reference hash."""
    p = Path(root) / DATASET_ROI_META
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "fingerprint": roi_fingerprint(rois),
        "rois_file": str(rois_file),
        "reference_sha256": reference_sha256(reference),
        "reference_shape": None if reference is None else [int(v) for v in np.shape(reference)],
    }
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(p)
    return p


def read_dataset_roi_meta(root: str | Path) -> dict[str, Any] | None:
    """``root/meta/rois.json`` as written by :func:`write_dataset_roi_meta`, or None if absent.

    Raises :class:`RoiMetaError` when the file exists but is not such a record.
    """
    p = Path(root) / DATASET_ROI_META
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RoiMetaError(f"{p}: not readable JSON ({exc}); re-run `cortexcast export`") from exc
    fp = meta.get("fingerprint") if isinstance(meta, dict) else None
    if not isinstance(fp, dict) or not {"count", "frame_shape", "sha256"} <= set(fp):
        raise RoiMetaError(f"{p}: no ROI fingerprint (count, frame_shape, sha256) in it; "
                           "re-run `cortexcast export`")
    meta.setdefault("rois_file", "")
    meta.setdefault("reference_sha256", None)
    meta.setdefault("reference_shape", None)
    return meta
