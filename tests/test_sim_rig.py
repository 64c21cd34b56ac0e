"""The simulated rig as an acquisition source: reproducibility, events, timing, ROIs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cortexcast.core.config import ConfigError, settings_from_table
from cortexcast.core.pacing import FramePacer
from cortexcast.daq.sim.rig import SimulatedRig
from cortexcast.daq.sim.settings import SimSettings
from cortexcast.core.events import ImagingFrame, StimulusFrame, SyncEvent
from cortexcast.daq.source import AcquisitionSource
from cortexcast.decoder.live.extraction import ActivityExtractor

SMALL = dict(n_neurons=300, frame_height=128, frame_width=128, paced=False)


def small(**kw) -> SimSettings:
    return SimSettings(**{**SMALL, **kw})


def run(rig: SimulatedRig) -> list:
    with rig:
        return list(rig.events())


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


@pytest.fixture(scope="module")
def one_second() -> tuple[SimulatedRig, list]:
    rig = SimulatedRig(small(duration_s=1.0))
    return rig, run(rig)


def test_is_an_acquisition_source(one_second):
    rig, _ = one_second
    assert isinstance(rig, AcquisitionSource)


def test_same_mouse_and_seed_give_the_same_animal_and_frames(one_second):
    rig_a, ev_a = one_second
    rig_b = SimulatedRig(small(duration_s=1.0))
    ev_b = run(rig_b)
    fa, fb = rig_a.layout.footprints, rig_b.layout.footprints
    assert (fa != fb).nnz == 0
    np.testing.assert_array_equal(rig_a.population.rf_yx, rig_b.population.rf_yx)
    np.testing.assert_array_equal(rig_a.population.drive_std, rig_b.population.drive_std)
    frames_a, frames_b = of(ev_a, ImagingFrame), of(ev_b, ImagingFrame)
    assert len(frames_a) == len(frames_b) == 30
    for a, b in zip(frames_a, frames_b):
        np.testing.assert_array_equal(a.pixels, b.pixels)
    # and a second session on the same object replays identically
    again = of(run(rig_a), ImagingFrame)
    np.testing.assert_array_equal(again[-1].pixels, frames_a[-1].pixels)


def test_session_seed_changes_the_movie_not_the_animal(one_second):
    rig_a, ev_a = one_second
    rig_b = SimulatedRig(small(duration_s=1.0, session_seed=2))
    ev_b = run(rig_b)
    assert (rig_a.layout.footprints != rig_b.layout.footprints).nnz == 0
    np.testing.assert_array_equal(rig_a.population.rf_yx, rig_b.population.rf_yx)
    sa, sb = of(ev_a, StimulusFrame), of(ev_b, StimulusFrame)
    assert not np.array_equal(sa[0].pixels, sb[0].pixels)
    assert not np.array_equal(of(ev_a, ImagingFrame)[5].pixels, of(ev_b, ImagingFrame)[5].pixels)


def test_another_seed_or_mouse_is_another_animal(one_second):
    rig_a, _ = one_second
    for other in (small(seed=1), small(mouse="C")):
        rig_b = SimulatedRig(other)
        assert (rig_a.layout.footprints != rig_b.layout.footprints).nnz > 0


def test_event_order_types_and_shapes(one_second):
    rig, events = one_second
    s = rig.settings
    shown, expected_frame, last_stim = -1, 0, -1
    stimuli: dict[int, StimulusFrame] = {}
    sync: SyncEvent | None = None  # each frame's sync comes just before the frame
    for ev in events:
        if isinstance(ev, StimulusFrame):
            assert sync is None
            assert ev.index == last_stim + 1  # global, increasing, none skipped
            last_stim = ev.index
            assert ev.pixels.dtype == np.uint8 and ev.pixels.shape == (36, 64)
            assert ev.t <= expected_frame / s.imaging_rate_hz + 0.5 / s.imaging_rate_hz
            stimuli[ev.index] = ev
        elif isinstance(ev, SyncEvent):
            assert sync is None
            assert ev.imaging_frame == expected_frame and ev.t == pytest.approx(
                expected_frame / s.imaging_rate_hz)
            assert ev.stim_frame == last_stim  # the newest stimulus frame is on screen
            assert ev.t_flip == pytest.approx(stimuli[ev.stim_frame].t)
            assert ev.photodiode.dtype == np.float32 and ev.photodiode.shape == (
                s.photodiode_samples,)
            assert set(ev.behavior) == {"running", "pupil", "pupil_x", "pupil_y"}
            assert all(np.isfinite(v) for v in ev.behavior.values())
            assert ev.behavior["running"] >= 0
            sync = ev
        else:
            assert isinstance(ev, ImagingFrame) and sync is not None
            assert ev.index == expected_frame == sync.imaging_frame
            assert ev.t == pytest.approx(ev.index / s.imaging_rate_hz)
            assert ev.pixels.dtype == np.uint16 and ev.pixels.shape == (128, 128)
            assert isinstance(ev.meta["t_mono_ns"], int)
            shown = sync.stim_frame
            sync = None
            expected_frame += 1
    assert expected_frame == 30 and shown == 29


def test_sync_when_imaging_is_slower_than_the_screen():
    s = small(imaging_rate_hz=8.0, stim_rate_hz=30.0, duration_s=2.0)
    events = run(SimulatedRig(s))
    stims = of(events, StimulusFrame)
    assert [e.index for e in stims] == list(range(len(stims)))
    onsets = np.array([e.t for e in stims])
    for sync in of(events, SyncEvent):
        mid = sync.t + 0.5 / 8.0
        assert sync.stim_frame == int(np.flatnonzero(onsets <= mid).max())
    assert len(of(events, ImagingFrame)) == 16 and len(stims) > 55


def test_photodiode_follows_the_flips():
    s = small(duration_s=0.5, photodiode_noise_v=0.0, monitor_delay_s=0.01)
    for sync in of(run(SimulatedRig(s)), SyncEvent):
        pd = sync.photodiode
        # the last sample is taken after this frame's flip: high on even frames
        assert (pd[-1] > 0.6) == (sync.stim_frame % 2 == 0)
        # the first samples (before the 10 ms monitor delay) still show the previous frame
        if sync.stim_frame > 0:
            assert (pd[0] > 0.6) == (sync.stim_frame % 2 == 1)


def test_clips_play_back_to_back_then_stop():
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 255, (10, 36, 64), dtype=np.uint8),
             rng.integers(0, 255, (5, 36, 64), dtype=np.uint8)]
    events = run(SimulatedRig(small(), clips=clips))
    stims = of(events, StimulusFrame)
    assert len(stims) == 15
    shown = np.concatenate(clips)
    for k, e in enumerate(stims):
        np.testing.assert_array_equal(e.pixels, shown[k])
    assert [e.clip for e in stims] == ["0"] * 10 + ["1"] * 5
    assert [e.clip_frame for e in stims] == list(range(10)) + list(range(5))
    syncs = of(events, SyncEvent)
    assert [e.stim_frame for e in syncs] == list(range(15))
    with pytest.raises(ValueError):
        SimulatedRig(small(), clips=[np.zeros((3, 36, 64), np.float32)])


def test_pacer_deadlines_are_absolute():
    now = [1_000_000_000]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += int(s * 1e9)

    p = FramePacer(30.0, clock=lambda: now[0], sleep=sleep)
    period = 1e9 / 30
    assert p.wait(0) == 1_000_000_000 + round(period)
    now[0] += int(0.1e9)  # frame 1 is computed 100 ms late ...
    slept.clear()
    assert p.wait(1) == 1_000_000_000 + round(2 * period)
    assert slept == []  # ... so it is not slept for
    for i in range(2, 10):
        p.wait(i)
    # ... and frame 9 is due at its original time, not 100 ms later
    assert now[0] >= p.due(3) and p.due(9) == 1_000_000_000 + round(10 * period)
    assert p.due(99) - p.due(0) == round(100 * period) - round(period)


def test_pacer_rests_into_the_period_but_not_past_what_compute_needs():
    now = [0]
    p = FramePacer(30.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + int(s * 1e9)))
    period = 1e9 / 30
    now[0] = p.due(0) + 1_000_000  # frame 0 went out 1 ms ago
    p.rest(1, compute_ns=5e6)  # computing takes 5 ms: start 30 % into the period
    assert now[0] == pytest.approx(p.due(0) + 0.3 * period, abs=2)
    now[0] = p.due(1) + 1_000_000
    p.rest(2, compute_ns=14e6)  # 14 ms: wake 28 ms before frame 2 is due instead
    assert now[0] == pytest.approx(p.due(2) - 28e6, abs=2)
    now[0] = p.due(2) + 20_000_000  # already past the rest point: no sleep
    p.rest(3, compute_ns=1e6)
    assert now[0] == p.due(2) + 20_000_000


def test_paced_run_keeps_the_rate():
    rig = SimulatedRig(small(paced=True, duration_s=0.5))
    t0 = time.monotonic_ns()
    frames = of(run(rig), ImagingFrame)
    wall = (time.monotonic_ns() - t0) / 1e9
    stamps = np.array([f.meta["t_mono_ns"] for f in frames])
    assert len(frames) == 15
    np.testing.assert_allclose(np.diff(stamps) / 1e9, 1 / 30, atol=2e-6)  # no drift
    assert 0.45 < wall < 1.5


def test_footprints_are_inside_the_frame_and_one_per_neuron():
    for kw in (dict(n_neurons=300), dict(n_neurons=100, frame_height=32, frame_width=32),
               dict(n_neurons=9000, frame_height=256, frame_width=320)):
        rig = SimulatedRig(small(**kw))
        rois = rig.rois()
        h, w = rig.frame_shape
        n = rig.settings.n_neurons
        assert rois.n_neurons == n == rig.n_neurons
        assert rois.masks.shape == (n, h * w) and rois.frame_shape == (h, w)
        px = np.diff(rois.masks.indptr)
        assert px.min() >= 5 and px.max() <= 400
        np.testing.assert_allclose(np.asarray(rois.masks.sum(axis=1)).ravel(), 1, rtol=1e-5)
        c = rois.centroids
        assert (c[:, 0] >= 0).all() and (c[:, 0] < h).all()
        assert (c[:, 1] >= 0).all() and (c[:, 1] < w).all()


def test_neuron_count_range():
    for bad in (99, 100_001, 7800.5):
        with pytest.raises(ValueError, match="n_neurons"):
            SimSettings(n_neurons=bad)
    with pytest.raises(ValueError, match="images"):
        SimSettings(images="holdout")
    with pytest.raises(ConfigError, match="n_neurons"):
        settings_from_table(SimSettings, {"n_neurons": 50}, "rig.toml: [daq.sim]")
    s = settings_from_table(SimSettings, {"n_neurons": 100, "duration_s": 3}, "t")
    assert s.n_neurons == 100 and s.duration_s == 3.0


def test_extraction_of_simulated_frames_recovers_the_ground_truth():
    rig = SimulatedRig(small(duration_s=25.0))
    ex = ActivityExtractor(rig.rois(), rig.settings.imaging_rate_hz)
    got, truth = [], []
    with rig:
        for ev in rig.events():
            if isinstance(ev, ImagingFrame):
                got.append(ex(ev.pixels))
                truth.append(rig.truth["dff"])
    got, truth = np.array(got[150:]), np.array(truth[150:])

    def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = a - a.mean(0), b - b.mean(0)
        return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0) + 1e-12)

    assert np.median(corr(got, truth)) > 0.7
    shuffled = truth[:, np.random.default_rng(0).permutation(truth.shape[1])]
    assert np.median(corr(got, shuffled)) < 0.3  # the ROIs are in the neurons' order


def test_motion_moves_the_frame():
    s = small(duration_s=2.0, motion_px=2.0)
    frames = of(run(SimulatedRig(s)), ImagingFrame)
    shifts = {f.meta["shift"] for f in frames}
    assert len(shifts) > 1 and all(abs(d) <= 4 for sh in shifts for d in sh)
    assert {f.meta["shift"] for f in of(run(SimulatedRig(small(duration_s=0.5))),
                                        ImagingFrame)} == {(0, 0)}


def test_eval_mask_covers_the_receptive_fields(one_second):
    rig, _ = one_second
    mask = rig.eval_mask()
    assert mask.shape == (36, 64) and mask.dtype == bool
    assert 0.1 < mask.mean() < 0.9
    yx = rig.population.rf_yx
    assert mask[yx[:, 0], yx[:, 1]].mean() > 0.9


def test_closing_stops_the_events():
    rig = SimulatedRig(small())
    n = 0
    with rig:
        for ev in rig.events():
            n += isinstance(ev, ImagingFrame)
            if n == 5:
                rig.close()
    assert n == 5
