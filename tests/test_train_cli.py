"""``cortexcast train`` on tiny data: the decoder, the ensemble, ridge dispatch, several mice.

Small and short (a few seconds of training each); the scores asserted are loose floors that
a broken pipeline (wrong alignment, wrong targets) cannot reach.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from cortexcast.app import offline_commands as cli  # noqa: E402
from cortexcast.decoder.live.model_card import load_card, mask_path  # noqa: E402
from cortexcast.decoder.training.synthetic import write_synthetic_dataset  # noqa: E402

N = 50
TIERS = {"train": 10, "oracle": 2, "final_test_main": 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("tc") / "mouse", neurons=N,
                                   tiers=TIERS, length=60, padded=70)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cortexcast")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register_train(sub)
    cli.register_evaluate(sub)
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def onnx_inputs(path: Path) -> dict[str, list]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {i.name: i.shape for i in sess.get_inputs()}


def test_decoder_ensemble(data_dir: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "m" / "dec.onnx"
    assert run_cli("train", "--data", str(data_dir), "--out", str(model), "--time-budget", "4",
                   "--ensemble", "2", "--readout", "16", "--device", "cpu", "--seed", "1",
                   "--no-progress") == 0
    assert "validation pixel correlation" in capsys.readouterr().out
    card = load_card(model)
    # window and lag chosen on validation (no --lag), within the default 300 ms
    choice = card.extra["training"]["choices"]["window_lag"]
    assert (card.neurons, card.window, card.lag) == (N, choice["window"], choice["lag"])
    assert 0 <= card.lag <= 9 and len(choice["candidates"]) == 15
    picked = choice["candidates"][f"W{card.window}/L{card.lag}"]
    assert choice["score"] == pytest.approx(picked, abs=1e-5) and choice["default"] == "W10/L9"
    assert onnx_inputs(model) == {"activity": [1, card.window, N],
                                  "behavior": [1, card.window, 4]}
    ex = card.extra
    assert ex["behavior_inputs"] == ["pupil", "running", "pupil_x", "pupil_y"]
    assert len(ex["behavior_mean"]) == 4 and ex["activity_kind"] in ("dff", "deconvolved")
    tr = ex["training"]
    assert tr["method"] == "ensemble" and tr["members"] == 2
    assert len(tr["member_validation_scores"]) == 2
    # every member starts as the ridge branch and is never kept worse than it on validation
    assert min(tr["member_validation_scores"]) >= tr["ridge_branch_validation_score"]
    # the card's score is the final model on the selection split early stopping never saw
    members = tr["choices"]["members"]
    assert card.validation_score == pytest.approx(members["selection_scores"]["ensemble"])
    if not members["kept"]:
        assert tr["ensemble_validation_score"] == tr["ridge_branch_validation_score"]
    weights = tr["choices"]["neuron_weights"]  # weighted front end unless plainly worse
    assert set(weights["selection_scores"]) == {"weighted", "unweighted"}
    assert weights["reliability"]["median_r"] > 0.3  # every synthetic neuron sees the movie
    assert ("encoding correlation" in card.method) == weights["kept"]
    assert card.validation_score > 0.5
    assert card.onnx_max_abs_diff is not None and card.onnx_max_abs_diff < 0.255
    norm = np.load(model.with_suffix(".norm.npz"))
    assert norm["resp_mean"].shape == norm["resp_std"].shape == (N,)
    assert norm["behavior_mean"].shape == norm["behavior_std"].shape == (4,)
    assert np.load(mask_path(model)).shape == (36, 64)
    out = tmp_path / "eval.json"
    assert run_cli("evaluate", "--data", str(data_dir), "--model", str(model),
                   "--tier", "final_test_main", "--json", str(out)) == 0
    assert json.loads(out.read_text())["mean"] > 0.5


def test_decoder_without_behavior(data_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "nb.onnx"
    assert run_cli("train", "--data", str(data_dir), "--out", str(model), "--time-budget", "3",
                   "--ensemble", "1", "--readout", "16", "--no-behavior", "--device", "cpu",
                   "--lag", "5", "--no-neuron-weights", "--no-progress") == 0
    card = load_card(model)
    assert onnx_inputs(model) == {"activity": [1, 10, N]}
    weights = card.extra["training"]["choices"]["neuron_weights"]
    assert not weights["kept"] and "--no-neuron-weights" in weights["why"]
    assert "behavior_inputs" not in card.extra
    assert card.extra["training"]["method"] == "decoder"


def test_ridge_dispatch(data_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "ridge.onnx"
    assert run_cli("train", "--method", "ridge", "--data", str(data_dir), "--out", str(model),
                   "--readout", "16", "--no-progress") == 0
    card = load_card(model)
    assert card.extra["training"]["method"] == "ridge"
    assert card.extra["training"]["components"] == 16


def test_several_mice(data_dir: Path, tmp_path: Path) -> None:
    other = write_synthetic_dataset(tmp_path / "small", neurons=30, seed=3, length=60,
                                    padded=70, tiers={"train": 4, "oracle": 2,
                                                      "final_test_main": 2})
    out = tmp_path / "mm" / "joint.onnx"
    assert run_cli("train", "--data", str(data_dir), "--data", str(other), "--out", str(out),
                   "--time-budget", "6", "--ensemble", "1", "--readout", "16",
                   "--device", "cpu", "--no-progress") == 0
    a, b = out.with_name("joint.mouse.onnx"), out.with_name("joint.small.onnx")
    assert a.is_file() and b.is_file() and not out.exists()
    ca, cb = load_card(a), load_card(b)
    assert (ca.neurons, cb.neurons) == (N, 30)
    assert (ca.window, ca.lag) == (cb.window, cb.lag)  # one core: the first mouse's choice
    assert ca.data_used["folder"] == str(data_dir.resolve())
    assert cb.extra["training"]["multi_mouse"]["mice"] == [str(data_dir.resolve()),
                                                           str(other.resolve())]
    # each decodes its own mouse through the normal path
    for model, data in ((a, data_dir), (b, other)):
        res = tmp_path / f"{model.stem}.json"
        assert run_cli("evaluate", "--data", str(data), "--model", str(model),
                       "--tier", "final_test_main", "--json", str(res)) == 0
        assert json.loads(res.read_text())["mean"] > 0.3


def test_model_paths_for_repeated_names() -> None:
    from cortexcast.decoder.training.multi_mouse import model_paths

    assert [p.name for p in model_paths("/x/m.onnx", ["/a/mouse", "/b/mouse", "/c/other"])] \
        == ["m.1.mouse.onnx", "m.2.mouse.onnx", "m.other.onnx"]
