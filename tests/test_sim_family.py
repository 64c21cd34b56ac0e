"""The simulated-mouse family of issue 12 (daq/sim/family.py) and its new simulator knobs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cortexcast.daq.sim.family import DEV_SEEDS, INDICATORS, SUITE_SEEDS, sample_mouse
from cortexcast.daq.sim.neurons import FilterBank
from cortexcast.daq.sim.settings import SimSettings


def test_sample_mouse_is_deterministic_per_seed():
    a, b = sample_mouse(901), sample_mouse(901)
    assert a == b
    assert sample_mouse(902).settings != a.settings


def test_caps_change_nothing_else():
    full, capped = sample_mouse(903), sample_mouse(903, max_neurons=500, max_trials=10)
    assert capped.settings.n_neurons == min(500, full.settings.n_neurons)
    assert capped.trials == min(10, full.trials)
    assert dataclasses.replace(capped.settings, n_neurons=full.settings.n_neurons) \
        == full.settings


def test_family_covers_the_ranges():
    draws = [sample_mouse(s) for s in DEV_SEEDS]
    st = [d.settings for d in draws]

    def span(name):
        v = np.array([getattr(s, name) for s in st], float)
        return v.min(), v.max()

    lo, hi = span("n_neurons")
    assert 2000 <= lo < 3000 and 7000 < hi <= 8000
    trials = np.array([d.trials for d in draws])
    assert trials.min() >= 30 and trials.max() <= 240 and trials.min() < 45 and trials.max() > 150
    lo, hi = span("imaging_rate_hz")
    assert 6 <= lo < 8 and 20 < hi <= 30
    assert {d.indicator for d in draws} == set(INDICATORS)
    assert {d.eye_model for d in draws} == {"still", "shift", "shift+rotate"}
    assert span("eye_shift_px")[0] < 0.5 and span("eye_shift_px")[1] > 6
    assert span("nonvisual_fraction")[0] < 0.1 and span("nonvisual_fraction")[1] > 0.4
    assert span("shared_variability")[0] < 0.2 and span("shared_variability")[1] > 1.0
    assert span("rf_scale")[0] < 0.8 and span("rf_scale")[1] > 1.3
    assert span("eye_tracking_offset")[0] < -0.4 and span("eye_tracking_offset")[1] > 0.4
    assert span("calcium_decay_s")[0] < 0.35 and span("calcium_decay_s")[1] > 1.5
    assert len({s.mouse for s in st}) == 10


def test_dev_and_suite_seeds_do_not_overlap():
    assert not set(DEV_SEEDS) & set(SUITE_SEEDS)


def test_bad_seed_is_refused():
    with pytest.raises(ValueError):
        sample_mouse(-1)


def test_new_knobs_default_to_the_original_simulator():
    s = SimSettings()
    assert (s.eye_rotation_deg, s.retina_blur_px, s.eye_tracking_offset, s.rf_scale) == \
        (0.0, 0.0, 0.0, 1.0)
    frame = np.random.default_rng(0).integers(0, 255, (36, 64)).astype(np.uint8)
    assert np.array_equal(FilterBank(1.0)(frame), FilterBank()(frame))
    bigger = FilterBank(1.5)
    assert bigger.rf_sigma.max() == pytest.approx(1.5 * FilterBank().rf_sigma.max())
    with pytest.raises(ValueError):
        SimSettings(rf_scale=3.0)
    with pytest.raises(ValueError):
        SimSettings(eye_rotation_deg=-1.0)
