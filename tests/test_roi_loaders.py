"""ROIs from suite2p and CaImAn output, written here in those tools' own file layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from cortexcast.decoder.live.extraction import ActivityExtractor
from cortexcast.decoder.live.roi_loaders import detect_format, load_roi_set, suite2p_mean_image
from cortexcast.core.rois import ROIError, from_pixel_lists, save_rois


# ----------------------------------------------------------------------------- fixtures

def _disk(cy: int, cx: int, r: int = 2) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = yy ** 2 + xx ** 2 <= r * r
    return (yy[keep] + cy).astype(np.int32), (xx[keep] + cx).astype(np.int32)


def write_suite2p_plane(folder: Path, ly: int, lx: int, centres: list[tuple[int, int]],
                        iscell: list[int], offset: tuple[int, int] | None = None,
                        overlap_first: bool = False, seed: int = 0) -> list[dict]:
    """A plane folder as suite2p writes it: stat.npy (object array of dicts), iscell.npy
    (N, 2) float, ops.npy (a pickled dict) with Ly, Lx, meanImg (and dy/dx if given)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stat = []
    for k, (cy, cx) in enumerate(centres):
        ypix, xpix = _disk(cy, cx)
        lam = rng.uniform(0.5, 2.0, ypix.size).astype(np.float32)
        overlap = np.zeros(ypix.size, bool)
        if overlap_first and k == 0:
            overlap[:3] = True
        stat.append({"ypix": ypix, "xpix": xpix, "lam": lam, "med": [cy, cx],
                     "npix": ypix.size, "overlap": overlap, "radius": 2.0,
                     "aspect_ratio": 1.0, "compact": 1.0, "footprint": 1.0, "skew": 0.5,
                     "std": 10.0, "soma_crop": np.ones(ypix.size, bool), "npix_soma": ypix.size})
    np.save(folder / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(folder / "iscell.npy",
            np.stack([np.asarray(iscell, float), rng.uniform(0, 1, len(iscell))], axis=1))
    ops = {"Ly": ly, "Lx": lx, "nframes": 100, "fs": 30.0, "tau": 1.25, "nchannels": 1,
           "meanImg": rng.uniform(100, 200, (ly, lx)).astype(np.float32),
           "xrange": [0, lx], "yrange": [0, ly], "save_path": str(folder)}
    if offset is not None:
        ops["dy"], ops["dx"] = offset
    np.save(folder / "ops.npy", ops, allow_pickle=True)
    return stat


def write_caiman(path: Path, masks: list[np.ndarray], idx_components=None,
                 dims3: bool = False) -> None:
    """The HDF5 file ``cnm.save()`` writes: estimates/A as a CSC group, dims, and more."""
    d1, d2 = masks[0].shape
    a = sp.csc_matrix(np.stack([m.ravel(order="F") for m in masks], axis=1))
    with h5py.File(path, "w") as f:
        for key in ("data", "indices", "indptr"):
            f[f"estimates/A/{key}"] = getattr(a, key)
        f["estimates/A/shape"] = np.array(a.shape)
        f["estimates/C"] = np.zeros((len(masks), 50), np.float32)
        f["estimates/b"] = np.ones((d1 * d2, 1), np.float32)
        f["estimates/dims"] = np.array((d1, d2, 3) if dims3 else (d1, d2))
        f["dims"] = np.array((d1, d2))
        f["estimates/idx_components"] = (np.asarray(idx_components) if idx_components is not None
                                         else "NoneType")
        f["params/data/fr"] = 30.0


def _pixels(rois, k: int, w: int) -> set[tuple[int, int]]:
    row = rois.masks.getrow(k)
    return {(int(i) // w, int(i) % w) for i in row.indices}


# ------------------------------------------------------------------------------ suite2p

def test_suite2p_plane_folder(tmp_path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    stat = write_suite2p_plane(plane, 48, 64, [(10, 10), (20, 40), (30, 15), (40, 55)],
                               [1, 0, 1, 1], overlap_first=True)
    for path in (plane, plane / "stat.npy"):
        assert detect_format(path) == "suite2p"
        rois = load_roi_set(path)
        assert rois.frame_shape == (48, 64) and rois.n_neurons == 3  # iscell 0 dropped
        assert rois.source == str(path)
    # neuron order kept; overlap pixels excluded; weights are lam, normalised
    first = stat[0]
    keep = ~first["overlap"]
    assert _pixels(rois, 0, 64) == set(zip(first["ypix"][keep].tolist(),
                                           first["xpix"][keep].tolist()))
    row = rois.masks.getrow(0).toarray().ravel()
    want = np.zeros(48 * 64)
    want[first["ypix"][keep] * 64 + first["xpix"][keep]] = first["lam"][keep]
    np.testing.assert_allclose(row, want / want.sum(), rtol=1e-5)
    assert _pixels(rois, 1, 64) == set(zip(stat[2]["ypix"].tolist(), stat[2]["xpix"].tolist()))
    assert load_roi_set(plane, cells_only=False).n_neurons == 4


def test_suite2p_multiplane_with_offsets_and_grid(tmp_path) -> None:
    root = tmp_path / "suite2p"
    write_suite2p_plane(root / "plane0", 32, 32, [(5, 5)], [1], offset=(0, 0))
    write_suite2p_plane(root / "plane1", 32, 32, [(5, 5), (20, 20)], [1, 1], offset=(0, 32))
    rois = load_roi_set(root)
    assert rois.frame_shape == (32, 64) and rois.n_neurons == 3
    np.testing.assert_allclose(rois.centroids[1], (5, 37), atol=0.5)  # plane1 shifted by dx
    img = suite2p_mean_image(root)
    ops1 = np.load(root / "plane1" / "ops.npy", allow_pickle=True).item()
    np.testing.assert_allclose(img[:, 32:], ops1["meanImg"])
    from cortexcast.decoder.live.motion import load_reference  # the motion reference reads the same images

    np.testing.assert_allclose(load_reference(root), img)
    np.testing.assert_allclose(load_reference(root / "plane1" / "stat.npy"), ops1["meanImg"])
    # without dy/dx: suite2p's grid, ceil(sqrt(Ly*Lx*n)/Lx) columns -> 3 planes on 2 columns
    grid = tmp_path / "grid"
    for k in range(3):
        write_suite2p_plane(grid / f"plane{k}", 16, 16, [(4, 4)], [1])
    rois = load_roi_set(grid)
    assert rois.frame_shape == (32, 32)
    np.testing.assert_allclose(rois.centroids, [(4, 4), (4, 20), (20, 4)], atol=0.5)
    # a combined/ folder, when present, is what suite2p itself laid out: it wins
    write_suite2p_plane(grid / "combined", 40, 40, [(30, 30)], [1])
    assert load_roi_set(grid).frame_shape == (40, 40)


def test_suite2p_errors(tmp_path) -> None:
    plane = tmp_path / "plane0"
    write_suite2p_plane(plane, 32, 32, [(5, 5)], [1])
    (plane / "ops.npy").unlink()
    with pytest.raises(ROIError, match="no ops.npy"):
        load_roi_set(plane)
    write_suite2p_plane(plane, 8, 8, [(6, 6)], [1])  # a disk at (6, 6) runs off an 8x8 plane
    with pytest.raises(ROIError, match="outside the 8x8"):
        load_roi_set(plane)
    write_suite2p_plane(plane, 32, 32, [(5, 5), (20, 20)], [1, 1])
    np.save(plane / "iscell.npy", np.ones((5, 2)))
    with pytest.raises(ROIError, match=r"iscell.npy: shape \(5, 2\)"):
        load_roi_set(plane)
    write_suite2p_plane(plane, 32, 32, [(5, 5)], [0])
    with pytest.raises(ROIError, match="no ROIs classified as cells"):
        load_roi_set(plane)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ROIError, match="not suite2p output"):
        load_roi_set(tmp_path / "empty")


def test_suite2p_without_iscell_keeps_all_with_a_warning(tmp_path, caplog) -> None:
    plane = tmp_path / "plane0"
    write_suite2p_plane(plane, 32, 32, [(5, 5), (20, 20)], [0, 0])
    (plane / "iscell.npy").unlink()
    with caplog.at_level(logging.WARNING):
        assert load_roi_set(plane).n_neurons == 2
    assert "no iscell.npy" in caplog.text


# ------------------------------------------------------------------------------- CaImAn

def _caiman_masks(d1: int, d2: int) -> list[np.ndarray]:
    """Three asymmetric footprints on a non-square field, so a transposed read shows."""
    masks = []
    for cy, cx in [(5, 30), (12, 3), (2, 50)]:
        m = np.zeros((d1, d2))
        m[cy:cy + 3, cx:cx + 5] = np.linspace(0.2, 1.0, 15).reshape(3, 5)
        masks.append(m)
    return masks


def test_caiman_hdf5_fortran_order(tmp_path) -> None:
    masks = _caiman_masks(20, 60)
    write_caiman(tmp_path / "cnm.hdf5", masks)
    assert detect_format(tmp_path / "cnm.hdf5") == "caiman"
    rois = load_roi_set(tmp_path / "cnm.hdf5")
    assert rois.frame_shape == (20, 60) and rois.n_neurons == 3
    for k, m in enumerate(masks):
        dense = rois.masks.getrow(k).toarray().reshape(20, 60)
        np.testing.assert_allclose(dense, m / m.sum(), rtol=1e-5)


def test_caiman_accepted_components_and_errors(tmp_path) -> None:
    masks = _caiman_masks(20, 60)
    write_caiman(tmp_path / "cnm.hdf5", masks, idx_components=[2, 0])
    rois = load_roi_set(tmp_path / "cnm.hdf5")
    assert rois.n_neurons == 2  # components 0 and 2, in their original order
    assert rois.centroids[0][1] < 40 < rois.centroids[1][1]
    assert load_roi_set(tmp_path / "cnm.hdf5", cells_only=False).n_neurons == 3
    write_caiman(tmp_path / "vol.hdf5", masks, dims3=True)
    with pytest.raises(ROIError, match="only 2-D"):
        load_roi_set(tmp_path / "vol.hdf5")
    with h5py.File(tmp_path / "dense.hdf5", "w") as f:  # A saved as a dense array
        f["estimates/A"] = np.stack([m.ravel(order="F") for m in masks], axis=1)
        f["estimates/dims"] = np.array((20, 60))
    every = load_roi_set(tmp_path / "cnm.hdf5", cells_only=False)
    np.testing.assert_allclose(load_roi_set(tmp_path / "dense.hdf5").masks.toarray(),
                               every.masks.toarray())
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ROIError, match="no estimates/A"):
        load_roi_set(tmp_path / "other.h5")
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(ROIError, match="cannot read CaImAn"):
        load_roi_set(tmp_path / "junk.hdf5")


# ---------------------------------------------------------------- detection, frame size

def test_format_detection_and_explicit_format(tmp_path) -> None:
    rois = from_pixel_lists([np.array([1, 2])], [np.array([3, 3])], None, (16, 16), block_px=8)
    save_rois(tmp_path / "r.npz", rois)
    assert detect_format(tmp_path / "r.npz") == "cortexcast"
    assert load_roi_set(tmp_path / "r.npz", "cortexcast").n_neurons == 1
    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(ROIError, match="cannot tell the ROI format"):
        load_roi_set(tmp_path / "r.txt")
    with pytest.raises(ROIError, match="rois_format must be one of"):
        load_roi_set(tmp_path / "r.npz", "matlab")
    with pytest.raises(ROIError, match="does not exist"):
        load_roi_set(tmp_path / "missing.hdf5")


def test_frame_size_mismatch_names_both_sizes_and_the_file(tmp_path) -> None:
    plane = tmp_path / "plane0"
    write_suite2p_plane(plane, 48, 64, [(10, 10)], [1])
    ex = ActivityExtractor(load_roi_set(plane), 30.0)
    with pytest.raises(ROIError, match=r"frames are \(512, 512\) but the ROIs \(.*plane0\) "
                                       r"were drawn on \(48, 64\)"):
        ex(np.zeros((512, 512), np.uint16))
