"""The display's state object: pairing, counters, latency math, running correlation."""

from __future__ import annotations

import numpy as np
import pytest

from cortexcast.display.latency import END_TO_END_KEY, LatencyStats, spans
from cortexcast.display.state import DisplayState
from cortexcast.stream.message import Message

H, W = 36, 64


def stim_pixels(i: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return ((xx * 3 + yy * 5 + i * 7) % 256).astype(np.uint8)


def stimulus(i: int, pixels: np.ndarray | None = None) -> Message:
    p = stim_pixels(i) if pixels is None else pixels
    return Message("stimulus", "stimulus", i, "daq", i / 30, (p,), (("daq.pub", 0),),
                   {"stim_frame": i, "clip": 0, "clip_frame": i})


def reconstruction(seq: int, stim_frame: int, frame: np.ndarray | None = None,
                   stamps: tuple[tuple[str, int], ...] = ()) -> Message:
    f = (255.0 - stim_pixels(stim_frame)).astype(np.float32) if frame is None else frame
    return Message("reconstruction", "reconstruction", seq, "decoder", seq / 30, (f,), stamps,
                   {"imaging_frame": seq, "stim_frame": stim_frame, "lag": seq - stim_frame,
                    "model": "test"})


# -- pairing ------------------------------------------------------------------
def test_reconstruction_is_paired_with_the_stimulus_frame_it_names() -> None:
    s = DisplayState()
    for i in range(10):
        s.ingest(stimulus(i))
    s.ingest(reconstruction(9, 5))
    v = s.view
    assert v is not None and v.paired
    assert v.stim_frame == 5 and v.recon_stim_frame == 5 and v.imaging_frame == 9 and v.lag == 4
    np.testing.assert_array_equal(v.stimulus, stim_pixels(5))
    np.testing.assert_array_equal(v.reconstruction, 255.0 - stim_pixels(5))
    assert s.paired == 1 and s.unpaired == 0
    assert s.received == {"stimulus": 10, "reconstruction": 1}


def test_reconstruction_before_its_stimulus_waits_then_pairs() -> None:
    s = DisplayState()
    s.ingest(stimulus(0))
    s.ingest(reconstruction(1, 1))
    v = s.view
    assert v is not None and not v.paired  # shown next to the live stimulus meanwhile
    assert v.stim_frame == 0 and v.recon_stim_frame == 1
    s.ingest(stimulus(1))
    v = s.view
    assert v is not None and v.paired and v.stim_frame == 1
    np.testing.assert_array_equal(v.stimulus, stim_pixels(1))
    assert s.paired == 1


def test_unknown_or_lost_stimulus_counts_as_unpaired() -> None:
    s = DisplayState(stimulus_buffer=5, pending_buffer=2)
    for i in range(20):
        s.ingest(stimulus(i))
    s.ingest(reconstruction(20, -1))  # the decoder does not know
    assert s.unpaired == 1 and s.view is not None and not s.view.paired
    assert s.view.stim_frame == 19  # next to the live stimulus
    for k in range(3):  # frames 0..2 fell out of the 5-frame buffer; pending holds only 2
        s.ingest(reconstruction(21 + k, k))
    assert s.unpaired == 2 and s.paired == 0


def test_bad_messages_are_counted_not_raised() -> None:
    s = DisplayState()
    s.ingest(Message("stimulus", "stimulus", 0, "daq", 0.0, (stim_pixels(0),), (), {}))
    s.ingest(Message("stimulus", "stimulus", 1, "daq", 0.0, (np.zeros(5, np.uint8),), (),
                     {"stim_frame": 1}))
    s.ingest(Message("reconstruction", "reconstruction", 0, "decoder", 0.0, (), (),
                     {"stim_frame": 0}))
    s.ingest(Message("other", "event", 0, "x", 0.0))
    s.ingest(stimulus(2))
    s.ingest(reconstruction(3, 2, frame=np.zeros((10, 10), np.float32)))
    assert s.bad == {"stimulus_meta": 1, "stimulus_array": 1, "reconstruction_array": 1,
                     "topic:other": 1, "shape_mismatch": 1}
    assert s.received["stimulus"] == 1 and s.paired == 0
    s.set_stream_stats({"bad": {"bad_header": 2}, "total_dropped": 3, "dropped": {"daq/x": 3}})
    summary = s.summary()
    assert summary["bad"]["bad_header"] == 2 and summary["bad"]["stimulus_meta"] == 1
    assert summary["dropped"] == 3


def test_take_view_counts_shown_and_skipped() -> None:
    s = DisplayState()
    assert s.take_view() is None
    for i in range(3):
        s.ingest(stimulus(i))
    s.ingest(reconstruction(3, 1))
    s.ingest(reconstruction(4, 2))
    v = s.take_view()
    assert v is not None and v.recon_stim_frame == 2
    assert s.take_view() is None  # nothing new
    assert s.shown == 1 and s.skipped == 4  # 3 stimulus-only views + pair 1 never shown
    s.ingest(stimulus(3))  # a stimulus does not replace a pair
    assert s.take_view() is None


def test_quiet_decoder_falls_back_to_the_live_stimulus() -> None:
    s = DisplayState(recon_timeout_frames=3)
    s.ingest(stimulus(0))
    s.ingest(reconstruction(1, 0))
    for i in range(1, 4):
        s.ingest(stimulus(i))
        assert s.view is not None and s.view.paired
    s.ingest(stimulus(4))
    v = s.view
    assert v is not None and v.reconstruction is None and v.stim_frame == 4


# -- latency ------------------------------------------------------------------
def test_spans_between_consecutive_stamps_and_end_to_end() -> None:
    stamps = [("daq.acq", 0), ("daq.pub", 1_000_000), ("decoder.recv", 1_500_000),
              ("decoder.pub", 4_000_000), ("display.recv", 4_250_000)]
    assert spans(stamps) == {
        "daq.acq\u2192daq.pub": 1.0,
        "daq.pub\u2192decoder.recv": 0.5,
        "decoder.recv\u2192decoder.pub": 2.5,
        "decoder.pub\u2192display.recv": 0.25,
        END_TO_END_KEY: 3.25,
    }
    assert END_TO_END_KEY not in spans(stamps[:-1])


def test_latency_percentiles_and_all_time_max() -> None:
    lat = LatencyStats(max_samples=100)
    rng = np.random.default_rng(1)
    e2e = np.concatenate([[50.0], rng.uniform(1, 3, 199)])  # the 50 ms outlier falls out
    for ms in e2e:
        lat.add([("daq.pub", 0), ("display.recv", int(ms * 1e6))])
    summary = lat.summary()
    assert list(summary) == ["daq.pub\u2192display.recv", END_TO_END_KEY]
    got = summary[END_TO_END_KEY]
    kept = e2e[-100:]
    assert got["n"] == 200
    assert got["p50"] == pytest.approx(np.percentile(kept, 50), abs=1e-3)
    assert got["p99"] == pytest.approx(np.percentile(kept, 99), abs=1e-3)
    assert got["max"] == pytest.approx(50.0)


def test_state_collects_latency_from_reconstructions_only() -> None:
    s = DisplayState()
    s.ingest(stimulus(0))
    stamps = (("daq.pub", 10_000_000), ("decoder.pub", 12_000_000), ("display.recv", 13_000_000))
    s.ingest(reconstruction(0, 0, stamps=stamps))
    lat = s.summary()["latency_ms"]
    assert lat[END_TO_END_KEY]["p50"] == pytest.approx(3.0)
    assert lat["decoder.pub\u2192display.recv"]["n"] == 1
    assert "daq.pub\u2192display.recv" not in lat  # the stimulus message's stamps are not used


# -- running correlation --------------------------------------------------------
class FakeMetric:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, recons, targets, mask, *, start, stop):
        self.calls.append((recons.copy(), targets.copy(), mask, start, stop))
        return 0.5


def test_correlation_window_holds_the_last_pairs_in_order() -> None:
    metric = FakeMetric()
    s = DisplayState(correlation_window=4, metric=metric)
    for i in range(7):
        s.ingest(stimulus(i))
        s.ingest(reconstruction(i, i))
    assert s.update_correlation() == 0.5
    recons, targets, mask, start, stop = metric.calls[-1]
    assert recons.shape == targets.shape == (4, H, W) and recons.dtype == np.float32
    for t, i in enumerate(range(3, 7)):  # oldest first, across the ring's wrap-around
        np.testing.assert_array_equal(targets[t], stim_pixels(i))
        np.testing.assert_array_equal(recons[t], 255.0 - stim_pixels(i))
    assert mask.shape == (H, W) and mask.dtype == bool and mask.all()
    assert (start, stop) == (0, 4)
    assert s.summary()["correlation"] == 0.5 and s.summary()["correlation_frames"] == 4


def test_correlation_uses_the_given_mask_and_needs_two_frames() -> None:
    metric = FakeMetric()
    mask = np.zeros((H, W), bool)
    mask[10:20, 20:40] = True
    s = DisplayState(metric=metric, mask=mask)
    s.ingest(stimulus(0))
    s.ingest(reconstruction(0, 0))
    assert s.update_correlation() is None and not metric.calls
    s.ingest(stimulus(1))
    s.ingest(reconstruction(1, 1))
    s.update_correlation()
    assert metric.calls[-1][2] is mask


def test_correlation_with_the_real_metric() -> None:
    metric = pytest.importorskip("cortexcast.decoder.live.metric")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (H, W)).astype(np.uint8) for _ in range(40)]
    good, bad = DisplayState(correlation_window=30), DisplayState(correlation_window=30)
    for i, f in enumerate(frames):
        for st in (good, bad):
            st.ingest(stimulus(i, f))
        good.ingest(reconstruction(i, i, f.astype(np.float32)))
        bad.ingest(reconstruction(i, i, 255.0 - f.astype(np.float32)))
    r_good, r_bad = good.update_correlation(), bad.update_correlation()
    last = np.stack(frames[-30:]).astype(np.float32)
    expected = metric.pixel_correlation(last, last, np.ones((H, W), bool), start=0, stop=30)
    assert r_good == pytest.approx(expected)
    assert r_good > 0.3 and r_bad == pytest.approx(-r_good)
