"""Issue 10, small ones: a damaged ROI file is a clear error, and `up` catches a missing ROI
file or a bad model before it starts any process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cortexcast.app import launcher
from cortexcast.core.config import ConfigError
from cortexcast.core.errors import CortexcastError
from cortexcast.core.rois import ROIError, from_pixel_lists, load_rois, save_rois
from cortexcast.decoder.live.model_card import ModelCard, save_card
from cortexcast.decoder.live.roi_loaders import load_roi_set

N = 6


def _roi_file(path: Path, n: int = N) -> Path:
    ys = [np.array([2 + 8 * i, 3 + 8 * i]) for i in range(n)]
    xs = [np.array([4, 5]) for _ in range(n)]
    save_rois(path, from_pixel_lists(ys, xs, None, (64, 64)))
    return path


def _model(tmp: Path, neurons: int = N) -> Path:
    onnx = tmp / "m.onnx"
    onnx.write_bytes(b"not really onnx")  # the launcher's check reads only the card
    save_card(ModelCard(neurons=neurons, window=2, lag=1), onnx)
    return onnx


# -- 1. a damaged ROI file --------------------------------------------------------------

@pytest.mark.parametrize("cut", [0.5, 0.1, 0.9])
def test_truncated_roi_npz_is_an_roi_error(tmp_path: Path, cut: float) -> None:
    good = _roi_file(tmp_path / "good.npz")
    bad = tmp_path / "rois.npz"
    data = good.read_bytes()
    bad.write_bytes(data[: int(len(data) * cut)])
    for load in (load_rois, load_roi_set):
        with pytest.raises(ROIError) as err:
            load(bad)
        assert isinstance(err.value, CortexcastError)
        msg = str(err.value)
        assert str(bad) in msg and ("damaged" in msg or "truncated" in msg)


def test_roi_npz_missing_an_array_is_an_roi_error(tmp_path: Path) -> None:
    bad = tmp_path / "rois.npz"
    np.savez(bad, format="cortexcast-rois-1", data=np.zeros(2))
    with pytest.raises(ROIError, match="rois.npz"):
        load_rois(bad)


def test_garbage_roi_npz_is_an_roi_error(tmp_path: Path) -> None:
    bad = tmp_path / "rois.npz"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(ROIError, match="rois.npz"):
        load_roi_set(bad)


def test_truncated_suite2p_stat_is_an_roi_error(tmp_path: Path) -> None:
    plane = tmp_path / "plane0"
    plane.mkdir()
    stat = np.array([{"ypix": np.array([1, 2]), "xpix": np.array([3, 4]),
                      "lam": np.ones(2)} for _ in range(3)], dtype=object)
    np.save(plane / "stat.npy", stat)
    np.save(plane / "ops.npy", np.array({"Ly": 16, "Lx": 16}, dtype=object))
    data = (plane / "stat.npy").read_bytes()
    (plane / "stat.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ROIError, match="stat.npy"):
        load_roi_set(plane, "suite2p")


def test_truncated_caiman_hdf5_is_an_roi_error(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    f = tmp_path / "cnm.hdf5"
    with h5py.File(f, "w") as h:
        h["estimates/A"] = np.eye(16 * 16, 3)
        h["estimates/dims"] = np.array([16, 16])
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ROIError, match="cnm.hdf5"):
        load_roi_set(f)


# -- 2. `up` checks the decoder's ROI file and model before it starts anything -----------

def _config(tmp: Path, rois: Path, model: Path | str) -> Path:
    cfg = tmp / "rig.toml"
    cfg.write_text(
        f"[stack]\nprocesses = ['decoder', 'daq']\nrun_dir = '{tmp / 'run'}'\n"
        "[daq]\npublish = 'tcp://127.0.0.1:5999'\n"
        "[daq.sim]\nn_neurons = 200\nframe_height = 64\nframe_width = 64\n"
        "[decoder]\nframes_from = 'tcp://127.0.0.1:5999'\npublish = 'tcp://127.0.0.1:5998'\n"
        f"rois = '{rois}'\nmodel = '{model}'\n"
    )
    return cfg


class _NoSupervisor:
    def __init__(self, *args, **kwargs) -> None:
        raise AssertionError("up started processes before checking the decoder's files")


def _up_fails(cfg: Path, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> str:
    monkeypatch.setattr(launcher, "Supervisor", _NoSupervisor)
    with pytest.raises(ConfigError) as err:
        launcher.run_stack(cfg, 1.0, quiet=True)
    assert not (tmp / "run").exists()
    msg = str(err.value)
    assert str(cfg) in msg and "[decoder]" in msg
    return msg


def test_up_catches_a_missing_roi_file(tmp_path: Path, monkeypatch) -> None:
    cfg = _config(tmp_path, tmp_path / "missing.npz", _model(tmp_path))
    msg = _up_fails(cfg, monkeypatch, tmp_path)
    assert "rois" in msg and "missing.npz" in msg


def test_up_catches_a_damaged_roi_file(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "rois.npz"
    data = _roi_file(tmp_path / "good.npz").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    msg = _up_fails(_config(tmp_path, bad, _model(tmp_path)), monkeypatch, tmp_path)
    assert "rois" in msg and "rois.npz" in msg


def test_up_catches_a_missing_model(tmp_path: Path, monkeypatch) -> None:
    rois = _roi_file(tmp_path / "rois.npz")
    msg = _up_fails(_config(tmp_path, rois, tmp_path / "nomodel.onnx"), monkeypatch, tmp_path)
    assert "model" in msg and "nomodel.onnx" in msg


def test_up_catches_a_model_without_card(tmp_path: Path, monkeypatch) -> None:
    rois = _roi_file(tmp_path / "rois.npz")
    onnx = tmp_path / "nocard.onnx"
    onnx.write_bytes(b"x")
    msg = _up_fails(_config(tmp_path, rois, onnx), monkeypatch, tmp_path)
    assert "model" in msg and "nocard" in msg


def test_up_catches_a_neuron_count_mismatch(tmp_path: Path, monkeypatch) -> None:
    rois = _roi_file(tmp_path / "rois.npz", n=N)
    msg = _up_fails(_config(tmp_path, rois, _model(tmp_path, neurons=N + 3)), monkeypatch,
                    tmp_path)
    assert str(N) in msg and str(N + 3) in msg and "rois.npz" in msg


def test_validate_stack_passes_matching_model_and_rois(tmp_path: Path) -> None:
    rois = _roi_file(tmp_path / "rois.npz")
    stack, loaded = launcher.validate_stack(_config(tmp_path, rois, _model(tmp_path)))
    assert "decoder" in loaded


def test_up_cli_fails_before_starting(tmp_path: Path, capsys, monkeypatch) -> None:
    import cortexcast.core.runtime
    from cortexcast.app.cli import main

    monkeypatch.setattr(cortexcast.core.runtime, "die_with_parent", lambda: None)
    monkeypatch.setattr(launcher, "Supervisor", _NoSupervisor)

    cfg = _config(tmp_path, tmp_path / "missing.npz", _model(tmp_path))
    code = main(["up", "--config", str(cfg), "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.npz" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
