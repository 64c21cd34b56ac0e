"""MergedSource: frame source + sync sources in threads, bounded queue, clean stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from cortexcast.daq.merged import MergedSource
from cortexcast.daq.serial_sync.settings import SerialSettings
from cortexcast.daq.serial_sync.source import SerialSyncSource
from cortexcast.daq.serial_sync.standin import PtyDevice
from cortexcast.core.events import ImagingFrame, StimulusFrame, SyncEvent
from cortexcast.daq.source import AcquisitionError, AcquisitionSource


class ListSource(AcquisitionSource):
    """A source that yields given events, then: ends ("end"), waits until closed ("block",
    like a sync source), or streams more frames every 5 ms forever ("stream", like a live
    frame source); ``go`` holds it back until set."""

    def __init__(self, events: list, go: threading.Event | None = None,
                 done: threading.Event | None = None, fail: Exception | None = None,
                 tail: str = "end") -> None:
        self._events, self.go, self.done, self.fail, self.tail = events, go, done, fail, tail
        self.entered = self.exited = self.closed = False

    def __enter__(self):
        self.entered = True
        return self

    def __exit__(self, *exc):
        self.exited = True

    def close(self) -> None:
        self.closed = True
        if self.go is not None:
            self.go.set()

    def events(self) -> Iterator:
        if self.go is not None:
            self.go.wait(10)
        yield from self._events
        if self.done is not None:
            self.done.set()
        if self.fail is not None:
            raise self.fail
        i = 10_000
        while self.tail != "end" and not self.closed:
            time.sleep(0.005)  # the pace of a live source
            if self.tail == "stream":
                yield ImagingFrame(i, 0.0, np.zeros((2, 2), np.uint16))
                i += 1


def _frames(n: int) -> list:
    px = np.zeros((4, 4), np.uint16)
    out: list = []
    for i in range(n):
        out += [StimulusFrame(i, i / 30, np.zeros((36, 64), np.uint8)), ImagingFrame(i, i / 30, px),
                SyncEvent(i, i / 30, i)]
    return out


def test_replacement_rules_and_clean_stop() -> None:
    go = threading.Event()
    sync = ListSource([SyncEvent(i, 0.0, 100 + i) for i in range(3)], go=go, tail="block")
    stim = ListSource([StimulusFrame(7, 0.0, np.zeros((36, 64), np.uint8), "c", 1)], go=go,
                      tail="block")
    frames = ListSource(_frames(3), go=go, tail="stream")
    merged = MergedSource(frames, {"serial": sync, "stimulus": stim})
    got: list = []
    with merged:
        go.set()
        it = merged.events()
        while sum(isinstance(e, ImagingFrame) for e in got) < 3 or \
                sum(isinstance(e, SyncEvent) for e in got) < 3 or \
                not any(isinstance(e, StimulusFrame) for e in got):
            got.append(next(it))
    assert all(s.entered and s.exited and s.closed for s in (sync, stim))
    assert frames.entered and frames.exited and not frames.closed  # stopped by its own thread
    assert not any(th.is_alive() for th in threading.enumerate() if th.name.startswith("merge-"))
    assert sorted(e.stim_frame for e in got if isinstance(e, SyncEvent)) == [100, 101, 102]
    assert [e.clip for e in got if isinstance(e, StimulusFrame)] == ["c"]  # the sim's dropped
    assert merged.replaced == 6


def test_a_stalled_consumer_never_blocks_the_sources() -> None:
    done = threading.Event()
    frames = ListSource(_frames(500), done=done)
    merged = MergedSource(frames, {}, queue_size=16)
    with merged:
        it = merged.events()
        first = next(it)  # starts the threads; then the consumer stalls
        assert done.wait(10)  # the frame source got through all 1500 events anyway
        rest = list(it)
    assert 1 + len(rest) + merged.dropped["frames"] == 1500
    assert merged.dropped["frames"] > 1000 and merged.status()["merge_dropped"] > 1000
    assert isinstance(first, StimulusFrame)


def test_a_failing_sync_source_ends_the_stream_with_its_error() -> None:
    bad = ListSource([], fail=AcquisitionError("NI DAQ Dev1: device removed"))
    frames = ListSource(_frames(10), tail="stream")
    with MergedSource(frames, {"ni": bad}) as merged:
        with pytest.raises(AcquisitionError, match="ni: NI DAQ Dev1: device removed") as ei:
            for _ in merged.events():
                pass
    assert isinstance(ei.value.__cause__, AcquisitionError) and frames.exited


def test_unmatched_sync_numbering_is_reported(caplog) -> None:
    go = threading.Event()
    sync = ListSource([SyncEvent(5000, 0.0, 1)], go=go, tail="block")
    frames = ListSource([ImagingFrame(3, 0.1, np.zeros((2, 2), np.uint16))], tail="stream")
    with MergedSource(frames, {"serial": sync}) as merged:
        it = merged.events()
        assert isinstance(next(it), ImagingFrame)
        go.set()
        while not isinstance(ev := next(it), SyncEvent):
            pass
        assert ev.imaging_frame == 5000
    assert merged.unmatched == 1 and abs(merged.sync_offset) > 30
    assert "check first_frame / numbering in [daq.serial]" in caplog.text


def test_sim_frames_with_serial_sync_from_a_pty(tmp_path: Path) -> None:
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.settings import SimSettings

    link = tmp_path / "ttySYNC"
    rig = SimulatedRig(SimSettings(n_neurons=200, frame_height=64, frame_width=64, paced=True,
                                   duration_s=30.0))
    with PtyDevice(link) as dev:
        serial_src = SerialSyncSource(SerialSettings(port=str(link), read_timeout_s=0.02))
        with MergedSource(rig, {"serial": serial_src}) as merged:
            it = merged.events()
            dev.write(b"@V_0_0\n@P_0_0\n" + b"".join(
                f"@I_{33333 * i}_{i}\n@P_{33333 * i}_{10 * i}\n".encode() for i in range(20)))
            seen: list = []
            while sum(isinstance(e, SyncEvent) for e in seen) < 20 or \
                    not any(isinstance(e, ImagingFrame) for e in seen):
                seen.append(next(it))
    syncs = [e for e in seen if isinstance(e, SyncEvent)]
    assert [e.imaging_frame for e in syncs] == list(range(20))
    assert all(e.photodiode is None for e in syncs)  # the serial box's, not the sim's
    assert syncs[-1].behavior["running"] > 0


def test_a_silent_frame_source_is_not_closed_under_its_own_thread(caplog) -> None:
    go = threading.Event()
    frames = ListSource([], go=go, tail="block")  # blocks in events(), like ScanImage idle
    merged = MergedSource(frames, {}, frame_stop_timeout_s=0.2)
    with merged:
        it = merged.events()
        with pytest.raises(StopIteration):
            merged._stop.set()  # what close() does first; the consumer loop then ends
            next(it)
    assert not frames.exited and "did not stop within 0.2 s" in caplog.text
    go.set()
    frames.close()
