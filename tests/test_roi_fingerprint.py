"""A model knows its ROIs (issue 9, item 6): the ROI fingerprint, the dataset's meta/rois.json,
the card's record of it after `train`, the live check and `doctor`'s check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cortexcast.core.roi_fingerprint import (
    DATASET_ROI_META, RoiMetaError, read_dataset_roi_meta, reference_sha256, roi_fingerprint,
    write_dataset_roi_meta,
)
from cortexcast.core.rois import ROISet, from_pixel_lists, load_rois, save_rois
from cortexcast.decoder.live.model_card import ModelCard, ModelError, check_model_rois

FRAME = (40, 48)


def _rois(n: int = 30, seed: int = 0, frame: tuple[int, int] = FRAME) -> ROISet:
    """n square somata with random (float64) weights, as an import would give."""
    rng = np.random.default_rng(seed)
    h, w = frame
    ys, xs, lams = [], [], []
    for _ in range(n):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        yy, xx = np.mgrid[y0:y0 + 4, x0:x0 + 4]
        ys.append(yy.ravel())
        xs.append(xx.ravel())
        lams.append(rng.uniform(0.1, 1.0, 16))
    return from_pixel_lists(ys, xs, lams, frame)


def _moved(rois: ROISet, which: int = 3) -> ROISet:
    """The same set with one footprint shifted one pixel right (one ROI drawn differently)."""
    m = rois.masks.tocoo()
    rows, cols, vals = m.row, m.col.copy(), m.data
    h, w = rois.frame_shape
    sel = rows == which
    cols[sel] = np.where(cols[sel] % w < w - 1, cols[sel] + 1, cols[sel] - 1)
    ys = [cols[rows == i] // w for i in range(rois.n_neurons)]
    xs = [cols[rows == i] % w for i in range(rois.n_neurons)]
    return from_pixel_lists(ys, xs, [vals[rows == i] for i in range(rois.n_neurons)],
                            rois.frame_shape)


# -- the fingerprint ------------------------------------------------------------------------

def test_fingerprint_is_stable_across_save_and_load(tmp_path: Path) -> None:
    rois = _rois()
    fp = roi_fingerprint(rois)
    assert fp["count"] == 30 and fp["frame_shape"] == [40, 48] and len(fp["sha256"]) == 64
    save_rois(tmp_path / "a.npz", rois)
    again = load_rois(tmp_path / "a.npz")
    assert roi_fingerprint(again) == fp
    save_rois(tmp_path / "b.npz", again)  # a second round trip
    assert roi_fingerprint(load_rois(tmp_path / "b.npz")) == fp
    assert roi_fingerprint(_rois()) == fp  # the same import built again
    assert json.loads(json.dumps(fp)) == fp  # goes into JSON as it is


def test_fingerprint_differs_when_one_footprint_changes() -> None:
    rois = _rois()
    fp = roi_fingerprint(rois)
    moved = roi_fingerprint(_moved(rois))
    assert moved["count"] == fp["count"] and moved["sha256"] != fp["sha256"]
    # one ROI's weights changed (same pixels)
    m = rois.masks.copy()
    m.data[m.indptr[5]] *= 1.5
    reweighted = ROISet(m, rois.blocks, rois.interp, rois.frame_shape, rois.centroids)
    assert roi_fingerprint(reweighted)["sha256"] != fp["sha256"]
    # one ROI fewer; another frame size; ROIs in another order
    assert roi_fingerprint(_rois(29))["count"] == 29
    bigger = roi_fingerprint(_rois(frame=(40, 64)))
    assert bigger["frame_shape"] == [40, 64] and bigger["sha256"] != fp["sha256"]
    order = np.r_[1, 0, 2:30]
    swapped = ROISet(rois.masks[order], rois.blocks, rois.interp[order], rois.frame_shape,
                     rois.centroids[order])
    assert roi_fingerprint(swapped)["sha256"] != fp["sha256"]


def test_dataset_meta_round_trip(tmp_path: Path) -> None:
    rois = _rois()
    assert read_dataset_roi_meta(tmp_path) is None
    ref = np.random.default_rng(1).random(FRAME).astype(np.float32)
    path = write_dataset_roi_meta(tmp_path, rois, rois_file="rois.npz", reference=ref)
    assert path == tmp_path / DATASET_ROI_META
    meta = read_dataset_roi_meta(tmp_path)
    assert meta == {"fingerprint": roi_fingerprint(rois), "rois_file": "rois.npz",
                    "reference_sha256": reference_sha256(ref), "reference_shape": [40, 48]}
    assert meta["reference_sha256"] == reference_sha256(ref.astype(np.float64))
    assert meta["reference_sha256"] != reference_sha256(ref + 1)
    write_dataset_roi_meta(tmp_path, rois, rois_file="rois.npz", reference=None)
    assert read_dataset_roi_meta(tmp_path)["reference_sha256"] is None
    (tmp_path / DATASET_ROI_META).write_text("{not json")
    with pytest.raises(RoiMetaError, match="rois.json.*cortexcast export"):
        read_dataset_roi_meta(tmp_path)


# -- the model card and the live check ------------------------------------------------------

def _card(meta: dict | None, neurons: int = 30) -> ModelCard:
    return ModelCard(neurons=neurons, window=2, lag=1, extra={} if meta is None
                     else {"rois": meta})


def test_check_model_rois_refuses_another_roi_set_naming_both_files(tmp_path: Path) -> None:
    rois = _rois()
    write_dataset_roi_meta(tmp_path, rois, rois_file="/rig/day1/rois.npz", reference=None)
    card = _card(read_dataset_roi_meta(tmp_path))
    check_model_rois(card, rois, "mouse.onnx", "/rig/day1/rois.npz")  # the same set: fine
    with pytest.raises(ModelError) as err:
        check_model_rois(card, _moved(rois), "/models/mouse.onnx", "/rig/day2/rois.npz")
    msg = str(err.value)
    assert "/models/mouse.onnx" in msg and "/rig/day2/rois.npz" in msg
    assert "/rig/day1/rois.npz" in msg and "footprints" in msg
    assert "cortexcast export" in msg and "cortexcast train" in msg
    with pytest.raises(ModelError, match="30 vs 29 ROIs"):
        check_model_rois(card, _rois(29), "mouse.onnx", "fewer.npz")
    with pytest.raises(ModelError, match="40x48 vs 40x64 frames"):
        check_model_rois(card, _rois(frame=(40, 64)), "mouse.onnx", "wide.npz")


def test_a_card_without_a_fingerprint_passes() -> None:
    check_model_rois(_card(None), _rois(), "bundled.onnx", "any.npz")
    with pytest.raises(ModelError, match="no ROI fingerprint"):
        check_model_rois(_card({"rois_file": "x"}), _rois(), "m.onnx", "any.npz")


# -- train records it; doctor checks it -----------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, ROISet]:
    """A tiny ridge model trained on a dataset whose meta/rois.json names rois.npz."""
    pytest.importorskip("onnx")
    from cortexcast.decoder.training.ridge import RidgeSettings, train_ridge
    from cortexcast.decoder.training.synthetic import write_synthetic_dataset

    tmp = tmp_path_factory.mktemp("roi_model")
    rois = _rois()
    save_rois(tmp / "rois.npz", rois)
    data = write_synthetic_dataset(tmp / "data", neurons=30, statistics=True,
                                   tiers={"train": 6, "oracle": 2}, length=40, padded=40)
    ref = np.full(FRAME, 7.0, np.float32)
    write_dataset_roi_meta(data, rois, rois_file=str(tmp / "rois.npz"), reference=ref)
    out = tmp / "mouse.onnx"
    train_ridge(RidgeSettings(data=str(data), out=str(out), window=2, lag=1, components=4,
                              progress=False))
    return out, tmp / "rois.npz", rois


def test_a_trained_ridge_model_records_the_fingerprint(trained, tmp_path: Path) -> None:
    from cortexcast.decoder.live.model_card import load_card

    out, rois_file, rois = trained
    card = load_card(out)
    assert card.extra["rois"]["fingerprint"] == roi_fingerprint(rois)
    assert card.extra["rois"]["rois_file"] == str(rois_file)
    assert card.extra["rois"]["reference_sha256"] == reference_sha256(np.full(FRAME, 7.0))
    check_model_rois(card, load_rois(rois_file), out, rois_file)
    with pytest.raises(ModelError, match="mouse.onnx.*other.npz"):
        check_model_rois(card, _moved(rois), out, tmp_path / "other.npz")


def test_the_live_decoder_refuses_another_roi_set_naming_both_files(trained,
                                                                    tmp_path: Path) -> None:
    from cortexcast.decoder.live.process import DecoderSettings, FrameDecoder

    out, rois_file, rois = trained
    FrameDecoder(DecoderSettings(rois=str(rois_file), model=str(out)))  # its own set: fine
    other = tmp_path / "day2.npz"
    save_rois(other, _moved(rois))
    with pytest.raises(ModelError, match=f"mouse.onnx.*{other.name}|{other.name}.*mouse.onnx"):
        FrameDecoder(DecoderSettings(rois=str(other), model=str(out)))


def test_training_refuses_a_meta_that_names_another_neuron_count(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from cortexcast.decoder.offline.dataset import DatasetError
    from cortexcast.decoder.training.ridge import RidgeSettings, train_ridge
    from cortexcast.decoder.training.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", neurons=30, statistics=True,
                                   tiers={"train": 4, "oracle": 1}, length=30, padded=30)
    write_dataset_roi_meta(data, _rois(12), rois_file="rois.npz", reference=None)
    with pytest.raises(DatasetError, match="12 ROIs.*30 neurons"):
        train_ridge(RidgeSettings(data=str(data), out=str(tmp_path / "m.onnx"), window=2,
                                  lag=1, components=4, progress=False))


def _decoder_config(tmp_path: Path, rois: Path, model: Path) -> Path:
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f'[decoder]\nrois = "{rois.as_posix()}"\nmodel = "{model.as_posix()}"\n')
    return cfg


def test_doctor_prints_the_fingerprint_and_flags_a_mismatch(trained, tmp_path: Path) -> None:
    from cortexcast.app.doctor import format_report, run_checks

    out, rois_file, rois = trained
    fp = roi_fingerprint(rois)
    ok = [c for c in run_checks(_decoder_config(tmp_path, rois_file, out))
          if c.name == "ROI set"]
    assert [c.status for c in ok] == ["OK"], ok
    assert fp["sha256"][:12] in ok[0].detail and "= the set mouse.onnx was trained on" \
        in ok[0].detail
    other = tmp_path / "day2.npz"
    save_rois(other, _moved(rois))
    cfg = _decoder_config(tmp_path, other, out)
    checks = run_checks(cfg)
    bad = [c for c in checks if c.name == "ROI set"]
    assert [c.status for c in bad] == ["FAIL"], bad
    assert str(other) in bad[0].detail and str(rois_file) in bad[0].detail
    assert str(rois_file) in bad[0].fix and "cortexcast train" in bad[0].fix
    assert "FAIL  ROI set" in format_report(checks, cfg)


def test_doctor_passes_a_model_without_a_fingerprint(tmp_path: Path) -> None:
    from cortexcast.app.doctor import run_checks
    from cortexcast.decoder.training.synthetic import write_linear_model

    pytest.importorskip("onnx")
    model = tmp_path / "old.onnx"
    write_linear_model(model, neurons=30, window=2, lag=1)
    save_rois(tmp_path / "rois.npz", _rois())
    checks = [c for c in run_checks(_decoder_config(tmp_path, tmp_path / "rois.npz", model))
              if c.name == "ROI set"]
    assert [c.status for c in checks] == ["OK"] and "not compared" in checks[0].detail


@pytest.mark.slow
def test_several_mice_each_card_records_its_own_roi_set(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from cortexcast.decoder.live.model_card import load_card
    from cortexcast.decoder.training.common import TrainSettings
    from cortexcast.decoder.training.multi_mouse import train_mice
    from cortexcast.decoder.training.synthetic import write_synthetic_dataset

    tiers = {"train": 4, "oracle": 2}
    a = write_synthetic_dataset(tmp_path / "a", neurons=30, tiers=tiers, length=40, padded=40)
    b = write_synthetic_dataset(tmp_path / "b", neurons=20, tiers=tiers, length=40, padded=40,
                                seed=3)
    write_dataset_roi_meta(a, _rois(30), rois_file="a_rois.npz", reference=None)
    write_dataset_roi_meta(b, _rois(20, seed=5), rois_file="b_rois.npz", reference=None)
    out = tmp_path / "joint.onnx"
    train_mice([str(a), str(b)], TrainSettings(
        data=str(a), out=str(out), window=2, lag=1, epochs=2, ensemble=1, readout=8,
        pixels=16, pca_frames=200, device="cpu", progress=False, time_budget_s=30))
    ca, cb = load_card(out.with_name("joint.a.onnx")), load_card(out.with_name("joint.b.onnx"))
    assert ca.extra["rois"]["fingerprint"] == roi_fingerprint(_rois(30))
    assert cb.extra["rois"]["fingerprint"] == roi_fingerprint(_rois(20, seed=5))
    assert cb.extra["rois"]["rois_file"] == "b_rois.npz"
