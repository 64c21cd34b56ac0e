"""The NI sync maths on recorded-like voltage arrays: no hardware, no nidaqmx."""

from __future__ import annotations

import numpy as np
import pytest

from cortexcast.daq.ni.edges import EdgeDetector
from cortexcast.daq.ni.settings import NiSettings
from cortexcast.daq.ni.sync_builder import NiSyncBuilder
from cortexcast.daq.ni.synthetic import expected_stim_frames, rig_trace

RATE = 10000.0


def _feed(builder: NiSyncBuilder, samples: np.ndarray, block: int) -> list:
    events = []
    for a in range(0, samples.shape[1], block):
        events += builder.feed(samples[:, a:a + block], a)
    return events


def test_edge_detector_hysteresis_ignores_noise_and_carries_state_across_blocks() -> None:
    x = np.array([0, 0.9, 1.1, 0.9, 1.1, 3, 2.6, 3, 0.2, 0.1, 3.0])
    det = EdgeDetector(threshold=1.5, hysteresis=1.0)  # switches above 2.0, below 1.0
    up1, down1 = det(x[:6], 0)
    up2, down2 = det(x[6:], 6)
    assert up1.tolist() == [5] and down1.tolist() == []
    assert up2.tolist() == [10] and down2.tolist() == [8]
    no_hyst = EdgeDetector(threshold=1.0)
    assert len(no_hyst(x, 0)[0]) > 2  # the same signal without hysteresis chatters


def test_frames_flips_delay_and_stimulus_on_screen() -> None:
    tr = rig_trace(2.0, monitor_delay_s=0.02, noise_v=0.08)
    b = NiSyncBuilder(NiSettings(vsync="ai2", rate_hz=RATE))
    events = _feed(b, tr.samples, 500)
    n_closed = len(tr.frame_starts) - 1
    assert [e.imaging_frame for e in events] == list(range(n_closed))
    np.testing.assert_allclose([e.t for e in events], tr.frame_starts[:-1] / RATE, atol=2e-4)
    assert [e.stim_frame for e in events] == expected_stim_frames(tr)
    shown = [e for e in events if e.stim_frame >= 0]
    assert shown and all(e.t_flip is not None for e in shown)
    flip_t = tr.flip_samples[[e.stim_frame for e in shown]] / RATE
    np.testing.assert_allclose([e.t_flip for e in shown], flip_t, atol=1.5e-3)  # 1 ms rise
    assert b.monitor_delay_s == pytest.approx(0.02, abs=1.5e-3)
    assert b.flips == len(tr.flip_samples)
    e = events[3]
    a, z = tr.frame_starts[3], tr.frame_starts[4]
    assert e.photodiode.dtype == np.float32 and e.photodiode.shape == (z - a,)
    np.testing.assert_allclose(e.photodiode, tr.samples[1, a:z], atol=1e-6)
    assert b.flush()[0].imaging_frame == n_closed  # the last frame, closed at the end


@pytest.mark.parametrize("block", [1, 37, 333, 20000])
def test_block_size_does_not_change_the_events(block: int) -> None:
    tr = rig_trace(1.0, seed=3)
    ref = _feed(NiSyncBuilder(NiSettings(rate_hz=RATE)), tr.samples[:2], 1000)
    got = _feed(NiSyncBuilder(NiSettings(rate_hz=RATE)), tr.samples[:2], block)
    assert [(e.imaging_frame, e.stim_frame, e.t, e.t_flip) for e in got] == \
        [(e.imaging_frame, e.stim_frame, e.t, e.t_flip) for e in ref]
    assert all(np.array_equal(a.photodiode, b.photodiode) for a, b in zip(got, ref))


def test_square_toggling_every_other_frame_counts_the_frames_between() -> None:
    # Stimulus at 60 Hz, sync square toggled every 2nd stimulus frame (30 Hz transitions).
    tr = rig_trace(1.0, stim_rate_hz=30.0, noise_v=0.02, frame_phase_s=0.0117)
    b = NiSyncBuilder(NiSettings(rate_hz=RATE, stim_frames_per_transition=2, stim_rate_hz=60.0))
    events = _feed(b, tr.samples[:2], 250)
    truth = expected_stim_frames(tr)
    # mid-frame is ~25 ms after a transition (> one 60 Hz frame): the second of each pair
    assert [e.stim_frame for e in events] == [2 * k + 1 if k >= 0 else -1 for k in truth]


def test_gap_in_samples_counts_lost_frames_and_keeps_numbering() -> None:
    tr = rig_trace(2.0, seed=5)
    b = NiSyncBuilder(NiSettings(rate_hz=RATE))
    cut_a, cut_b = 5000, 8000  # samples 5000..8000 never arrive (an overflow)
    events = []
    for a in range(0, cut_a, 500):
        events += b.feed(tr.samples[:2, a:a + 500], a)
    for a in range(cut_b, tr.samples.shape[1], 500):
        events += b.feed(tr.samples[:2, a:a + 500], a)
    truth_index = {int(s): i for i, s in enumerate(tr.frame_starts)}
    by_t = {int(round(e.t * RATE)): e for e in events}
    for s, e in by_t.items():  # every emitted frame keeps its true index and stimulus frame
        i = truth_index[s]
        assert e.imaging_frame == i
        assert e.stim_frame == expected_stim_frames(tr)[i]
    missing = set(truth_index.values()) - {e.imaging_frame for e in events}
    missing.discard(len(tr.frame_starts) - 1)  # the last one is closed by flush()
    assert b.lost_frames == len(missing) and len(b.gaps) == 1
    assert b.gaps[0]["first_frame"] == min(missing) and b.gaps[0]["frames"] == len(missing)


def test_bad_blocks_are_refused() -> None:
    b = NiSyncBuilder(NiSettings())
    with pytest.raises(ValueError, match=r"\(2, n\) block"):
        b.feed(np.zeros((3, 10)), 0)
    b.feed(np.zeros((2, 10)), 0)
    with pytest.raises(ValueError, match="out of order"):
        b.feed(np.zeros((2, 10)), 5)


def test_settings_validate() -> None:
    with pytest.raises(ValueError, match="two blocks"):
        NiSettings(block_samples=10000, buffer_s=1.0)
    assert NiSettings(device="Dev2", vsync="ai3").channels == ("Dev2/ai0", "Dev2/ai1", "Dev2/ai3")
