"""daq's replay backend: a recording of frames/sync/stimulus back into source events."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cortexcast.core.message import MessageError
from cortexcast.daq.replay_source import ReplaySource, message_to_event
from cortexcast.stream.replay import ReplaySettings
from cortexcast.core.events import ImagingFrame, StimulusFrame, SyncEvent
from cortexcast.daq.source import AcquisitionError, AcquisitionSource
from cortexcast.stream.message import Message
from cortexcast.stream.recording import RecordingWriter

T0_NS = 3_000_000_000
FRAME_NS = 33_333_333


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        self.now += dt


def _messages(n: int = 6) -> list[tuple[int, Message]]:
    """(receive ns, message) as the daq publishes them: stimulus, frame, sync per frame."""
    out = []
    for i in range(n):
        t = i / 30
        t_ns = T0_NS + i * FRAME_NS
        if i % 2 == 0:
            out.append((t_ns, Message("stimulus", "stimulus", i // 2, "daq", t - 0.01,
                                      (np.full((36, 64), i, np.uint8),),
                                      meta={"stim_frame": 10 + i // 2, "clip": "pan",
                                            "clip_frame": i // 2})))
        out.append((t_ns + 1000, Message("frames", "frame", i, "daq", t,
                                         (np.full((32, 32), i, np.uint16),),
                                         meta={"imaging_frame": i, "motion": [0.5, 0.0]})))
        photodiode = (np.linspace(0, 1, 4, dtype=np.float32),) if i % 3 == 0 else ()
        out.append((t_ns + 2000, Message(
            "sync", "sync", i, "daq", t, photodiode,
            meta={"imaging_frame": i, "stim_frame": 10 + i // 2 if i else -1, "t_flip": t - 0.01,
                  "behavior": {"running": 2.0, "pupil": 0.3, "pupil_x": 1, "pupil_y": 2}})))
    out.append((T0_NS + n * FRAME_NS, Message("activity", "activity", 0, "decoder", 0.0,
                                              (np.zeros(3, np.float32),))))
    return out


@pytest.fixture()
def recording(tmp_path):
    path = tmp_path / "daq.ccrec"
    msgs = _messages()
    with RecordingWriter(path) as w:
        for t_ns, msg in msgs:
            w.write(msg, t_recv_ns=t_ns)
    return path, msgs


def test_message_to_event_maps_every_field():
    msgs = [m for _, m in _messages()]
    stim, frame, sync = msgs[0], msgs[1], msgs[2]
    e = message_to_event(frame)
    assert isinstance(e, ImagingFrame) and (e.index, e.t) == (0, 0.0)
    assert e.meta == {"motion": [0.5, 0.0]} and e.pixels.dtype == np.uint16
    e = message_to_event(sync)
    assert isinstance(e, SyncEvent)
    assert (e.imaging_frame, e.t, e.stim_frame, e.t_flip) == (0, 0.0, -1, -0.01)
    assert e.photodiode is not None and e.photodiode.dtype == np.float32
    assert e.behavior == {"running": 2.0, "pupil": 0.3, "pupil_x": 1.0, "pupil_y": 2.0}
    assert message_to_event(msgs[4]).photodiode is None  # sync of frame 1
    e = message_to_event(stim)
    assert isinstance(e, StimulusFrame)
    assert (e.index, e.t, e.clip, e.clip_frame, e.pixels.shape) == (10, -0.01, "pan", 0, (36, 64))
    assert message_to_event(msgs[-1]) is None
    with pytest.raises(MessageError):
        message_to_event(Message("frames", "frame", 0, "daq", 0.0, (frame.arrays[0],)))


def test_unpaced_replay_yields_the_recorded_events_in_order(recording):
    path, msgs = recording
    source = ReplaySource(path, paced=False)
    assert isinstance(source, AcquisitionSource)
    with source:
        events = list(source.events())
    want = [message_to_event(m) for _, m in msgs if m.topic != "activity"]
    assert [type(e) for e in events] == [type(w) for w in want]
    for got, w in zip(events, want):
        assert got.t == w.t
        if isinstance(got, SyncEvent):
            assert (got.imaging_frame, got.stim_frame, got.behavior) == (
                w.imaging_frame, w.stim_frame, w.behavior)
        else:
            assert got.index == w.index
            np.testing.assert_array_equal(got.pixels, w.pixels)
    assert source.yielded == len(want) and source.skipped == 0


@pytest.mark.parametrize("clock_kind", ["recv", "t_acq"])
def test_paced_replay_keeps_the_recorded_rhythm(recording, clock_kind):
    path, _ = recording
    clock = FakeClock()
    source = ReplaySource(path, paced=True, speed=2.0, clock=clock_kind, monotonic=clock,
                          sleep=clock.sleep)
    with source:
        t0 = clock()
        at = [(clock() - t0, e) for e in source.events()]
    frames = [(t, e) for t, e in at if isinstance(e, ImagingFrame)]
    offset = frames[0][0]
    for t, e in frames:  # one frame per 1/30 s recorded, at 2x speed
        assert t - offset == pytest.approx(e.index / 30 / 2, abs=1e-4)


def test_loop_keeps_indices_and_times_increasing_until_closed(recording):
    path, _ = recording
    source = ReplaySource.from_settings(ReplaySettings(recording=str(path), fast=True, loop=True))
    with source:
        stream = source.events()
        events = list(itertools.islice(stream, 40))  # > 2 passes of 16
        source.close()
        assert list(stream) == []  # closing ends the stream
    frames = [e for e in events if isinstance(e, ImagingFrame)]
    assert [e.index for e in frames] == list(range(len(frames)))
    assert all(b.t > a.t for a, b in itertools.pairwise(frames))
    stims = [e.index for e in events if isinstance(e, StimulusFrame)]
    assert stims == list(range(10, 10 + len(stims)))
    syncs = [e for e in events if isinstance(e, SyncEvent)]
    assert (syncs[6].imaging_frame, syncs[6].stim_frame) == (6, -1)  # second pass, shifted
    assert (syncs[7].imaging_frame, syncs[7].stim_frame) == (7, 13)
    assert syncs[7].t == pytest.approx(7 / 30) and frames[6].t == pytest.approx(6 / 30)
    assert syncs[7].t_flip == pytest.approx(syncs[7].t - 0.01)


def test_bad_messages_are_skipped_and_missing_files_fail(tmp_path):
    path = tmp_path / "bad.ccrec"
    with RecordingWriter(path) as w:
        w.write(Message("frames", "frame", 0, "daq", 0.0, (np.zeros((2, 2), np.uint16),)))
        w.write(Message("frames", "frame", 1, "daq", 0.1, (np.zeros((2, 2), np.uint16),),
                        meta={"imaging_frame": 1}))
    with ReplaySource(path, paced=False) as source:
        events = list(source.events())
    assert [e.index for e in events] == [1] and source.skipped == 1
    with pytest.raises(AcquisitionError), ReplaySource(tmp_path / "missing.ccrec"):
        pass
