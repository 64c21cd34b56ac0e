"""Window and lag chosen on validation within the latency budget (issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.training.common import split_validation
from cortexcast.decoder.training.lag_choice import (
    block_columns, candidates, max_lag_frames, wide_window,
)
from cortexcast.decoder.training.ridge import RidgeSettings, train_ridge
from cortexcast.decoder.training.ridge_fit import LinearFrontEnd, trial_design, trial_features
from cortexcast.decoder.training.synthetic import write_synthetic_dataset


def test_the_budget_bounds_the_lag() -> None:
    assert max_lag_frames(300, 10) == 9
    assert max_lag_frames(100, 10) == 3  # 33.3 ms per row
    assert max_lag_frames(99, 10) == 2
    assert max_lag_frames(0, 10) == 0
    assert max_lag_frames(1000, 10) == 9  # never beyond the window
    with pytest.raises(ValueError):
        max_lag_frames(-1, 10)
    cands = candidates(10, 3)
    assert max(lag for _, lag in cands) == 3
    assert {w for w, _ in cands} == {10, 5}


def test_each_candidate_is_a_block_of_the_wide_design(tmp_path: Path) -> None:
    """The design every candidate is scored with is exactly its own causal window."""
    data = write_synthetic_dataset(tmp_path / "d", neurons=12, length=30, padded=40,
                                   tiers={"train": 2})
    ds = SensoriumDataset(data)
    rng = np.random.default_rng(0)
    front = LinearFrontEnd(rng.standard_normal((12, 3)).astype(np.float32),
                           rng.standard_normal(3).astype(np.float32))
    cands = candidates(10, 9)
    wide = wide_window(cands)
    assert wide == (19, 9)
    tid = ds.trial_ids("train")[0]
    t = ds.length(tid)
    feats = trial_features(ds, tid, front, *wide)
    idx = np.arange(t)[:, None] + np.arange(wide[0])[None]
    wide_x = feats[idx].reshape(t, -1)
    for w, lag in cands:
        own = trial_design(ds, tid, front, w, lag)
        np.testing.assert_array_equal(wide_x[:, block_columns((w, lag), wide, 3)], own)


@pytest.fixture(scope="module")
def delayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Responses follow the movie 4 rows (133 ms) late."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("lag") / "d", neurons=40, delay=4,
                                   tiers={"train": 12, "oracle": 3, "final_test_main": 2})


def test_ridge_finds_the_delay_and_respects_the_budget(delayed: Path, tmp_path: Path) -> None:
    card = train_ridge(RidgeSettings(data=str(delayed), out=str(tmp_path / "a.onnx"),
                                     components=12, progress=False)).card
    choice = card.extra["training"]["window_choice"]
    cand = choice["candidates"]
    covers = {k: v for k, v in cand.items() if int(k.split("/L")[1]) >= 4}
    misses = {k: v for k, v in cand.items() if int(k.split("/L")[1]) < 4}
    # windows that hold the delayed response beat every window that ends before it
    assert min(covers.values()) > max(misses.values())
    assert card.lag >= 4 and (card.window, card.lag) == (choice["window"], choice["lag"])
    assert "chosen on validation" in card.method
    # a 100 ms budget: lag 3 at most, and the card says what it cost
    tight = train_ridge(RidgeSettings(data=str(delayed), out=str(tmp_path / "b.onnx"),
                                      components=12, max_lag_ms=100, progress=False)).card
    tc = tight.extra["training"]["window_choice"]
    assert tight.lag <= 3 and all(int(k.split("/L")[1]) <= 3 for k in tc["candidates"])
    assert tc["score"] < choice["score"]


def test_validation_split_keeps_repeats_of_a_clip_together(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "d", neurons=10, length=20, padded=30,
                                   tiers={"train": 2, "oracle": 4})
    ds = SensoriumDataset(data)
    ids = ds.trial_ids("oracle")
    # distinct clips: alternate sides, nothing shared, nothing lost
    stop, select = split_validation(ds, ids)
    assert stop and select and not set(stop) & set(select)
    assert sorted(stop + select) == sorted(ids)
    # two clips, each shown twice: each clip's repeats on one side
    a, b = ds.video(ids[0]), ds.video(ids[1])
    shown = {ids[0]: a, ids[1]: b, ids[2]: a, ids[3]: b}
    ds.video = lambda tid: shown[tid]  # type: ignore[method-assign]
    stop, select = split_validation(ds, ids)
    assert {tuple(stop), tuple(select)} == {(ids[0], ids[2]), (ids[1], ids[3])}
    # the same clip shown on every trial: nothing independent to split
    ds.video = lambda tid: a  # type: ignore[method-assign]
    assert split_validation(ds, ids) == (list(ids), list(ids))
