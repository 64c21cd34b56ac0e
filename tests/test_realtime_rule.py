"""The real-time rule, for every ONNX pixel decoder: perturbing responses and behaviour after
frame t + L leaves the reconstructions of frames <= t unchanged.

Checked through both paths that decode: :meth:`PixelDecoder.push` (the live decoder) and
``cortexcast.decoder.offline.reconstruct`` (offline scores). Models come from :data:`MODEL_FACTORIES` (add a
trained ridge / decoder model there: a function ``(folder, dataset) -> model path``) and from
the environment variable ``CORTEXCAST_RT_MODELS`` (ONNX paths separated by ``os.pathsep``,
checked on the live path with activity of their own size).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.live.model_card import load_card
from cortexcast.decoder.offline.streaming import stream_trial
from cortexcast.decoder.live.pixel_decoder import PixelDecoder
from cortexcast.decoder.training.synthetic import write_linear_model, write_synthetic_dataset

N = 40
T_CUT = 30  # frames <= T_CUT must not change


def _linear(folder: Path, ds: SensoriumDataset) -> Path:
    return write_linear_model(folder / "linear.onnx", neurons=N, window=10, lag=5)


def _behavior(folder: Path, ds: SensoriumDataset) -> Path:
    return write_linear_model(folder / "behaviour.onnx", neurons=N, window=8, lag=3,
                              behavior=True, seed=1)


def _ridge_shaped(folder: Path, ds: SensoriumDataset) -> Path:
    st = ds.statistics("responses")
    return write_linear_model(folder / "ridge_shaped.onnx", neurons=N, window=10, lag=6,
                              components=16, behavior=True, norm=(st["mean"], st["std"]), seed=2)


def _lag_zero(folder: Path, ds: SensoriumDataset) -> Path:
    return write_linear_model(folder / "lag0.onnx", neurons=N, window=4, lag=0, seed=3)


MODEL_FACTORIES: dict[str, Callable[[Path, SensoriumDataset], Path]] = {
    "linear": _linear, "behavior": _behavior, "ridge_shaped": _ridge_shaped,
    "lag0": _lag_zero,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("rt") / "mouse", neurons=N,
                                   statistics=True)


@pytest.fixture(scope="module", params=sorted(MODEL_FACTORIES))
def model(request, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return MODEL_FACTORIES[request.param](tmp_path_factory.mktemp(request.param),
                                          SensoriumDataset(data_dir))


def _perturbed(resp: np.ndarray, beh: np.ndarray, after: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(after)
    r, b = resp.copy(), beh.copy()
    r[after + 1:] += rng.normal(0, 5, r[after + 1:].shape).astype(np.float32)
    b[after + 1:] += rng.normal(0, 5, b[after + 1:].shape).astype(np.float32)
    return r, b


def _check(before: np.ndarray, after: np.ndarray, t: int) -> None:
    np.testing.assert_array_equal(after[: t + 1], before[: t + 1])
    assert np.abs(after[t + 1:] - before[t + 1:]).max() > 1e-3  # the perturbation is seen


def _live(model_path: Path, resp: np.ndarray, beh: np.ndarray) -> np.ndarray:
    """Push by push, as the decoder process does; push k reconstructs frame k - L."""
    dec = PixelDecoder(model_path)
    frames = [dec.push(resp[k], beh[k]) for k in range(len(resp))]
    return np.stack(frames[dec.lag:])  # frames 0 .. T - 1 - L


def test_live_push_path(model: Path, data_dir: Path) -> None:
    ds = SensoriumDataset(data_dir)
    tid = ds.trial_ids("final_test_main")[0]
    resp, beh = ds.responses(tid), ds.behavior_rows(tid)
    lag = load_card(model).lag
    before = _live(model, resp, beh)
    _check(before, _live(model, *_perturbed(resp, beh, T_CUT + lag)), T_CUT)
    # and through the offline helper that flushes a trial's end with padding
    full = stream_trial(PixelDecoder(model), resp, beh)
    np.testing.assert_array_equal(full[: len(before)], before)
    _check(full, stream_trial(PixelDecoder(model), *_perturbed(resp, beh, T_CUT + lag)), T_CUT)


def test_offline_reconstruct_path(model: Path, data_dir: Path, tmp_path: Path) -> None:
    from cortexcast.decoder.offline.reconstruct import reconstruct

    lag = load_card(model).lag
    data = Path(shutil.copytree(data_dir, tmp_path / "mouse"))
    tid = SensoriumDataset(data).trial_ids("final_test_main")[0]
    reconstruct(data, model, "final_test_main", tmp_path / "r1")
    t_len = SensoriumDataset(data).length(tid)
    rng = np.random.default_rng(0)
    for kind in ("responses", "behavior", "pupil_center"):
        f = data / "data" / kind / f"{tid}.npy"
        a = np.load(f)
        a[:, T_CUT + lag + 1: t_len] += rng.normal(0, 5, a[:, T_CUT + lag + 1: t_len].shape)
        np.save(f, a)
    reconstruct(data, model, "final_test_main", tmp_path / "r2")
    r1, r2 = (np.load(tmp_path / d / f"{tid}.npy") for d in ("r1", "r2"))
    assert r1.shape == (t_len, 36, 64)
    _check(r1, r2, T_CUT)


def _env_models() -> list[str]:
    return [p for p in os.environ.get("CORTEXCAST_RT_MODELS", "").split(os.pathsep) if p]


@pytest.mark.parametrize("path", _env_models() or [None])
def test_trained_models_from_the_environment(path: str | None) -> None:
    if path is None:
        pytest.skip("set CORTEXCAST_RT_MODELS to check trained models too")
    card = load_card(path)
    rng = np.random.default_rng(0)
    resp = rng.gamma(1.0, 1.0, (card.window + T_CUT + 20, card.neurons)).astype(np.float32)
    beh = (np.array([5, 2, 0, 0]) + rng.normal(0, 1, (len(resp), 4))).astype(np.float32)
    before = _live(Path(path), resp, beh)
    _check(before, _live(Path(path), *_perturbed(resp, beh, T_CUT + card.lag)), T_CUT)
