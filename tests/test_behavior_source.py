"""The behaviour source: eye-tracker readings over UDP JSON and LSL, merged into sync events.

Real UDP sockets and real pylsl outlets/inlets on loopback; waits poll with a timeout.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from cortexcast.core.config import ConfigError, load_settings
from cortexcast.core.events import ImagingFrame, SyncEvent
from cortexcast.daq.behavior_source import BehaviorSettings, make_behavior_source
from cortexcast.daq.behavior_source.alignment import ClockMap, SenderClock
from cortexcast.daq.merged import MergedSource
from cortexcast.daq.source import AcquisitionError, AcquisitionSource
from cortexcast.daq.standins.eye_tracker import (EyeTrace, LslSink, TraceError, UdpSink,
                                                 load_trace, play, synthetic_trace)
from polling import TIMEOUT_S, wait_for

pylsl = pytest.importorskip("pylsl")


class PushSource(AcquisitionSource):
    """A live frame source the test feeds event by event (runs until closed)."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()
        self.closed = False

    def events(self) -> Iterator:
        while not self.closed:
            try:
                yield self.q.get(timeout=0.02)
            except queue.Empty:
                continue

    def stop(self) -> None:
        self.closed = True


class Rig:
    """A frame source + a behaviour source merged, read one event at a time."""

    def __init__(self, settings: BehaviorSettings) -> None:
        self.frames = PushSource()
        self.feed = make_behavior_source(settings)
        self.merged = MergedSource(self.frames, {"behavior": self.feed})
        self.merged.__enter__()
        self._it = self.merged.events()
        self.frames.q.put(ImagingFrame(-1, 0.0, np.zeros((2, 2), np.uint16)))
        assert next(self._it).index == -1  # the merger's threads run from here on
        self.n = 0

    def sync(self, **behavior: float) -> SyncEvent:
        """Push a sync (and its frame) now; the merged sync as it leaves."""
        self.frames.q.put(SyncEvent(self.n, self.n / 30, self.n, behavior=dict(behavior)))
        self.frames.q.put(ImagingFrame(self.n, self.n / 30, np.zeros((2, 2), np.uint16)))
        self.n += 1
        ev = next(self._it)
        assert isinstance(ev, SyncEvent)
        assert isinstance(next(self._it), ImagingFrame)
        return ev

    def close(self) -> None:
        self.merged.close()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for r in made:
        r.close()


def udp_settings(**kw: Any) -> BehaviorSettings:
    return BehaviorSettings(mode="udp", listen="127.0.0.1:0", **kw)


def send(addr: tuple[str, int], obj: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(obj if isinstance(obj, bytes) else json.dumps(obj).encode(), addr)


# -- UDP -------------------------------------------------------------------------------------
def test_udp_samples_merged_with_scale_and_offset(rigs) -> None:
    rig = Rig(udp_settings(channels={"pupil": "diam", "pupil_x": "cx", "pupil_y": "cy"},
                           scale={"pupil": 0.5, "pupil_y": 2.0}, offset={"pupil_x": -320.0}))
    rigs.append(rig)
    send(rig.feed.address, {"v": 1, "diam": 30.0, "cx": 330.0, "cy": 4.0})
    wait_for(lambda: rig.feed.samples == 1, what="the datagram")
    ev = rig.sync(running=3.0, pupil=99.0, pupil_x=99.0)  # the frame source's own eye values
    assert ev.behavior == {"running": 3.0, "pupil": 15.0, "pupil_x": 10.0, "pupil_y": 8.0}
    # a list of readings: the latest counts
    send(rig.feed.address, [{"diam": 10.0, "cx": 320.0, "cy": 1.0},
                            {"diam": 12.0, "cx": 321.0, "cy": 1.5}])
    wait_for(lambda: rig.feed.samples == 3)
    assert rig.sync().behavior == {"pupil": 6.0, "pupil_x": 1.0, "pupil_y": 3.0}
    st = rig.merged.status()
    assert st["behavior_samples"] == 3 and st["behavior_fresh_syncs"] == 2
    assert st["behavior_stale_syncs"] == 0


def test_bad_datagrams_are_counted_and_skipped(rigs, caplog) -> None:
    rig = Rig(udp_settings())
    rigs.append(rig)
    bad = [b"not json", b"\xff\xfe", {"pupil": 1.0, "pupil_x": 2.0},            # missing field
           {"pupil": "big", "pupil_x": 1.0, "pupil_y": 1.0},                      # not a number
           {"pupil": True, "pupil_x": 1.0, "pupil_y": 1.0},
           {"v": 2, "pupil": 1.0, "pupil_x": 1.0, "pupil_y": 1.0},              # other schema
           {"t": "noon", "pupil": 1.0, "pupil_x": 1.0, "pupil_y": 1.0}, [1, 2], "text"]
    with caplog.at_level(logging.WARNING, "cortexcast.daq.behavior"):
        for b in bad:
            send(rig.feed.address, b)
        send(rig.feed.address, b'{"pupil": NaN, "pupil_x": 1, "pupil_y": 1}')  # a lost pupil
        send(rig.feed.address, {"pupil": None, "pupil_x": 1, "pupil_y": 1})
        send(rig.feed.address, {"pupil": 5, "pupil_x": 6, "pupil_y": 7})
        wait_for(lambda: rig.feed.datagrams == len(bad) + 3, what="all datagrams")
    assert rig.feed.bad == len(bad) and rig.feed.missing == 2 and rig.feed.samples == 1
    assert sum("skipping a bad datagram" in r.message for r in caplog.records) == 3  # first few
    assert rig.sync().behavior == {"pupil": 5.0, "pupil_x": 6.0, "pupil_y": 7.0}
    assert rig.merged.status()["behavior_bad"] == len(bad)


def test_stale_after_timeout_then_recovery(rigs, caplog) -> None:
    stale_s = 0.15
    rig = Rig(udp_settings(stale_s=stale_s))
    rigs.append(rig)
    with caplog.at_level(logging.INFO, "cortexcast.daq.behavior"):
        first = rig.sync(running=1.0)  # nothing received yet
        assert first.behavior == {"running": 1.0, "behavior_stale": 1.0}
        send(rig.feed.address, {"pupil": 1.0, "pupil_x": 2.0, "pupil_y": 3.0})
        wait_for(lambda: rig.feed.samples == 1)
        assert rig.sync(running=2.0).behavior == {"running": 2.0, "pupil": 1.0, "pupil_x": 2.0,
                                                  "pupil_y": 3.0}
        last = rig.feed.buffer.last_time()
        wait_for(lambda: time.monotonic() - last > stale_s * 1.2, what="stale_s to pass")
        for _ in range(3):  # the sender went silent: stale, logged once
            assert rig.sync(running=2.0, pupil=9.0).behavior == {"running": 2.0,
                                                                 "behavior_stale": 1.0}
        send(rig.feed.address, {"pupil": 4.0, "pupil_x": 5.0, "pupil_y": 6.0})
        wait_for(lambda: rig.feed.samples == 2)
        assert rig.sync().behavior == {"pupil": 4.0, "pupil_x": 5.0, "pupil_y": 6.0}
    st = rig.merged.status()
    assert st["behavior_stale_syncs"] == 4 and st["behavior_outages"] == 2
    assert st["behavior_fresh_syncs"] == 2
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "no eye-tracker sample yet" in warnings[0]
    assert "no eye-tracker sample for" in warnings[1]
    assert any("back after 3 stale sync" in r.message for r in caplog.records)


def test_udp_sender_time_aligns_samples(rigs) -> None:
    """With "t", a reading is timed by the sender's clock (offset to this one), not by when
    it arrived: a reading that arrives last but was taken earlier is not the latest."""
    rig = Rig(udp_settings(stale_s=5.0))
    rigs.append(rig)
    sender = lambda: time.monotonic() - 1000.0  # noqa: E731 - the tracker's own clock
    send(rig.feed.address, {"t": sender(), "pupil": 1.0, "pupil_x": 0.0, "pupil_y": 0.0})
    send(rig.feed.address, {"t": sender() - 0.3, "pupil": 2.0, "pupil_x": 0.0, "pupil_y": 0.0})
    wait_for(lambda: rig.feed.samples == 2)
    assert rig.sync().behavior["pupil"] == 1.0  # the second one was taken 0.3 s earlier
    assert rig.feed.clock.offset == pytest.approx(1000.0, abs=0.05)
    assert rig.merged.status()["behavior_clock_offset_s"] == rig.feed.clock.offset


def test_sender_clock_takes_least_delayed_and_resets_on_a_jump() -> None:
    clock = SenderClock(window=50)
    rng = np.random.default_rng(0)
    delays = 0.002 + rng.exponential(0.01, 200)
    for i, d in enumerate(delays):  # sender clock = local - 1000
        t_sender = i * 0.033
        local = clock.to_local(t_sender, t_sender + 1000.0 + d)
    assert clock.offset == pytest.approx(1000.0 + delays[-50:].min())
    assert local <= t_sender + 1000.0 + delays[-1]
    clock.to_local(0.0, 200 * 0.033 + 1000.0 + 0.003)  # the sender restarted its clock at 0
    assert clock.resets == 1 and clock.offset == pytest.approx(200 * 0.033 + 1000.003)


def test_clock_map_measures_the_offset() -> None:
    other = lambda: time.monotonic() - 42.0  # noqa: E731 - a clock 42 s behind
    assert ClockMap(other).offset() == pytest.approx(42.0, abs=1e-3)


def test_enrich_picks_latest_sample_at_or_before_arrival() -> None:
    feed = make_behavior_source(udp_settings(stale_s=0.5))
    for t, p in ((10.0, 1.0), (10.2, 2.0), (10.4, 3.0)):
        feed.add_sample(t, {"pupil": p, "pupil_x": 0.0, "pupil_y": 0.0})
    ev = SyncEvent(0, 0.0, 0, behavior={"running": 1.0})
    assert feed.enrich(ev, 10.3).behavior["pupil"] == 2.0
    assert feed.enrich(ev, 10.4).behavior["pupil"] == 3.0
    assert feed.enrich(ev, 10.9).behavior["pupil"] == 3.0     # 0.5 s old: still fresh
    assert feed.enrich(ev, 9.9).behavior == {"running": 1.0, "behavior_stale": 1.0}
    assert feed.enrich(ev, 10.95).behavior == {"running": 1.0, "behavior_stale": 1.0}
    assert ev.behavior == {"running": 1.0}  # the original is untouched (frozen)


def test_udp_port_taken_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        feed = make_behavior_source(BehaviorSettings(listen=f"127.0.0.1:{port}"))
        with pytest.raises(AcquisitionError, match=r"\[daq.behavior\] listen"):
            feed.__enter__()


# -- settings ----------------------------------------------------------------------------------
def test_config_table(tmp_path: Path) -> None:
    from cortexcast.daq.process import DaqSettings

    cfg = tmp_path / "rig.toml"
    cfg.write_text('[daq]\nsync = ["stimulus", "behavior"]\n'
                   '[daq.behavior]\nmode = "lsl"\nlsl_name = "eye"\nstale_s = 0.3\n'
                   'channels = {pupil = "diameter", pupil_x = 1, pupil_y = 2}\n'
                   'scale = {pupil = 0.1}\noffset = {pupil_x = -320}\n')
    s = load_settings(DaqSettings, cfg, "daq").behavior
    assert s.mode == "lsl" and s.stale_s == 0.3
    assert s.channel_map() == {"pupil": "diameter", "pupil_x": 1, "pupil_y": 2}
    assert s.convert("pupil", 200) == pytest.approx(20.0)
    assert s.convert("pupil_x", 330) == 10.0 and s.convert("pupil_y", 7) == 7.0
    assert BehaviorSettings().channel_map() == {"pupil": "pupil", "pupil_x": "pupil_x",
                                                "pupil_y": "pupil_y"}
    assert BehaviorSettings(mode="lsl").channel_map() == {"pupil": 0, "pupil_x": 1, "pupil_y": 2}
    for bad, match in (('scale = {running = 2.0}', "not a mapped channel"),
                       ('channels = {pupil = 0}', "have names"),
                       ('listen = "5558"', "host:port"),
                       ('stale_s = 0', "stale_s"),
                       ('offset = {pupil = "a"}', "must be a number")):
        cfg.write_text(f'[daq]\nsync = ["behavior"]\n[daq.behavior]\n{bad}\n')
        with pytest.raises(ConfigError, match=match):
            load_settings(DaqSettings, cfg, "daq")


def test_missing_pylsl_says_how_to_install(monkeypatch) -> None:
    from cortexcast.stream.lsl_outlets import LslUnavailableError

    monkeypatch.setitem(sys.modules, "pylsl", None)
    with pytest.raises(LslUnavailableError, match=r"pip install cortexcast\[lsl\]"):
        make_behavior_source(BehaviorSettings(mode="lsl"))


# -- LSL ---------------------------------------------------------------------------------------
_names = iter(range(10**6))


def unique(prefix: str) -> str:
    return f"{prefix}-{id(object())}-{next(_names)}"


def outlet(name: str, source_id: str, labels=("pupil", "pupil_x", "pupil_y")) -> Any:
    info = pylsl.StreamInfo(name, "Gaze", len(labels), 30.0, pylsl.cf_float32, source_id)
    chans = info.desc().append_child("channels")
    for label in labels:
        chans.append_child("channel").append_child_value("label", label)
    return pylsl.StreamOutlet(info)


def lsl_rig(rigs: list[Rig], name: str, **kw: Any) -> Rig:
    rig = Rig(BehaviorSettings(mode="lsl", lsl_name=name, **kw))
    rigs.append(rig)
    return rig


def push_until_received(rig: Rig, out: Any, sample: list[float], ts: float | None = None) -> None:
    """Push one sample (again, while the inlet is still connecting) until it arrives."""
    n = rig.feed.samples

    def pushed() -> bool:
        out.push_sample(sample, pylsl.local_clock() if ts is None else ts)
        return wait_for_quick(lambda: rig.feed.samples > n)
    wait_for(pushed, what="an LSL sample")


def wait_for_quick(cond: Callable[[], Any]) -> bool:
    deadline = time.monotonic() + 0.1
    while not cond():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.002)
    return True


def test_lsl_source_time_aligned_and_merged(rigs) -> None:
    name = unique("eye")
    out = outlet(name, name, labels=("x", "diameter", "y"))
    rig = lsl_rig(rigs, name, channels={"pupil": "diameter", "pupil_x": 0, "pupil_y": "y"},
                  scale={"pupil": 0.1}, stale_s=2.0)
    wait_for(lambda: out.have_consumers(), what="the inlet")
    t_push = pylsl.local_clock()
    push_until_received(rig, out, [320.0, 200.0, 240.0], ts=t_push)
    t_sample = rig.feed.buffer.last_time()
    # the sample's LSL time, on this host's monotonic clock
    assert t_sample == pytest.approx(t_push + (time.monotonic() - pylsl.local_clock()), abs=0.01)
    assert rig.sync(running=1.0).behavior == {"running": 1.0, "pupil": 20.0, "pupil_x": 320.0,
                                              "pupil_y": 240.0}
    # a sample stamped 1 s ahead (e.g. a tracker's clock) is not at or before this sync
    push_until_received(rig, out, [1.0, 1.0, 1.0], ts=pylsl.local_clock() + 1.0)
    assert rig.sync().behavior["pupil"] == 20.0
    st = rig.merged.status()
    assert st["behavior_connected"] == 1 and st["behavior_samples"] >= 2


@pytest.mark.slow
def test_lsl_stream_vanishing_keeps_the_daq_going(rigs, caplog) -> None:
    name = unique("eye")
    stale_s = 0.2
    out = outlet(name, name)
    rig = lsl_rig(rigs, name, stale_s=stale_s)
    push_until_received(rig, out, [1.0, 2.0, 3.0])
    assert rig.sync().behavior == {"pupil": 1.0, "pupil_x": 2.0, "pupil_y": 3.0}
    del out  # the eye tracker program closes its stream
    last = rig.feed.buffer.last_time()
    wait_for(lambda: time.monotonic() - last > stale_s * 1.2, what="stale_s to pass")
    with caplog.at_level(logging.WARNING, "cortexcast.daq.behavior"):
        for _ in range(5):  # frames and syncs go on, marked stale
            assert rig.sync(running=4.0).behavior == {"running": 4.0, "behavior_stale": 1.0}
    assert sum("no eye-tracker sample for" in r.message for r in caplog.records) == 1
    out = outlet(name, name)  # it comes back (same source_id): the inlet recovers
    push_until_received(rig, out, [4.0, 5.0, 6.0])
    assert rig.sync().behavior == {"pupil": 4.0, "pupil_x": 5.0, "pupil_y": 6.0}
    st = rig.merged.status()
    assert st["behavior_stale_syncs"] == 5 and st["behavior_outages"] == 1


def test_lsl_stream_missing_at_start_is_found_later(rigs, caplog) -> None:
    name = unique("eye")
    with caplog.at_level(logging.WARNING, "cortexcast.daq.behavior"):
        rig = lsl_rig(rigs, name, resolve_timeout_s=0.05)
    assert any("looking for it in the background" in r.message for r in caplog.records)
    assert rig.sync().behavior == {"behavior_stale": 1.0}
    assert rig.merged.status()["behavior_connected"] == 0
    out = outlet(name, name)
    wait_for(lambda: rig.feed.status()["behavior_connected"], what="the background resolve")
    push_until_received(rig, out, [7.0, 8.0, 9.0])
    assert rig.sync().behavior == {"pupil": 7.0, "pupil_x": 8.0, "pupil_y": 9.0}


def test_lsl_channels_not_in_the_stream_are_refused(rigs) -> None:
    name = unique("eye")
    out = outlet(name, name)
    for channels, match in (({"pupil": 5}, "has 3 channel"), ({"pupil": "area"}, "not a channel")):
        feed = make_behavior_source(BehaviorSettings(mode="lsl", lsl_name=name,
                                                     channels=channels))
        with pytest.raises(AcquisitionError, match=match):
            feed.__enter__()
    del out


def test_unusable_stream_appearing_later_is_logged_and_the_daq_goes_on(rigs, caplog) -> None:
    name = unique("eye")
    with caplog.at_level(logging.ERROR, "cortexcast.daq.behavior"):
        rig = lsl_rig(rigs, name, resolve_timeout_s=0.05, channels={"pupil": 5})
        out = outlet(name, name)
        wait_for(lambda: any("cannot use" in r.message for r in caplog.records),
                 what="the error")
        assert rig.sync(running=1.0).behavior == {"running": 1.0, "behavior_stale": 1.0}
        rig.close()  # the reader waits before retrying; a stop ends that wait
        assert not rig.feed.reading  # its thread ended
    assert sum("cannot use" in r.message for r in caplog.records) == 1
    assert rig.feed.connects == 0
    del out


# -- the stand-in ------------------------------------------------------------------------------
def test_trace_files(tmp_path: Path) -> None:
    trace = synthetic_trace(2.0, 30.0, seed=3)
    assert trace.data.shape == (60, 4) and trace.duration == pytest.approx(2.0)
    csv = tmp_path / "eye.csv"
    np.savetxt(csv, trace.data, delimiter=",", header="t,pupil,pupil_x,pupil_y", comments="")
    np.testing.assert_allclose(load_trace(csv).data, trace.data)
    np.save(tmp_path / "eye.npy", trace.data)
    np.testing.assert_allclose(load_trace(tmp_path / "eye.npy").data, trace.data)
    (tmp_path / "bad.csv").write_text("time,diameter\n0,1\n")
    with pytest.raises(TraceError, match="bad.csv.*t, pupil, pupil_x, pupil_y"):
        load_trace(tmp_path / "bad.csv")
    with pytest.raises(TraceError, match="not found"):
        load_trace(tmp_path / "nowhere.csv")


def _play_in_thread(trace: EyeTrace, sink: Any, **kw: Any) -> tuple[threading.Thread,
                                                                    threading.Event]:
    stop = threading.Event()
    th = threading.Thread(target=play, args=(trace, sink), kwargs={"stop": stop, **kw},
                          daemon=True)
    th.start()
    return th, stop


def test_standin_feeds_the_udp_source(rigs) -> None:
    trace = synthetic_trace(1.0, 50.0, seed=1)
    rig = Rig(udp_settings(stale_s=5.0))
    rigs.append(rig)
    sink = UdpSink("%s:%d" % rig.feed.address)
    th, stop = _play_in_thread(trace, sink, speed=10.0)
    try:
        wait_for(lambda: rig.feed.samples == len(trace), what="the whole trace")
    finally:
        stop.set()
        th.join(5)
        sink.close()
    assert rig.sync().behavior == pytest.approx(dict(zip(("pupil", "pupil_x", "pupil_y"),
                                                         trace.data[-1, 1:])))
    assert rig.feed.clock.offset is not None  # the datagrams carried the trace's t


def test_standin_feeds_the_lsl_source(rigs) -> None:
    name = unique("eye")
    trace = synthetic_trace(1.0, 30.0, seed=2)
    sink = LslSink(name, source_id=name)
    rig = lsl_rig(rigs, name, stale_s=5.0)
    wait_for(lambda: sink.outlet.have_consumers(), what="the inlet")
    th, stop = _play_in_thread(trace, sink, paced=False)
    try:
        th.join(TIMEOUT_S)
        wait_for(lambda: rig.feed.samples == len(trace), what="the whole trace")
    finally:
        stop.set()
    got = rig.sync().behavior
    assert got == pytest.approx(dict(zip(("pupil", "pupil_x", "pupil_y"), trace.data[-1, 1:])),
                                rel=1e-6)  # float32 on the wire
    sink.close()


# -- the whole daq ----------------------------------------------------------------------------
def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_daq_goes_on_when_the_eye_tracker_stops(tmp_path: Path) -> None:
    """run_daq with the simulated rig + an eye tracker stand-in over UDP that stops and
    comes back: syncs carry its readings, then behavior_stale, then readings again."""
    import zmq

    from cortexcast.core.events import from_message
    from cortexcast.core.runtime import StopSignals
    from cortexcast.daq.process import DaqSettings, run_daq
    from cortexcast.daq.sim.settings import SimSettings
    from cortexcast.stream.pubsub import Sockets, Subscriber

    port = _free_udp_port()  # the stand-in must know it before the daq binds it
    settings = DaqSettings(
        publish="inproc://daq-eye", sync=("behavior",),
        sim=SimSettings(n_neurons=100, frame_height=32, frame_width=32, paced=True),
        behavior=BehaviorSettings(listen=f"127.0.0.1:{port}", stale_s=0.2),
        wait_for=("sync",), stats_out=str(tmp_path / "daq.json"))
    ctx = zmq.Context()
    stop = StopSignals()
    errors: list[BaseException] = []

    def daq() -> None:
        try:
            run_daq(settings, sockets=Sockets(ctx), stop=stop)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    trace = synthetic_trace(5.0, 30.0, seed=4)
    values = {tuple(np.round(r, 4)) for r in trace.data[:, 1:]}
    th = threading.Thread(target=daq, daemon=True)
    sub_box: list[Subscriber] = []
    th.start()
    try:
        sub = wait_for(lambda: _connect(ctx, sub_box), what="the daq's socket")
        phases = {"fresh": 0, "stale": 0, "back": 0}
        tracker = UdpSink(f"127.0.0.1:{port}")
        play_th, play_stop = _play_in_thread(trace, tracker, loop=True)
        phase = "fresh"
        deadline = time.monotonic() + 60
        while phase != "done" and time.monotonic() < deadline and not errors:
            msg = sub.recv(timeout_s=1.0)
            if msg is None:
                continue
            beh = from_message(msg).behavior
            stale = beh.get("behavior_stale") == 1.0
            if not stale:
                assert tuple(np.round([beh["pupil"], beh["pupil_x"], beh["pupil_y"]], 4)) \
                    in values  # the tracker's readings, not the simulator's own
            if phase == "fresh" and not stale:
                phases["fresh"] += 1
                if phases["fresh"] == 10:
                    play_stop.set()  # the tracker stops sending
                    play_th.join(5)
                    phase = "stale"
            elif phase == "stale" and stale:
                phases["stale"] += 1
                if phases["stale"] == 10:
                    play_th, play_stop = _play_in_thread(trace, tracker, loop=True)
                    phase = "back"
            elif phase == "back" and not stale:
                phases["back"] += 1
                if phases["back"] == 5:
                    phase = "done"
        assert not errors, errors
        assert phase == "done", phases
    finally:
        play_stop.set()
        stop.request()
        th.join(20)
        tracker.close()
        for s in sub_box:
            s.close()
        ctx.term()
    stats = json.loads((tmp_path / "daq.json").read_text())
    src = stats["source"]
    assert src["behavior_stale_syncs"] >= 10 and src["behavior_outages"] >= 1
    assert src["behavior_samples"] > 0 and stats["reason"].startswith("stopped")


def _connect(ctx: Any, box: list) -> Any:
    """A subscriber to the daq's inproc socket once it is bound (None until then)."""
    import zmq

    from cortexcast.stream.pubsub import StreamError, Subscriber

    try:
        sub = Subscriber("inproc://daq-eye", ["sync"], context=ctx)
    except (StreamError, zmq.ZMQError):
        return None
    box.append(sub)
    return sub
