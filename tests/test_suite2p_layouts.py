"""suite2p output in both layouts -> ROIs and the motion reference (``meanImg``).

The real suite2p package (1.x) needs torch, cellpose and numba (gigabytes with CUDA
builds), so the fixtures are written at test time to the layout suite2p writes:

* suite2p >= 1.0 (followed: MouseLand/suite2p ``suite2p/pipeline_s2p.py`` (``pipeline``:
  ``reg_outputs.npy``, ``stat.npy``, ``detect_outputs.npy``, ``iscell.npy``, ``F.npy``...),
  ``suite2p/run_s2p.py`` (``run_s2p``: top-level ``db.npy`` / ``settings.npy``; ``run_plane``:
  ``ops.npy`` = db | settings | reg_outputs | detect_outputs when ``save_ops_orig``),
  ``suite2p/io/tiff.py`` (per-plane ``db.npy`` with ``Ly``, ``Lx``, ``nframes`` and the raw
  ``meanImg``), ``suite2p/io/save.py`` (``combined``: ``combined/db.npy`` with the tiled
  ``meanImg``, ``Ly``, ``Lx``; ``compute_dydx``: planes without ``dx``/``dy`` tiled on a grid
  of ``ceil(sqrt(Ly*Lx*n)/Lx)`` columns). Keys and dtypes as in the output of a real
  suite2p 1.1.0 run on a small TIFF movie.
* the older layout: ``stat.npy``, ``iscell.npy``, ``ops.npy`` (one dict with everything).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cortexcast.core.rois import ROIError
from cortexcast.decoder.live.motion import MotionSettings, load_reference
from cortexcast.decoder.live.process import DecoderSettings, _motion_corrector
from cortexcast.decoder.live.roi_loaders import detect_format, load_roi_set, suite2p_mean_image

LY, LX = 40, 48


def _disk(cy: int, cx: int, r: int = 2) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = yy ** 2 + xx ** 2 <= r * r
    return (yy[keep] + cy).astype(np.int32), (xx[keep] + cx).astype(np.int32)


def _stat(centres: list[tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    """stat.npy entries with the keys suite2p 1.1 writes."""
    out = []
    for cy, cx in centres:
        y, x = _disk(cy, cx)
        lam = rng.uniform(0.5, 2.0, y.size).astype(np.float32)
        out.append({"ypix": y, "xpix": x, "lam": lam, "med": [cy, cx], "npix": y.size,
                    "npix_soma": y.size, "npix_norm": 1.0, "npix_norm_no_crop": 1.0,
                    "overlap": np.zeros(y.size, bool), "soma_crop": np.ones(y.size, bool),
                    "radius": 2.0, "aspect_ratio": 1.0, "compact": 1.0, "footprint": 1.0,
                    "mrs": 1.0, "mrs0": 1.0, "skew": 1.0, "std": 10.0, "snr": 0.5})
    return np.array(out, dtype=object)


def _settings() -> dict:
    return {"torch_device": "cpu", "tau": 1.0, "fs": 30.0, "diameter": 8,
            "run": {"do_registration": 1, "do_regmetrics": False, "do_detection": True,
                    "do_deconvolution": True, "multiplane_parallel": False},
            "io": {"combined": True, "save_mat": False, "save_NWB": False,
                   "save_ops_orig": True, "delete_bin": False, "move_bin": False},
            "registration": {"nonrigid": False, "maxregshift": 0.1},
            "detection": {"algorithm": "sparsery", "threshold_scaling": 1.0},
            "version": "1.1.0"}


def _db(save: Path, **more) -> dict:
    db = {"data_path": [str(save.parent / "data")], "look_one_level_down": False,
          "input_format": "tif", "keep_movie_raw": False, "nplanes": 1, "nrois": 1,
          "nchannels": 1, "swap_order": False, "functional_chan": 1, "lines": None,
          "dy": None, "dx": None, "ignore_flyback": None, "subfolders": None,
          "file_list": [str(save.parent / "data" / "movie.tif")],
          "save_path0": str(save.parent), "fast_disk": str(save.parent),
          "save_folder": "suite2p", "batch_size": 500, "first_files": np.array([True])}
    db.update(more)
    return db


def write_plane_v1(folder: Path, centres: list[tuple[int, int]], iscell: list[int],
                   seed: int = 0, ops_too: bool = False, registered: bool = True,
                   offset: tuple[int, int] | None = None, ly: int = LY, lx: int = LX) -> dict:
    """One plane folder as suite2p >= 1.0 writes it; returns the arrays to check against."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    raw_mean = rng.uniform(100, 200, (ly, lx))  # float64: the unregistered mean (io/tiff.py)
    reg_mean = rng.uniform(300, 400, (ly, lx)).astype(np.float32)
    db = _db(folder.parent, save_path=str(folder), settings_path=str(folder / "settings.npy"),
             db_path=str(folder / "db.npy"), reg_file=str(folder / "data.bin"),
             iplane=np.int64(int(folder.name[5:])), Ly=ly, Lx=lx, nframes=1500,
             frames_per_file=np.array([1500]), frames_per_folder=np.array([1500]),
             meanImg=raw_mean)
    if offset is not None:
        db["dy"], db["dx"] = offset
    np.save(folder / "db.npy", db, allow_pickle=True)
    np.save(folder / "settings.npy", _settings(), allow_pickle=True)
    if registered:
        reg = {"refImg": reg_mean.astype(np.int16), "rmin": np.int16(97), "rmax": np.int16(253),
               "yoff": np.zeros(1500, np.int64), "xoff": np.zeros(1500, np.int64),
               "corrXY": np.ones(1500, np.float32), "meanImg": reg_mean,
               "badframes": np.zeros(1500, bool), "badframes0": np.zeros(1500, bool),
               "yrange": [0, ly], "xrange": [0, lx], "bidiphase": 0.0,
               "meanImgE": reg_mean / 400}
    else:  # do_registration = 0: pipeline() saves only the ranges
        reg = {"yrange": [0, ly], "xrange": [0, lx], "badframes": np.zeros(1500, bool)}
    np.save(folder / "reg_outputs.npy", reg, allow_pickle=True)
    det = {"Vmax": np.zeros(50), "ihop": np.zeros(50), "Vsplit": np.zeros(50),
           "Vcorr": np.zeros((ly, lx)), "Vmap": np.array([np.zeros((2, 2))] * 5, dtype=object),
           "spatscale_pix": 12, "meanImg_crop": reg_mean, "max_proj": reg_mean,
           "diameter": np.array([8, 8])}
    np.save(folder / "detect_outputs.npy", det, allow_pickle=True)
    stat = _stat(centres, rng)
    np.save(folder / "stat.npy", stat, allow_pickle=True)
    np.save(folder / "iscell.npy", np.stack([np.asarray(iscell, float),
                                             rng.uniform(0, 1, len(iscell))], axis=1))
    for name in ("F.npy", "Fneu.npy", "spks.npy"):
        np.save(folder / name, np.zeros((len(centres), 20), np.float32))
    if ops_too:  # run_plane with save_ops_orig (the default)
        np.save(folder / "ops.npy", {**db, **_settings(), **reg, **det}, allow_pickle=True)
    return {"stat": stat, "iscell": np.asarray(iscell), "raw_mean": raw_mean,
            "reg_mean": reg_mean}


def write_top_v1(save: Path) -> None:
    """run_s2p's top-level db.npy and settings.npy (no Ly/Lx: those are per plane)."""
    save.mkdir(parents=True, exist_ok=True)
    np.save(save / "db.npy", _db(save), allow_pickle=True)
    np.save(save / "settings.npy", _settings(), allow_pickle=True)


def write_plane_old(folder: Path, centres: list[tuple[int, int]], iscell: list[int],
                    seed: int = 0) -> dict:
    """A plane folder of suite2p < 1.0: stat.npy, iscell.npy and ops.npy with meanImg."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stat = _stat(centres, rng)
    np.save(folder / "stat.npy", stat, allow_pickle=True)
    np.save(folder / "iscell.npy", np.stack([np.asarray(iscell, float),
                                             rng.uniform(0, 1, len(iscell))], axis=1))
    mean = rng.uniform(100, 200, (LY, LX)).astype(np.float32)
    np.save(folder / "ops.npy", {"Ly": LY, "Lx": LX, "nframes": 100, "fs": 30.0,
                                 "meanImg": mean, "xrange": [0, LX], "yrange": [0, LY]},
            allow_pickle=True)
    return {"stat": stat, "iscell": np.asarray(iscell), "reg_mean": mean}


CENTRES = [(8, 8), (8, 30), (20, 20), (30, 10), (32, 40)]
ISCELL = [1, 1, 0, 1, 1]


def _pixels(rois, k: int) -> set[tuple[int, int]]:
    w = rois.frame_shape[1]
    return {(int(i) // w, int(i) % w) for i in rois.masks.getrow(k).indices}


def _expected(stat: np.ndarray, iscell: np.ndarray, dy: int = 0, dx: int = 0) -> list[set]:
    return [{(int(y) + dy, int(x) + dx) for y, x in zip(st["ypix"], st["xpix"])}
            for st, c in zip(stat, iscell) if c]


# --------------------------------------------------------------------------- >= 1.0

def test_v1_plane_folder_without_ops_npy(tmp_path: Path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    ref = write_plane_v1(plane, CENTRES, ISCELL)
    assert not (plane / "ops.npy").exists()
    rois = load_roi_set(plane)
    assert rois.frame_shape == (LY, LX)
    assert rois.n_neurons == 4
    assert [_pixels(rois, k) for k in range(4)] == _expected(ref["stat"], ref["iscell"])
    # the registered mean from reg_outputs.npy, not db.npy's mean of the raw frames
    np.testing.assert_array_equal(suite2p_mean_image(plane), ref["reg_mean"])


@pytest.mark.parametrize("name", ["db.npy", "settings.npy", "reg_outputs.npy",
                                  "detect_outputs.npy", "stat.npy", "iscell.npy"])
def test_v1_any_file_of_the_plane(tmp_path: Path, name: str) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    ref = write_plane_v1(plane, CENTRES, ISCELL)
    assert detect_format(plane / name) == "suite2p"
    assert load_roi_set(plane / name).n_neurons == 4
    np.testing.assert_array_equal(load_reference(plane / name), ref["reg_mean"])


def test_v1_parent_folder_single_plane(tmp_path: Path) -> None:
    save = tmp_path / "suite2p"
    write_top_v1(save)
    ref = write_plane_v1(save / "plane0", CENTRES, ISCELL)
    rois = load_roi_set(save)
    assert rois.n_neurons == 4 and rois.frame_shape == (LY, LX)
    np.testing.assert_array_equal(load_reference(save), ref["reg_mean"])


def test_v1_with_ops_npy_too_reads_the_same(tmp_path: Path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    ref = write_plane_v1(plane, CENTRES, ISCELL, ops_too=True)
    rois = load_roi_set(plane)
    assert [_pixels(rois, k) for k in range(4)] == _expected(ref["stat"], ref["iscell"])
    np.testing.assert_array_equal(suite2p_mean_image(plane), ref["reg_mean"])


def test_v1_without_registration_uses_the_raw_mean(tmp_path: Path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    ref = write_plane_v1(plane, CENTRES, ISCELL, registered=False)
    np.testing.assert_allclose(suite2p_mean_image(plane), ref["raw_mean"], rtol=1e-6)


def test_v1_two_planes_tiled_as_suite2p_combines_them(tmp_path: Path) -> None:
    save = tmp_path / "suite2p"
    write_top_v1(save)
    a = write_plane_v1(save / "plane0", CENTRES, ISCELL, seed=1)
    b = write_plane_v1(save / "plane1", CENTRES[:3], [1, 1, 1], seed=2)
    rois = load_roi_set(save)
    ncol = int(np.ceil(np.sqrt(LY * LX * 2) / LX))  # compute_dydx without dx/dy: 2 columns
    assert ncol == 2
    assert rois.frame_shape == (LY, 2 * LX)
    got = [_pixels(rois, k) for k in range(rois.n_neurons)]
    assert got == _expected(a["stat"], a["iscell"]) + _expected(b["stat"], b["iscell"], 0, LX)
    ref = load_reference(save)
    np.testing.assert_array_equal(ref[:, :LX], a["reg_mean"])
    np.testing.assert_array_equal(ref[:, LX:], b["reg_mean"])


def test_v1_mesoscope_offsets_from_db(tmp_path: Path) -> None:
    save = tmp_path / "suite2p"
    a = write_plane_v1(save / "plane0", CENTRES, ISCELL, seed=1, offset=(0, 0))
    b = write_plane_v1(save / "plane1", CENTRES, ISCELL, seed=2, offset=(LY + 5, 7))
    rois = load_roi_set(save)
    assert rois.frame_shape == (2 * LY + 5, LX + 7)
    got = [_pixels(rois, k) for k in range(rois.n_neurons)]
    assert got == _expected(a["stat"], a["iscell"]) + _expected(b["stat"], b["iscell"], LY + 5, 7)


def test_v1_combined_folder(tmp_path: Path) -> None:
    """combined/ (io/save.py:combined) holds db.npy with the tiled meanImg, Ly and Lx."""
    save = tmp_path / "suite2p"
    write_top_v1(save)
    write_plane_v1(save / "plane0", CENTRES, ISCELL)
    comb = save / "combined"
    comb.mkdir()
    rng = np.random.default_rng(5)
    tiled = rng.uniform(0, 1, (LY, 2 * LX))
    np.save(comb / "db.npy", _db(save, Ly=LY, Lx=2 * LX, meanImg=tiled, Vcorr=tiled,
                                 xrange=[0, 2 * LX], yrange=[0, LY], save_path=str(comb)),
            allow_pickle=True)
    np.save(comb / "settings.npy", _settings(), allow_pickle=True)
    stat = _stat([(5, 5), (10, 70)], rng)
    np.save(comb / "stat.npy", stat, allow_pickle=True)
    np.save(comb / "iscell.npy", np.array([[1.0, 0.9], [1.0, 0.8]]))
    rois = load_roi_set(save)  # the parent prefers combined/
    assert rois.frame_shape == (LY, 2 * LX) and rois.n_neurons == 2
    np.testing.assert_allclose(load_reference(save), tiled, rtol=1e-6)


def test_v1_decoder_takes_meanimg_as_motion_reference(tmp_path: Path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    ref = write_plane_v1(plane, CENTRES, ISCELL)
    settings = DecoderSettings(rois=str(plane), motion=MotionSettings(enabled=True))
    mc = _motion_corrector(settings, (LY, LX))
    assert mc is not None and mc.final
    np.testing.assert_array_equal(mc.reference, ref["reg_mean"])


# ------------------------------------------------------------------------------ errors

def test_plane_without_db_or_ops_names_the_folder(tmp_path: Path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    write_plane_v1(plane, CENTRES, ISCELL)
    (plane / "db.npy").unlink()
    with pytest.raises(ROIError, match=r"plane0: no ops\.npy .* or db\.npy"):
        load_roi_set(plane)


def test_db_npy_that_is_not_a_dict(tmp_path: Path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    write_plane_v1(plane, CENTRES, ISCELL)
    np.save(plane / "db.npy", np.zeros(3))
    with pytest.raises(ROIError, match=r"db\.npy: not a suite2p file"):
        load_roi_set(plane)


def test_meanimg_missing_everywhere(tmp_path: Path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    write_plane_v1(plane, CENTRES, ISCELL, registered=False)
    db = np.load(plane / "db.npy", allow_pickle=True).item()
    del db["meanImg"]
    np.save(plane / "db.npy", db, allow_pickle=True)
    with pytest.raises(ROIError, match=r"no meanImg.*\[decoder\.motion\] reference"):
        load_reference(plane)


# ------------------------------------------------------------------------------ < 1.0

def test_old_layout_plane_folder(tmp_path: Path) -> None:
    plane = tmp_path / "suite2p" / "plane0"
    ref = write_plane_old(plane, CENTRES, ISCELL)
    rois = load_roi_set(plane / "stat.npy")
    assert [_pixels(rois, k) for k in range(4)] == _expected(ref["stat"], ref["iscell"])
    np.testing.assert_array_equal(load_reference(plane / "ops.npy"), ref["reg_mean"])
    settings = DecoderSettings(rois=str(plane), motion=MotionSettings(enabled=True))
    np.testing.assert_array_equal(_motion_corrector(settings, (LY, LX)).reference,
                                  ref["reg_mean"])
