"""The Sensorium 2023 layout reader: happy path and every error it names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.training.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "mouse", neurons=20,
                                   length=50, padded=60)


@pytest.fixture
def copy(data_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data_dir, tmp_path / "mouse"))


def test_reads_layout(data_dir: Path) -> None:
    ds = SensoriumDataset(data_dir)
    assert ds.n_neurons == 20 and ds.frame_shape == (36, 64)
    assert ds.tiers() == ["train", "oracle", "live_test_main", "final_test_main"]
    assert len(ds.trial_ids("train")) == 16 and len(ds.trial_ids()) == 24
    tiers = np.load(data_dir / "meta/trials/tiers.npy")
    for tid in ds.trial_ids():
        assert ds.trial(tid).tier == tiers[tid]
        assert ds.length(tid) == 50
    assert ds.has_responses("train") and ds.has_responses("final_test_main")
    assert not ds.has_responses("live_test_main")
    tid = ds.trial_ids("oracle")[0]
    video = ds.video(tid)
    assert video.shape == (50, 36, 64) and video.dtype == np.float32
    assert np.isfinite(video).all()
    raw = ds.raw("videos", tid)
    np.testing.assert_array_equal(video[7], raw[:, :, 7])
    assert isinstance(raw, np.memmap)
    resp = ds.responses(tid)
    assert resp.shape == (50, 20) and np.isfinite(resp).all()
    np.testing.assert_array_equal(resp[:, 3], ds.raw("responses", tid)[3, :50])
    assert ds.behavior(tid).shape == (50, 2) and ds.pupil_center(tid).shape == (50, 2)
    assert ds.statistics("responses") == {} and ds.eval_mask() is None
    assert "NO responses" in ds.summary()


def test_optional_statistics_and_mask(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "m", neurons=10, length=40, padded=40,
                                   statistics=True, eval_mask=True)
    ds = SensoriumDataset(root)
    stats = ds.statistics("responses")
    assert stats["mean"].shape == (10,) and stats["std"].shape == (10,)
    assert float(ds.statistics("video")["mean"]) == 80.0  # singular spelling also works
    mask = ds.eval_mask()
    assert mask is not None and mask.dtype == bool and mask.shape == (36, 64) and mask.any()
    assert ds.length(ds.trial_ids()[0]) == 40  # no NaN padding: length is T


def test_withheld_responses_are_reported_not_fatal(copy: Path) -> None:
    ds = SensoriumDataset(copy)
    tid = ds.trial_ids("live_test_main")[0]
    with pytest.raises(DatasetError, match="no responses"):
        ds.responses(tid)
    with pytest.raises(DatasetError, match="no responses"):
        ds.require_tier("live_test_main")
    # responses present but all NaN (how withheld tiers can also look) -> same
    oracle = ds.trial_ids("oracle")
    np.save(copy / f"data/responses/{oracle[0]}.npy", np.full((20, 60), np.nan, np.float32))
    assert not SensoriumDataset(copy).has_responses("oracle")


def test_not_the_layout_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        SensoriumDataset(tmp_path / "nowhere")
    (tmp_path / "data/videos").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"missing data/responses, meta/trials/tiers.npy"):
        SensoriumDataset(tmp_path)


def test_mismatched_neuron_counts(copy: Path) -> None:
    tid = SensoriumDataset(copy).trial_ids("train")[0]
    np.save(copy / f"data/responses/{tid}.npy", np.zeros((19, 60), np.float32))
    with pytest.raises(DatasetError, match=r"different neuron counts: 19 \(e.g. trial"):
        SensoriumDataset(copy)


def test_nan_only_trial(copy: Path) -> None:
    np.save(copy / "data/videos/3.npy", np.full((36, 64, 60), np.nan, np.float32))
    with pytest.raises(DatasetError, match="trial 3 is all NaN"):
        SensoriumDataset(copy)


def test_tiers_shorter_than_trials(copy: Path) -> None:
    np.save(copy / "meta/trials/tiers.npy", np.array(["train"] * 5))
    with pytest.raises(DatasetError, match="lists only 5 trials"):
        SensoriumDataset(copy)


def test_unit_ids_disagree_with_responses(copy: Path) -> None:
    np.save(copy / "meta/neurons/unit_ids.npy", np.arange(21))
    with pytest.raises(DatasetError, match="lists 21 neurons but the responses have 20"):
        SensoriumDataset(copy)


def test_bad_eval_mask(copy: Path) -> None:
    np.save(copy / "eval_mask.npy", np.ones((10, 10), bool))
    with pytest.raises(DatasetError, match="mask is"):
        SensoriumDataset(copy).eval_mask()


def test_unknown_tier_and_trial(data_dir: Path) -> None:
    ds = SensoriumDataset(data_dir)
    with pytest.raises(DatasetError, match="no trials in tier 'final_test_bonus'"):
        ds.require_tier("final_test_bonus")
    with pytest.raises(DatasetError, match="no trial 999"):
        ds.video(999)
