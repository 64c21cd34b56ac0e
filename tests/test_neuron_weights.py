"""Neuron weights for the decoder's front end (issue 12): neurons the movie drives count,
noise (even noise shared across many neurons) does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.training.features import fit_front
from cortexcast.decoder.training.neuron_weights import fit_neuron_weights
from cortexcast.decoder.training.synthetic import write_synthetic_dataset
from cortexcast.decoder.training.windows import normalisation

VISUAL, NOISE = 24, 16


def _mouse_with_noise_neurons(root: Path) -> Path:
    """The synthetic mouse, its last NOISE neurons replaced by a strong shared fluctuation
    plus private noise: the largest variance in the population, and no movie in it."""
    data = write_synthetic_dataset(root, neurons=VISUAL + NOISE, length=80, padded=90,
                                   tiers={"train": 12, "oracle": 3, "final_test_main": 1})
    rng = np.random.default_rng(7)
    for f in sorted((data / "data" / "responses").glob("*.npy")):
        r = np.load(f)
        shared = 3.0 * rng.standard_normal(r.shape[1])
        r[VISUAL:] = 5.0 + shared + 0.5 * rng.standard_normal((NOISE, r.shape[1]))
        r[:, 80:] = np.nan
        np.save(f, r.astype(np.float32))
    return data


@pytest.fixture(scope="module")
def mouse(tmp_path_factory) -> SensoriumDataset:
    return SensoriumDataset(_mouse_with_noise_neurons(tmp_path_factory.mktemp("nw") / "m"))


def test_driven_neurons_weigh_more_than_noise(mouse: SensoriumDataset) -> None:
    ids = mouse.trial_ids("train")
    w = fit_neuron_weights(mouse, ids, normalisation(mouse, ids), components=16, lags=4)
    visual, noise = w.reliability[:VISUAL], w.reliability[VISUAL:]
    assert np.median(visual) > 0.5, visual
    assert noise.max() < 0.2, noise  # cross-validated: fitting noise earns nothing
    assert np.sqrt(np.mean(w.weights ** 2)) == pytest.approx(1.0)
    assert w.weights[VISUAL:].max() < 0.3 * np.median(w.weights[:VISUAL])
    summary = w.summary()
    assert 0 < summary["effective_fraction"] <= 1 and summary["max_r"] <= 1


def test_weighted_axes_follow_the_movie_not_the_shared_noise(mouse: SensoriumDataset) -> None:
    """Unweighted, the first axis is the shared fluctuation of the noise neurons (it has the
    most variance); weighted, the noise neurons barely enter any axis."""
    ids = mouse.trial_ids("train")
    norm = normalisation(mouse, ids)
    w = fit_neuron_weights(mouse, ids, norm, components=16, lags=4).weights
    zeros = np.zeros(4)
    args = (mouse, ids, norm, zeros, np.ones(4), np.zeros((2, mouse.n_neurons)), 4, 10_000, 0)
    plain, weighted = fit_front(*args), fit_front(*args, weights=w)

    def noise_share(axes: np.ndarray) -> float:
        a = axes / np.linalg.norm(axes, axis=0)
        return float((a[VISUAL:] ** 2).sum(0)[0])

    assert noise_share(plain.axes) > 0.8
    assert noise_share(weighted.axes) < 0.1
    # the weights are folded into the axes: the features are (z * w) @ V
    rows = mouse.responses(ids[0])[:80]
    z = (rows - plain.resp_mean) / plain.resp_std
    v = weighted.axes / np.where(w > 0, w, 1.0)[:, None]
    np.testing.assert_allclose(weighted(rows, None), (z * w) @ v, rtol=1e-4, atol=1e-4)


def test_bad_weights_are_refused(mouse: SensoriumDataset) -> None:
    ids = mouse.trial_ids("train")
    args = (mouse, ids, normalisation(mouse, ids), np.zeros(4), np.ones(4),
            np.zeros((2, mouse.n_neurons)), 4, 10_000, 0)
    for bad in (np.zeros(mouse.n_neurons), np.ones(3), np.full(mouse.n_neurons, np.nan)):
        with pytest.raises(ValueError, match="neuron weights"):
            fit_front(*args, weights=bad)
