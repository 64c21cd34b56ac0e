"""Model card and PixelDecoder (the live/offline ONNX path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cortexcast.decoder.live.model_card import ModelCard, ModelError, load_card, load_mask, save_card, save_mask
from cortexcast.decoder.live.pixel_decoder import PixelDecoder
from cortexcast.decoder.training.synthetic import write_linear_model

N, W, L = 60, 10, 5


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_linear_model(tmp_path_factory.mktemp("m") / "lin.onnx", neurons=N, window=W,
                              lag=L)


# ------------------------------------------------------------------ model card
def test_card_round_trip(tmp_path: Path) -> None:
    card = ModelCard(neurons=7800, window=10, lag=5, validation_score=0.31,
                     training_time_s=12.5, data_used={"folder": "/d", "train_trials": 3},
                     onnx_max_abs_diff=2e-5, extra={"sim": {"seed": 1}})
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    save_card(card, model)
    assert (tmp_path / "model.json").is_file()
    assert load_card(model) == card
    assert card.input_shape == (1, 10, 7800) and card.output_shape == (1, 36, 64)
    save_mask(np.eye(36, 64, dtype=bool), model)
    np.testing.assert_array_equal(load_mask(model, (36, 64)), np.eye(36, 64, dtype=bool))
    nan_card = ModelCard(neurons=1, window=1, lag=0, validation_score=float("nan"))
    assert json.loads(nan_card.to_json())["validation_score"] is None  # strict JSON


@pytest.mark.parametrize("kwargs, message", [
    (dict(neurons=10, window=11, lag=0), "window must be in 1..10"),
    (dict(neurons=10, window=0, lag=0), "window must be in 1..10"),
    (dict(neurons=10, window=4, lag=4), r"lag must be in 0..3"),
    (dict(neurons=10, window=4, lag=-1), "lag must be"),
    (dict(neurons=0, window=4, lag=1), "neurons must be >= 1"),
    (dict(neurons=10, window=4, lag=1, format="other"), "format"),
])
def test_card_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ModelCard(**kwargs)


def test_card_file_errors(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    with pytest.raises(ModelError, match="m.onnx does not exist"):
        load_card(model)
    model.write_bytes(b"")
    with pytest.raises(ModelError, match="has no card: expected .*m.json"):
        load_card(model)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_card(model)
    (tmp_path / "m.json").write_text(json.dumps({"neurons": 3, "window": 2, "lag": 1, "x": 1}))
    with pytest.raises(ModelError, match="unknown key 'x'"):
        load_card(model)
    (tmp_path / "m.json").write_text(json.dumps({"neurons": 3, "window": 2}))
    with pytest.raises(ModelError, match="missing key 'lag'"):
        load_card(model)


# ---------------------------------------------------------------- PixelDecoder
def test_push_is_the_causal_window(linear_model: Path) -> None:
    """Push k decodes activity k-W+1..k (zeros before the first push), oldest row first."""
    dec = PixelDecoder(linear_model)
    acts = np.random.default_rng(0).normal(size=(25, N)).astype(np.float32)
    padded = np.concatenate([np.zeros((W - 1, N), np.float32), acts])
    for k in range(len(acts)):
        got = dec.push(acts[k])
        assert got.shape == (36, 64) and got.dtype == np.float32
        np.testing.assert_allclose(got, dec.decode_window(padded[k: k + W]), atol=1e-5)
    assert dec.frames_pushed == 25 and dec.lag == L
    dec.reset()
    np.testing.assert_allclose(dec.push(acts[0]), dec.decode_window(padded[:W]), atol=1e-5)


def test_nan_activity_is_zero_and_counted(linear_model: Path) -> None:
    dec, ref = PixelDecoder(linear_model), PixelDecoder(linear_model)
    a = np.random.default_rng(1).normal(size=N)
    bad = a.copy()
    bad[[3, 7]] = np.nan
    bad[9] = np.inf
    clean = a.copy()
    clean[[3, 7, 9]] = 0.0
    np.testing.assert_allclose(dec.push(bad), ref.push(clean), atol=1e-6)
    assert dec.nan_count == 3 and dec.nan_frames == 1
    assert np.isfinite(dec.push(a)).all() and dec.nan_frames == 1


def test_wrong_activity_length_names_both_sizes(linear_model: Path) -> None:
    dec = PixelDecoder(linear_model)
    with pytest.raises(ModelError, match=f"activity has 59 values but the model expects {N}"):
        dec.push(np.zeros(N - 1))
    with pytest.raises(ModelError, match=f"shape \\(2, {N}\\)"):
        dec.push(np.zeros((2, N)))


def test_model_errors(tmp_path: Path, linear_model: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        PixelDecoder(tmp_path / "missing.onnx")
    wrong = write_linear_model(tmp_path / "wrong.onnx", neurons=N, card_neurons=N + 1)
    with pytest.raises(ModelError, match=r"input shape \[1, 10, 60\] does not match"):
        PixelDecoder(wrong)
    with pytest.raises(ModelError, match="not available here"):
        PixelDecoder(linear_model, providers=["NoSuchExecutionProvider"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    save_card(ModelCard(neurons=N, window=W, lag=L), garbage)
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        PixelDecoder(garbage)


def test_live_path_does_not_import_torch() -> None:
    code = ("import sys, cortexcast.decoder.live.pixel_decoder, cortexcast.decoder.offline.reconstruct, cortexcast.decoder.offline.evaluate, "
            "cortexcast.decoder.live.metric, cortexcast.decoder.offline.dataset, cortexcast.decoder.live.model_card, cortexcast.app.offline_commands, cortexcast.decoder.offline.streaming, "
            "cortexcast.decoder.live.process, cortexcast.decoder.closed_loop.process, cortexcast.daq.process, cortexcast.display.server; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
