"""`cortexcast evaluate --report`: per-clip scores, pictures, neuron dropping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cortexcast.app.cli import main
from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.offline.evaluate import choose_mask
from cortexcast.decoder.live.metric import per_clip_correlation
from cortexcast.decoder.offline.reconstruct import reconstruct
from cortexcast.decoder.offline.report import Method, build_report, parse_method, pixel_correlation_map
from cortexcast.decoder.training.synthetic import write_synthetic_dataset

onnx = pytest.importorskip("onnx")

WINDOW, LAG, DELAY = 4, 2, 2


def _write_onnx(path: Path, weight: np.ndarray, bias: np.ndarray, neurons: int,
                train_trials: int | None = None) -> Path:
    """A linear window decoder with the given weights, and its card."""
    from onnx import TensorProto, helper, numpy_helper

    from cortexcast.decoder.live.model_card import ModelCard, save_card

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["activity", "flat_shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "weight"], ["mm"]),
         helper.make_node("Add", ["mm", "bias"], ["lin"]),
         helper.make_node("Reshape", ["lin", "frame_shape"], ["frame"])],
        "pinv_decoder",
        [helper.make_tensor_value_info("activity", TensorProto.FLOAT, [1, WINDOW, neurons])],
        [helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, 36, 64])],
        [numpy_helper.from_array(np.array([1, WINDOW * neurons], np.int64), "flat_shape"),
         numpy_helper.from_array(weight.astype(np.float32), "weight"),
         numpy_helper.from_array(bias.astype(np.float32), "bias"),
         numpy_helper.from_array(np.array([1, 36, 64], np.int64), "frame_shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    used = {} if train_trials is None else {"train_trials": train_trials}
    save_card(ModelCard(neurons=neurons, window=WINDOW, lag=LAG, method="pinv (test)",
                        data_used=used), path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic mouse and the least-squares linear decoder of its responses."""
    root = tmp_path_factory.mktemp("rep")
    data = write_synthetic_dataset(root / "mouse", neurons=80, length=60, padded=64,
                                   delay=DELAY, noise=0.2, eval_mask=True, seed=3,
                                   tiers={"train": 12, "oracle": 2, "final_test_main": 4,
                                          "live_test_main": 2})
    return data, _fit_pinv(data, root / "pinv.onnx")


def _fit_pinv(data: Path, path: Path, trials: int | None = None) -> Path:
    """The least-squares linear decoder fitted on the first ``trials`` training trials."""
    ds = SensoriumDataset(data)
    # frame t is in response row t + DELAY, i.e. window slot W - 1 - LAG + DELAY
    xs, ys = [], []
    for tid in ds.trial_ids("train")[:trials]:
        r, v = ds.responses(tid), ds.video(tid)
        xs.append(r[DELAY:])
        ys.append(v[: len(v) - DELAY].reshape(len(v) - DELAY, -1))
    x, y = np.concatenate(xs), np.concatenate(ys)
    xm, ym = x.mean(0), y.mean(0)
    coef = np.linalg.lstsq(np.c_[x - xm, np.ones(len(x))], y - ym, rcond=None)[0][:-1]
    weight = np.zeros((WINDOW, 80, 36 * 64))
    weight[WINDOW - 1 - LAG + DELAY] = coef
    bias = ym - xm @ coef
    return _write_onnx(path, weight.reshape(WINDOW * 80, -1), bias, 80, trials)


def test_report_files_and_scores_match_the_metric(setup, tmp_path: Path) -> None:
    data, model = setup
    recon_dir = tmp_path / "recon"
    reconstruct(data, model, "final_test_main", recon_dir)
    out = tmp_path / "report"
    rep = build_report(data, "final_test_main",
                       [Method("pinv", "model", model), Method("folder", "recon", recon_dir)],
                       out, fractions=(1.0, 0.25), draws=2)
    ds = SensoriumDataset(data)
    mask, _ = choose_mask(ds, model)
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(rep))
    for label in ("pinv", "folder"):
        entry = saved["methods"][label]
        for tid in ds.trial_ids("final_test_main"):
            want = per_clip_correlation(np.load(recon_dir / f"{tid}.npy"), ds.video(tid), mask)
            assert entry["per_clip"][str(tid)] == pytest.approx(float(want[0]), abs=1e-6)
        scores = [v for v in entry["per_clip"].values()]
        assert entry["mean"] == pytest.approx(np.mean(scores), abs=1e-6)
        assert entry["picks"]["best"]["r"] == pytest.approx(max(scores), abs=1e-6)
        assert entry["picks"]["worst"]["r"] == pytest.approx(min(scores), abs=1e-6)
        for key in ("strip", "corr_map"):
            with Image.open(out / entry["images"][key]) as img:
                assert img.width > 100 and img.height > 50
        cmap = np.load(out / entry["images"]["corr_map_npy"])
        assert cmap.shape == (36, 64)
        movies = entry["images"]["movies"]
        assert set(movies) == {"best", "median", "worst"}
        with Image.open(out / movies["best"][0]) as gif:  # stimulus | reconstruction, per frame
            assert gif.format == "GIF" and gif.n_frames == ds.video(
                entry["picks"]["best"]["trial"]).shape[0] and gif.width > 2 * gif.height
        if len(movies["best"]) > 1:
            assert (out / movies["best"][1]).stat().st_size > 1000  # the MP4
    assert saved["methods"]["pinv"]["mean"] > 0.3          # the decoder works
    drop = saved["neuron_dropping"]
    assert "mean" in drop["how"] and [p["neurons"] for p in
                                      drop["methods"]["pinv"]["points"]] == [80, 20]
    assert len(drop["methods"]["pinv"]["points"][1]["draws"]) == 2
    assert "not_computed" in drop["methods"]["folder"]
    assert (out / "neurons.png").is_file()


def test_correlation_map_is_per_pixel_pearson() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(40, 6, 8))
    recon = target.copy()
    recon[:, :3] = -target[:, :3]                 # anti-correlated top half
    cmap = pixel_correlation_map([recon], [target])   # smoothing blurs, sign stays
    assert (cmap[:2] < -0.3).all() and (cmap[4:] > 0.3).all()


def test_dropping_neurons_lowers_the_score(setup, tmp_path: Path) -> None:
    data, model = setup
    rep = build_report(data, "final_test_main", [Method("pinv", "model", model)],
                       tmp_path / "r", fractions=(1.0, 0.5, 0.25, 0.125), draws=3, seed=1)
    means = [p["mean"] for p in rep["neuron_dropping"]["methods"]["pinv"]["points"]]
    assert means == sorted(means, reverse=True) and means[0] - means[-1] > 0.1, means


def test_cli_report_several_methods_and_withheld_tier(setup, tmp_path: Path, capsys) -> None:
    data, model = setup
    recon_dir = tmp_path / "rec"
    reconstruct(data, model, "final_test_main", recon_dir)
    out = tmp_path / "rep"
    assert main(["evaluate", "--data", str(data), "--tier", "final_test_main",
                 "--model", f"lin={model}", "--recon", f"fromdisk={recon_dir}",
                 "--report", str(out), "--fractions", "1,0.5", "--draws", "1"]) == 0
    text = capsys.readouterr().out
    assert "lin" in text and "fromdisk" in text
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["methods"]) == {"lin", "fromdisk"}
    # a tier without responses: the model is skipped with the reason, nothing crashes
    assert main(["evaluate", "--data", str(data), "--tier", "live_test_main",
                 "--model", str(model), "--report", str(tmp_path / "w")]) == 0
    saved = json.loads((tmp_path / "w/report.json").read_text())
    assert "no responses" in saved["skipped"]["pinv"] and saved["methods"] == {}
    # several sources without --report: each scored with one mask
    assert main(["evaluate", "--data", str(data), "--tier", "final_test_main",
                 "--model", str(model), "--recon", str(recon_dir)]) == 0
    assert capsys.readouterr().out.count("mean pixel correlation") >= 2
    assert main(["evaluate", "--data", str(data), "--report", str(out),
                 "--fractions", "x"]) == 2


def test_method_labels() -> None:
    assert parse_method("ridge=runs/a/ridge.onnx", "model") == Method(
        "ridge", "model", Path("runs/a/ridge.onnx"))
    assert parse_method("runs/a/live.onnx", "model").label == "live"
    assert parse_method("runs/inv", "recon").label == "inv"


def test_models_labelled_with_trial_counts_draw_the_learning_curve(setup, tmp_path: Path) -> None:
    data, _ = setup
    models = [Method(f"pinv@{n}", "model", _fit_pinv(data, tmp_path / f"p{n}.onnx", n))
              for n in (3, 12)]
    alone = Method("other@5", "model", _fit_pinv(data, tmp_path / "o5.onnx", 5))
    rep = build_report(data, "final_test_main", models + [alone], tmp_path / "r", draws=1,
                       fractions=(1.0,))
    curve = rep["trial_counts"]["curves"]
    assert list(curve) == ["pinv"]  # a name with one count has no curve
    assert [p["trials"] for p in curve["pinv"]] == [3, 12]
    assert [p["mean"] for p in curve["pinv"]] == [rep["methods"][m.label]["mean"] for m in models]
    assert curve["pinv"][1]["mean"] > curve["pinv"][0]["mean"]  # more trials, better fit
    with Image.open(tmp_path / "r" / "trials.png") as img:
        assert img.size[0] > 100
    assert parse_method("ridge@30=x.onnx", "model").label == "ridge@30"
