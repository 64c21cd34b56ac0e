"""A faithful miniature of a real Sensorium 2023 mouse folder, and the commands run on it.

What the real folders look like (gin.g-node.org/pollytur/Sensorium2023Data and
.../sensorium_2023_dataset, one zip per mouse, e.g.
``dynamic29156-11-10-Video-8744edeac3b4d1ce16b680916b5267ce``):

* ``data/videos/<i>.npy`` (36, 64, 324): every trial padded to 324 frames with NaN after its
  last frame (most trials have 300 frames, some more);
* ``data/responses/<i>.npy`` (N, 324), deconvolved, NaN-padded like the video;
* ``data/behavior/<i>.npy`` (2, 324) pupil dilation, running speed; ``data/pupil_center/<i>.npy``
  (2, 324) eye x, y; both NaN-padded;
* ``meta/trials/tiers.npy``: one of train, oracle, live_test_main, live_test_bonus,
  final_test_main, final_test_bonus (and none) per trial, plus other per-trial arrays;
* ``meta/neurons/``: unit_ids, cell_motor_coordinates, area, layer, animal_ids, scan_idx,
  sessions;
* ``meta/statistics/<variable>/{all,stimulus_frames}/{min,max,mean,median,std}.npy``;
* no ``eval_mask.npy``; test tiers' responses withheld (absent, NaN, or zero placeholders).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cortexcast.app.cli import main
from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset

MOUSE = "dynamic29156-11-10-Video-8744edeac3b4d1ce16b680916b5267ce"
PADDED = 96
N = 40
TIERS = ["train"] * 14 + ["oracle"] * 2 + ["live_test_main"] * 2 + ["final_test_main"] * 2 \
    + ["live_test_bonus"] * 2 + ["final_test_bonus"] * 2 + ["none"]


def write_real_layout(parent: Path, seed: int = 0) -> Path:
    """The miniature: short clips (PADDED frames, 80-90 valid), N neurons."""
    rng = np.random.default_rng(seed)
    root = parent / MOUSE
    for sub in ("data/videos", "data/responses", "data/behavior", "data/pupil_center",
                "meta/trials", "meta/neurons"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[0:36, 0:64]
    cy, cx = rng.uniform(10, 26, N), rng.uniform(18, 46, N)
    rf = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 18.0)
    rf = rf.reshape(N, -1) * rng.choice([-1, 1], N)[:, None]
    order = rng.permutation(len(TIERS))
    tiers = np.array([TIERS[i] for i in order])          # unordered, like the real ones
    allr, allv = [], []
    for tid, tier in enumerate(tiers):
        length = int(rng.choice([80, 80, 90]))
        movie = gaussian_filter(rng.standard_normal((length + 2, 36, 64)), (2, 3, 3))
        movie = np.clip(120 + 60 * movie / movie.std(), 0, 255)
        video = np.full((36, 64, PADDED), np.nan)                  # float64, like the zips
        video[:, :, :length] = np.moveaxis(movie[2:], 0, -1)
        drive = (movie[:length] - 120).reshape(length, -1) @ rf.T / 300.0
        resp = np.maximum(0, drive + 0.3 * rng.standard_normal((length, N)) + 0.5)
        full = np.full((N, PADDED), np.nan, np.float32)
        full[:, :length] = resp.T
        if tier in ("live_test_bonus",):
            full[:, :length] = np.nan                              # withheld: NaN
        elif tier == "final_test_bonus":
            full[:, :length] = 0.0                                 # withheld: zeros
        np.save(root / f"data/videos/{tid}.npy", video)
        np.save(root / f"data/responses/{tid}.npy", full)
        for kind, base in (("behavior", (30.0, 2.0)), ("pupil_center", (300.0, 200.0))):
            b = np.full((2, PADDED), np.nan, np.float32)
            b[:, :length] = np.array(base)[:, None] + rng.normal(size=(2, length))
            np.save(root / f"data/{kind}/{tid}.npy", b)
        if tier == "train":
            allr.append(resp)
            allv.append(movie[2:])
    np.save(root / "meta/trials/tiers.npy", tiers.astype("<U16"))
    np.save(root / "meta/trials/trial_idx.npy", np.arange(len(tiers)))
    np.save(root / "meta/neurons/unit_ids.npy", np.arange(1, N + 1))
    np.save(root / "meta/neurons/cell_motor_coordinates.npy", rng.normal(size=(N, 3)))
    for name, value in (("area", "V1"), ("layer", "L2/3"), ("animal_ids", 29156),
                        ("scan_idx", 10), ("sessions", 11)):
        np.save(root / f"meta/neurons/{name}.npy", np.array([value] * N))
    r, v = np.concatenate(allr), np.concatenate(allv)
    stats = {"responses": r, "videos": v.reshape(-1, 1)}
    for var, x in stats.items():
        for sub in ("all", "stimulus_frames"):
            d = root / "meta/statistics" / var / sub
            d.mkdir(parents=True)
            for fn in ("min", "max", "mean", "median", "std"):
                val = getattr(np, fn)(x, axis=0)
                np.save(d / f"{fn}.npy", val if var == "responses" else val.reshape(()))
    for var in ("behavior", "pupil_center"):
        d = root / "meta/statistics" / var / "all"
        d.mkdir(parents=True)
        np.save(d / "mean.npy", np.array([30.0, 2.0]))
        np.save(d / "std.npy", np.array([1.0, 1.0]))
    return root


@pytest.fixture(scope="module")
def mouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_real_layout(tmp_path_factory.mktemp("sensorium"))


def test_reader_understands_the_real_layout(mouse: Path) -> None:
    ds = SensoriumDataset(mouse)
    assert ds.n_neurons == N and ds.frame_shape == (36, 64)
    assert ds.tiers() == ["train", "oracle", "live_test_main", "live_test_bonus",
                          "final_test_main", "final_test_bonus", "none"]
    lengths = {ds.length(t) for t in ds.trial_ids()}
    assert lengths <= {80, 90} and len(lengths) == 2        # from the NaN padding
    assert ds.has_responses("train") and ds.has_responses("final_test_main")
    assert not ds.has_responses("live_test_bonus")          # NaN placeholders
    assert not ds.has_responses("final_test_bonus")         # zero placeholders
    tid = ds.trial_ids("train")[0]
    assert ds.video(tid).shape == (ds.length(tid), 36, 64)
    assert np.isfinite(ds.responses(tid)).all()
    assert ds.behavior_rows(tid).shape == (ds.length(tid), 4)
    assert ds.statistics("responses")["std"].shape == (N,)
    assert ds.eval_mask() is None


def test_the_zip_folder_one_level_up_names_the_mouse_folder(mouse: Path) -> None:
    with pytest.raises(DatasetError, match=MOUSE):
        SensoriumDataset(mouse.parent)


def test_withheld_tiers_are_skipped_with_a_message(mouse: Path, tmp_path: Path,
                                                   capsys) -> None:
    for tier in ("live_test_bonus", "final_test_bonus"):
        assert main(["reconstruct", "--method", "inversion", "--data", str(mouse), "--tier",
                     tier, "--out", str(tmp_path / tier), "--no-progress"]) == 0
        assert "no responses" in capsys.readouterr().err
        assert not (tmp_path / tier / "encoder.pt").exists()   # nothing trained for nothing
    assert main(["evaluate", "--data", str(mouse), "--tier", "final_test_bonus",
                 "--model", "x.onnx"]) == 2


@pytest.mark.slow
def test_train_reconstruct_evaluate_run_unchanged(mouse: Path, tmp_path: Path,
                                                  capsys) -> None:
    """The commands of docs/real-data.md, with small budgets."""
    model = tmp_path / "ridge.onnx"
    assert main(["train", "--method", "ridge", "--data", str(mouse), "--out", str(model),
                 "--no-progress"]) == 0
    rec = tmp_path / "ridge_recon"
    assert main(["reconstruct", "--data", str(mouse), "--model", str(model), "--tier",
                 "final_test_main", "--out", str(rec), "--no-progress"]) == 0
    inv = tmp_path / "inversion"
    assert main(["reconstruct", "--method", "inversion", "--data", str(mouse), "--tier",
                 "final_test_main", "--out", str(inv), "--members", "1", "--time-budget", "3",
                 "--iterations", "3", "--no-progress"]) == 0
    report = tmp_path / "report"
    capsys.readouterr()
    assert main(["evaluate", "--data", str(mouse), "--tier", "final_test_main",
                 "--model", f"ridge={model}", "--recon", f"inversion={inv}",
                 "--recon", f"ridge_offline={rec}", "--report", str(report),
                 "--fractions", "1,0.5", "--draws", "1"]) == 0
    saved = json.loads((report / "report.json").read_text())
    assert set(saved["methods"]) == {"ridge", "inversion", "ridge_offline"}
    assert saved["methods"]["ridge"]["per_clip"] == saved["methods"]["ridge_offline"]["per_clip"]
    # real folders carry no eval_mask.npy: the model's (estimated at training) or a new estimate
    assert saved["mask"]["source"].startswith(("stored with the model", "estimated"))
    for m in saved["methods"].values():
        assert m["clips_scored"] == 2
