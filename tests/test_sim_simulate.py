"""`cortexcast simulate`: a valid Sensorium-2023-layout dataset from the simulated rig."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app import simulate
from cortexcast.daq.sim.settings import SimSettings
from cortexcast.daq.sim.stimulus import TEST_IMAGES, TRAIN_IMAGES, VALIDATION_IMAGES
from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.core.rois import load_rois

SMALL = ["--preset", "easy", "--neurons", "300", "--height", "128", "--width", "128", "--trials", "8",
         "--test-trials", "2", "--frames", "90", "--oracle-clips", "1", "--oracle-repeats", "3",
         "--warmup-s", "2"]


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cortexcast")
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "mouseA"
    assert cli(["--out", str(out), *SMALL]) == 0
    return out


def test_layout_shapes_and_tiers(dataset: Path):
    tiers = np.load(dataset / "meta/trials/tiers.npy")
    assert sorted(tiers.tolist()) == sorted(
        ["train"] * 8 + ["oracle"] * 3 + ["live_test_main"] * 2 + ["final_test_main"] * 2)
    for tid in range(len(tiers)):
        video = np.load(dataset / f"data/videos/{tid}.npy")
        resp = np.load(dataset / f"data/responses/{tid}.npy")
        beh = np.load(dataset / f"data/behavior/{tid}.npy")
        eye = np.load(dataset / f"data/pupil_center/{tid}.npy")
        assert video.shape == (36, 64, 90) and video.dtype.kind == "f"
        assert np.isfinite(video).all() and video.min() >= 0 and video.max() <= 255
        assert resp.shape == (300, 90) and resp.dtype == np.float32 and np.isfinite(resp).all()
        assert beh.shape == (2, 90) and eye.shape == (2, 90)
        assert (beh[1] >= 0).all() and (beh[0] > 0).all()  # running speed, pupil dilation
    assert np.load(dataset / "meta/neurons/unit_ids.npy").shape == (300,)
    assert np.load(dataset / "meta/neurons/cell_motor_coordinates.npy").shape == (300, 3)
    for var, shape in (("responses", (300,)), ("videos", ()), ("behavior", (2,)),
                       ("pupil_center", (2,))):
        for stat in ("mean", "std"):
            assert np.load(dataset / f"meta/statistics/{var}/all/{stat}.npy").shape == shape
    ds = SensoriumDataset(dataset)  # the decoder's own reader accepts it
    assert ds.n_neurons == 300 and ds.frame_shape == (36, 64)
    assert all(t.length == 90 and t.has_responses for t in ds.trials.values())


def test_extras_describe_the_animal(dataset: Path):
    rois = load_rois(dataset / "rois.npz")
    assert rois.n_neurons == 300 and rois.frame_shape == (128, 128)
    mask = np.load(dataset / "eval_mask.npy")
    assert mask.shape == (36, 64) and mask.dtype == bool and 0.1 < mask.mean() < 0.9
    settings = SimSettings(**json.loads((dataset / "sim.json").read_text()))
    assert (settings.mouse, settings.seed, settings.n_neurons) == ("A", 0, 300)
    assert (settings.frame_height, settings.frame_width) == (128, 128)


def test_test_tiers_show_only_held_out_images(dataset: Path):
    tiers = np.load(dataset / "meta/trials/tiers.npy")
    images = np.load(dataset / "meta/trials/images.npy")
    seen = {tier: set() for tier in set(tiers.tolist())}
    for tier, names in zip(tiers, images):
        seen[str(tier)] |= set(str(names).split("+"))
    assert seen["train"] <= set(TRAIN_IMAGES)
    assert seen["oracle"] and seen["oracle"] <= set(VALIDATION_IMAGES)
    for tier in ("live_test_main", "final_test_main"):
        assert seen[tier] and seen[tier] <= set(TEST_IMAGES)
    # and no test frame is a train frame
    train = {np.load(dataset / f"data/videos/{i}.npy")[:, :, 0].tobytes()
             for i in np.flatnonzero(tiers == "train")}
    for i in np.flatnonzero(tiers == "final_test_main"):
        assert np.load(dataset / f"data/videos/{i}.npy")[:, :, 0].tobytes() not in train


def test_responses_are_locked_to_the_stimulus(dataset: Path):
    tiers = np.load(dataset / "meta/trials/tiers.npy")
    clip_ids = np.load(dataset / "meta/trials/clip_ids.npy")
    oracle = np.flatnonzero(tiers == "oracle")
    assert len(set(clip_ids[oracle].tolist())) == 1  # one clip shown three times
    videos = [np.load(dataset / f"data/videos/{i}.npy") for i in oracle]
    np.testing.assert_array_equal(videos[0], videos[1])

    def psth(i: int) -> np.ndarray:
        r = np.load(dataset / f"data/responses/{i}.npy")[:, 20:]
        return (r - r.mean(1, keepdims=True)).ravel()

    same = np.corrcoef(psth(oracle[0]), psth(oracle[1]))[0, 1]
    other = np.flatnonzero(tiers == "train")[0]
    different = np.corrcoef(psth(oracle[0]), psth(other))[0, 1]
    assert same > 0.1 and same > different + 0.1, (same, different)


def test_refuses_to_overwrite_and_rejects_bad_settings(dataset: Path, tmp_path: Path, capsys):
    assert cli(["--out", str(dataset), *SMALL]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli(["--out", str(tmp_path / "x"), "--neurons", "50"]) == 2
    assert "n_neurons" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--neurons", "--trials", "--test-trials", "--frames", "--height",
                "--width", "--seed", "--mouse", "--session-seed"):
        assert opt in text
