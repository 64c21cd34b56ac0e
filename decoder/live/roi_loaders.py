"""ROI masks from other tools' output files -> :class:`cortexcast.core.rois.ROISet`.

Supported (``load_roi_set(path, fmt)``, ``fmt="auto"`` picks by path):

* **cortexcast** ``.npz`` (``cortexcast.core.rois.save_rois``; the simulator's ground truth).
* **suite2p** (``fmt="suite2p"``): a plane folder or any file in it. Two layouts:
  suite2p >= 1.0 (``stat.npy``, ``iscell.npy``, ``db.npy`` (``Ly``, ``Lx``, ``dy``/``dx``,
  the raw ``meanImg``), ``settings.npy``, ``reg_outputs.npy`` (the registered ``meanImg``,
  ``refImg``, offsets), ``detect_outputs.npy``; written by ``suite2p/pipeline_s2p.py``
  and ``suite2p/io/save.py:combined``), and the older one (``stat.npy``, ``iscell.npy``,
  ``ops.npy`` holding all of it). A plane folder with ``db.npy`` is read in the current
  layout even when suite2p also saved an ``ops.npy`` (``save_ops_orig``).
  ``stat`` is an object array of dicts; each ROI's
  ``ypix``/``xpix``/``lam`` become its mask, pixels flagged in ``overlap`` are left out
  (as suite2p's own extraction does unless ``allow_overlap``), and only ROIs with
  ``iscell[:, 0] == 1`` are kept (all, with a warning, when ``iscell.npy`` is absent).
  The frame size is ``Ly, Lx`` of ``db.npy`` (or ``ops.npy``); the motion reference
  (:func:`suite2p_mean_image`) is ``meanImg`` of ``reg_outputs.npy`` (or of ``ops.npy``;
  of ``db.npy`` where registration did not run).
  Multi-plane: the ``combined`` folder, or the parent ``suite2p`` folder: its
  ``combined/`` if present, else ``plane0, plane1, ...`` laid out as suite2p's combined
  view does (each plane at its ``dy, dx``, or, without those, on
  suite2p's grid of ``ceil(sqrt(Ly*Lx*n)/Lx)`` columns); neurons are numbered plane by
  plane. The incoming frames must show exactly that layout (one frame, planes side by
  side, as the simulator's mosaic does); a volume sent plane by plane is not supported.
* **CaImAn** (``fmt="caiman"``): the HDF5 file ``cnm.save()`` writes. ``estimates/A`` is
  a sparse (pixels x components) CSC matrix stored as a group ``data``/``indices``/
  ``indptr``/``shape``; pixel index ``p`` is Fortran-ordered over ``dims = (d1, d2)``:
  ``y = p % d1``, ``x = p // d1``. Only the accepted components
  (``estimates/idx_components``) are kept when that was saved. 3-D (volumetric) ``dims``
  are not supported.

suite2p's ``.npy`` files hold pickled Python objects and are loaded with
``allow_pickle=True``: only point the decoder at files you made.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cortexcast.core.rois import ROIError, ROISet, from_pixel_lists, load_rois

log = logging.getLogger("cortexcast.core.rois")

FORMATS = ("auto", "cortexcast", "suite2p", "caiman")
SUITE2P_FILES = ("stat.npy", "iscell.npy", "ops.npy", "db.npy", "settings.npy",
                 "reg_outputs.npy", "detect_outputs.npy")
"""File names that mark suite2p output (both layouts)."""


def detect_format(path: str | Path) -> str:
    """'cortexcast' | 'suite2p' | 'caiman' from the path (ROIError if it cannot tell)."""
    p = Path(path)
    if not p.exists():
        raise ROIError(f"ROI file {p} does not exist")
    if p.is_dir() or p.name in SUITE2P_FILES:
        return "suite2p"
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return "cortexcast"
    if suffix in (".hdf5", ".h5", ".hdf"):
        return "caiman"
    raise ROIError(f"{p}: cannot tell the ROI format from the name; expected a cortexcast .npz, "
                   "a suite2p folder or stat.npy, or a CaImAn .hdf5 (or set rois_format)")


def load_roi_set(path: str | Path, fmt: str = "auto", block_px: int = 32,
                 cells_only: bool = True) -> ROISet:
    """Load ROIs in any supported format; the ROISet's ``source`` names the file."""
    if fmt not in FORMATS:
        raise ROIError(f"rois_format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    kind = detect_format(path) if fmt == "auto" else fmt
    if not Path(path).exists():
        raise ROIError(f"ROI file {path} does not exist")
    if kind == "cortexcast":
        rois = load_rois(path, block_px)
    elif kind == "suite2p":
        rois = load_suite2p(path, block_px, cells_only)
    else:
        rois = load_caiman(path, block_px, cells_only)
    return dataclasses.replace(rois, source=str(path))


# ------------------------------------------------------------------------------- suite2p

def _load_npy(p: Path, pickled: bool) -> Any:
    try:
        return np.load(p, allow_pickle=pickled)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise ROIError(f"{p}: cannot read: it is damaged or truncated ({exc}); copy the "
                       "suite2p output again or run suite2p again") from exc


def _load_dict(p: Path) -> dict[str, Any]:
    d = _load_npy(p, True)
    d = d.item() if isinstance(d, np.ndarray) and d.dtype == object and d.shape == () else d
    if not isinstance(d, dict):
        raise ROIError(f"{p}: not a suite2p file (expected a pickled dict, got {type(d).__name__})")
    return d


def _ops(folder: Path) -> dict[str, Any]:
    """A plane's metadata: ``db.npy`` + ``reg_outputs.npy`` (suite2p >= 1.0) or ``ops.npy``.

    ``["meanImg_file"]`` names the file the ``meanImg`` came from (for messages).
    """
    db_path, ops_path = folder / "db.npy", folder / "ops.npy"
    if db_path.exists():
        ops = _load_dict(db_path)
        src = db_path
        if "meanImg" in ops:
            ops["meanImg_file"] = db_path
        reg_path = folder / "reg_outputs.npy"
        if reg_path.exists():
            reg = _load_dict(reg_path)
            ops.update(reg)
            if "meanImg" in reg:  # the registered mean (db's is of the raw frames)
                ops["meanImg_file"] = reg_path
    elif ops_path.exists():
        ops = _load_dict(ops_path)
        src = ops_path
        ops["meanImg_file"] = ops_path
    else:
        raise ROIError(f"{folder}: no ops.npy (suite2p < 1.0) or db.npy (suite2p >= 1.0) "
                       "beside stat.npy (they give the frame size Ly, Lx); point at the whole "
                       "suite2p plane folder as suite2p wrote it")
    if "Ly" not in ops or "Lx" not in ops:
        raise ROIError(f"{src}: not a suite2p {src.name} (a dict with Ly and Lx)")
    return ops


def _offset(o: dict[str, Any]) -> tuple[int, int] | None:
    dy, dx = o.get("dy"), o.get("dx")
    return None if dy is None or dx is None else (int(np.ravel(dy)[0]), int(np.ravel(dx)[0]))


def _plane_folders(folder: Path) -> list[Path]:
    planes = [d for d in folder.iterdir() if d.is_dir() and re.fullmatch(r"plane\d+", d.name)]
    return sorted(planes, key=lambda d: int(d.name[5:]))


def _suite2p_layout(folder: Path) -> tuple[list[tuple[Path, int, int]], tuple[int, int]]:
    """[(plane folder, dy, dx)], (Ly, Lx) of the frame those planes make up."""
    if (folder / "stat.npy").exists():
        ops = _ops(folder)
        return [(folder, 0, 0)], (int(ops["Ly"]), int(ops["Lx"]))
    if (folder / "combined" / "stat.npy").exists():
        return _suite2p_layout(folder / "combined")
    planes = _plane_folders(folder)
    if not planes:
        raise ROIError(f"{folder}: no stat.npy, combined/ or plane0/ folder: not suite2p output")
    opss = [_ops(d) for d in planes]
    given = [_offset(o) for o in opss]
    if all(g is not None for g in given):
        offsets = [g for g in given if g is not None]
    else:  # suite2p's own grid for planes without physical offsets
        ly, lx = int(opss[0]["Ly"]), int(opss[0]["Lx"])
        ncol = int(np.ceil(np.sqrt(ly * lx * len(planes)) / lx))
        offsets = [((j // ncol) * ly, (j % ncol) * lx) for j in range(len(planes))]
    shape = (max(dy + int(o["Ly"]) for (dy, _), o in zip(offsets, opss)),
             max(dx + int(o["Lx"]) for (_, dx), o in zip(offsets, opss)))
    return [(d, dy, dx) for d, (dy, dx) in zip(planes, offsets)], shape


def load_suite2p(path: str | Path, block_px: int = 32, cells_only: bool = True) -> ROISet:
    p = Path(path)
    folder = p.parent if p.is_file() else p
    layout, shape = _suite2p_layout(folder)
    ys, xs, lams = [], [], []
    for plane, dy, dx in layout:
        stat = _load_npy(plane / "stat.npy", True)
        keep = np.ones(len(stat), bool)
        iscell_path = plane / "iscell.npy"
        if iscell_path.exists():
            iscell = np.asarray(_load_npy(iscell_path, False))
            if iscell.ndim != 2 or iscell.shape[0] != len(stat):
                raise ROIError(f"{iscell_path}: shape {iscell.shape}, expected ({len(stat)}, 2)")
            if cells_only:
                keep = iscell[:, 0] > 0.5
        elif cells_only:
            log.warning("%s: no iscell.npy, using all %d ROIs", plane, len(stat))
        plane_ops = _ops(plane)
        ly, lx = int(plane_ops["Ly"]), int(plane_ops["Lx"])
        for i in np.flatnonzero(keep):
            st = stat[i]
            if not isinstance(st, dict) or "ypix" not in st or "xpix" not in st:
                raise ROIError(f"{plane / 'stat.npy'}: entry {i} is not a suite2p ROI dict")
            y = np.asarray(st["ypix"], np.int64)
            x = np.asarray(st["xpix"], np.int64)
            lam = np.asarray(st.get("lam", np.ones(y.size)), np.float64)
            ov = np.asarray(st.get("overlap", np.zeros(y.size, bool)), bool)
            if ov.shape == y.shape and not ov.all():
                y, x, lam = y[~ov], x[~ov], lam[~ov]
            if y.size and (y.max() >= ly or x.max() >= lx or min(y.min(), x.min()) < 0):
                raise ROIError(f"{plane / 'stat.npy'}: ROI {i} has pixels outside the "
                               f"{ly}x{lx} plane of its db.npy/ops.npy")
            ys.append(y + dy)
            xs.append(x + dx)
            lams.append(lam)
    if not ys:
        raise ROIError(f"{folder}: no ROIs classified as cells (iscell.npy)")
    return from_pixel_lists(ys, xs, lams, shape, block_px)


def suite2p_mean_image(path: str | Path) -> np.ndarray:
    """The registered mean image (``meanImg``) laid out like :func:`load_suite2p`."""
    p = Path(path)
    folder = p.parent if p.is_file() else p
    layout, shape = _suite2p_layout(folder)
    img = np.zeros(shape, np.float32)
    for plane, dy, dx in layout:
        ops = _ops(plane)
        if "meanImg" not in ops:
            raise ROIError(f"{plane}: no meanImg in reg_outputs.npy, db.npy or ops.npy; set "
                           "[decoder.motion] reference to an image of this field of view")
        m = np.asarray(ops["meanImg"], np.float32)
        if m.shape != (int(ops["Ly"]), int(ops["Lx"])):
            raise ROIError(f"{ops['meanImg_file']}: meanImg is {m.shape}, the plane is "
                           f"{int(ops['Ly'])}x{int(ops['Lx'])}")
        img[dy:dy + m.shape[0], dx:dx + m.shape[1]] = m
    return img


# -------------------------------------------------------------------------------- CaImAn

def load_caiman(path: str | Path, block_px: int = 32, accepted_only: bool = True) -> ROISet:
    import h5py

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            if "estimates/A" not in f:
                raise ROIError(f"{p}: no estimates/A: not a CaImAn cnm.save() file")
            g = f["estimates/A"]
            if isinstance(g, h5py.Dataset) and g.ndim == 2:  # saved dense
                a = sp.csc_matrix(g[()])
            elif isinstance(g, h5py.Group) and {"data", "indices", "indptr", "shape"} <= set(g):
                a = sp.csc_matrix((g["data"][()], g["indices"][()], g["indptr"][()]),
                                  shape=tuple(int(v) for v in g["shape"][()]))
            else:
                raise ROIError(f"{p}: estimates/A is not a sparse matrix "
                               "(data/indices/indptr/shape)")
            dims_ds = f.get("estimates/dims", f.get("dims"))
            dims = tuple(int(v) for v in np.ravel(dims_ds[()])) if dims_ds is not None else ()
            idx = f.get("estimates/idx_components")
            idx = idx[()] if idx is not None else None
    except ROIError:
        raise
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise ROIError(f"{p}: cannot read CaImAn HDF5: it is damaged or truncated "
                       f"({exc}); copy it again or save it again with cnm.save()") from exc
    if len(dims) != 2:
        raise ROIError(f"{p}: dims {dims} — only 2-D CaImAn results are supported")
    d1, d2 = dims
    if a.shape[0] != d1 * d2:
        raise ROIError(f"{p}: estimates/A has {a.shape[0]} pixel rows, dims {dims} make {d1 * d2}")
    if accepted_only and isinstance(idx, np.ndarray) and np.issubdtype(idx.dtype, np.integer):
        a = a[:, np.sort(idx.ravel())]
    if a.shape[1] == 0:
        raise ROIError(f"{p}: no components")
    ys, xs, ws = [], [], []
    for k in range(a.shape[1]):
        lo, hi = a.indptr[k], a.indptr[k + 1]
        pix, w = a.indices[lo:hi], a.data[lo:hi]
        pos = w > 0
        if not pos.any():
            raise ROIError(f"{p}: component {k} has no positive weights")
        pix, w = pix[pos], w[pos]
        ys.append(pix % d1)  # Fortran order: the first axis (rows, y) runs fastest
        xs.append(pix // d1)
        ws.append(w)
    return from_pixel_lists(ys, xs, ws, (d1, d2), block_px)
