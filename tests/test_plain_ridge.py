"""The plain ridge reference of issue 12 (decoder/training/plain_ridge.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.training.plain_ridge import (
    PlainRidgeSettings, fit_plain_ridge, lagged, score_plain_ridge)
from cortexcast.decoder.training.synthetic import write_synthetic_dataset


def test_lagged_stacks_future_frames_with_zeros_past_the_end():
    z = np.arange(8, dtype=float).reshape(4, 2)
    x = lagged(z, 3)
    assert x.shape == (4, 6)
    assert np.array_equal(x[0], [0, 1, 2, 3, 4, 5])
    assert np.array_equal(x[3], [6, 7, 0, 0, 0, 0])
    y = lagged(z, 3, first=-1)  # the window t - 1 .. t + 1
    assert np.array_equal(y[0], [0, 0, 0, 1, 2, 3])
    assert np.array_equal(y[3], [4, 5, 6, 7, 0, 0])


def test_plain_ridge_recovers_a_linear_ground_truth(tmp_path):
    write_synthetic_dataset(tmp_path, neurons=200, tiers={"train": 30, "oracle": 4},
                            noise=0.05, withheld=(), eval_mask=True)
    ds = SensoriumDataset(tmp_path)
    model = fit_plain_ridge(ds, PlainRidgeSettings(components=64, alpha=0.001))
    scores = score_plain_ridge(ds, model, ds.trial_ids("oracle"), ds.eval_mask())
    assert len(scores) == 4
    assert np.mean(list(scores.values())) > 0.9
    frames = model.predict(ds.responses(ds.trial_ids("oracle")[0]))
    assert frames.shape == (ds.length(ds.trial_ids("oracle")[0]), *ds.frame_shape)


def test_settings_are_checked():
    with pytest.raises(ValueError):
        PlainRidgeSettings(alpha=0.0)
    with pytest.raises(ValueError):
        PlainRidgeSettings(lags=0)
