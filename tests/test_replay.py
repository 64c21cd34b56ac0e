"""Replay: pacing without sockets, then to a real subscriber, in process and via the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cortexcast.core.config import ConfigError, load_settings
from cortexcast.stream.message import Message
from cortexcast.stream.pubsub import Subscriber
from cortexcast.stream.record_cli import RecordSettings, replay
from cortexcast.stream.recording import RecordingReader, RecordingWriter
from cortexcast.core.pacing import Pacer
from cortexcast.stream.replay import Replayer, ReplaySettings, loop_period, shift_stamps, timeline

ROOT = Path(__file__).resolve().parents[1]
T0_NS = 7_000_000_000


class FakeClock:
    """A monotonic clock whose sleeps advance it, overshooting by ``late_s`` each time."""

    def __init__(self, late_s: float = 0.0) -> None:
        self.now = 1000.0
        self.late_s = late_s
        self.slept = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        assert dt > 0
        self.slept += 1
        self.now += dt + self.late_s


def _recording(path: Path, gaps_ms: list[float]) -> list[Message]:
    """Frames and sync messages received ``gaps_ms`` apart (t_acq 1/30 s apart)."""
    msgs, t = [], T0_NS
    with RecordingWriter(path) as w:
        for k, gap in enumerate(gaps_ms):
            t += int(gap * 1e6)
            if k % 2 == 0:
                arrays = (np.full((8, 8), k, np.uint16),)
                msg = Message("frames", "frame", k // 2, "daq", k / 60, arrays,
                              (("daq.pub", 10_000 + k),), {"imaging_frame": k // 2})
            else:
                msg = Message("sync", "sync", k // 2, "daq", k / 60, (),
                              (("daq.pub", 10_000 + k),),
                              {"imaging_frame": k // 2, "stim_frame": k})
            w.write(msg, t_recv_ns=t)
            msgs.append(msg)
    return msgs


def _assert_replayed(got: Message, want: Message) -> None:
    assert (got.topic, got.kind, got.seq, got.source, got.t_acq, got.meta) == (
        want.topic, want.kind, want.seq, want.source, want.t_acq, want.meta)
    assert got.stamps[:-1] == want.stamps and got.stamps[-1][0] == "replay.pub"
    for a, b in zip(got.arrays, want.arrays, strict=True):
        np.testing.assert_array_equal(a, b)


# -- pacing, no sockets -----------------------------------------------------------
def test_pacer_uses_absolute_deadlines_so_lateness_does_not_accumulate():
    clock = FakeClock(late_s=0.003)  # every sleep overshoots by 3 ms
    idles = []
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep, idle=lambda: idles.append(1))
    pacer.start()
    t0 = clock()
    for k in range(300):
        assert pacer.wait(k / 30)
        assert 0 <= clock() - t0 - k / 30 <= 0.0031  # never more than one overshoot late
    assert pacer.max_late_s <= 0.0031 and len(idles) == clock.slept > 0


def test_pacer_speed_fast_and_stop():
    clock = FakeClock()
    pacer = Pacer(4.0, clock=clock, sleep=clock.sleep)
    pacer.start()
    assert pacer.wait(2.0) and clock() == pytest.approx(1000.5)
    fast = Pacer(None, clock=clock, sleep=clock.sleep)
    slept = clock.slept
    assert fast.wait(1e6) and clock.slept == slept
    stopping = Pacer(1.0, clock=clock, sleep=clock.sleep, should_stop=lambda: clock() > 1001)
    stopping.start()
    assert not stopping.wait(10.0) and clock() < 1001.1
    with pytest.raises(ValueError):
        Pacer(0.0)


def test_timeline_and_loop_period(tmp_path):
    _recording(tmp_path / "r.ccrec", [0, 10, 30, 20])
    with RecordingReader(tmp_path / "r.ccrec") as r:
        idx = r.select()
        np.testing.assert_allclose(timeline(r, idx, "recv"), [0, 0.01, 0.04, 0.06])
        np.testing.assert_allclose(timeline(r, idx, "t_acq"), np.arange(4) / 60)
        np.testing.assert_allclose(timeline(r, r.select(["sync"]), "recv"), [0, 0.05])
    assert loop_period(np.array([0, 0.01, 0.04, 0.06])) == pytest.approx(0.08)
    assert loop_period(np.array([0.0])) == pytest.approx(1 / 30)


@pytest.mark.parametrize("speed", [1.0, 2.5])
def test_replayer_sends_every_message_at_its_recorded_time(tmp_path, speed):
    gaps = [0, 33, 1, 40, 0, 100, 5, 33, 33, 2]
    msgs = _recording(tmp_path / "r.ccrec", gaps)
    clock = FakeClock(late_s=0.002)
    sent: list[tuple[float, Message]] = []
    replayer = Replayer(ReplaySettings(speed=speed), lambda m: sent.append((clock(), m)),
                        clock=clock, sleep=clock.sleep)
    t0 = clock()
    with RecordingReader(tmp_path / "r.ccrec") as r:
        stats = replayer.run(r)
    assert len(sent) == len(msgs) and stats.passes == 1 and not stats.stopped
    assert stats.sent == {"frames": 5, "sync": 5}
    want_t = np.cumsum(gaps) / 1000 / speed
    got_t = np.array([t for t, _ in sent]) - t0
    assert np.all(got_t >= want_t - 1e-9) and np.all(got_t <= want_t + 0.0021)
    for (_, got), want in zip(sent, msgs):
        _assert_replayed(got, want)


def test_replayer_topics_fast_loop_and_shifted_stamps(tmp_path):
    msgs = _recording(tmp_path / "r.ccrec", [0, 10, 10, 10])
    sent: list[Message] = []
    clock = FakeClock()
    settings = ReplaySettings(fast=True, topics=("frames",), loop=True, shift_stamps=True)
    replayer = Replayer(settings, sent.append, clock=clock, sleep=clock.sleep,
                        should_stop=lambda: len(sent) >= 5)
    with RecordingReader(tmp_path / "r.ccrec") as r:
        stats = replayer.run(r)
    assert clock.slept == 0 and stats.stopped and stats.passes == 2
    assert [m.seq for m in sent] == [0, 1, 0, 1, 0] and {m.topic for m in sent} == {"frames"}
    for m in sent:  # the recorded stamp moved to (about) now, just before replay.pub
        assert [s for s, _ in m.stamps] == ["daq.pub", "replay.pub"]
        assert 0 <= m.stamps[1][1] - m.stamps[0][1] < 10**8
    moved = shift_stamps(msgs[0], now_ns=50)
    assert moved.stamps == (("daq.pub", 50),) and moved.arrays is msgs[0].arrays


# -- over sockets ---------------------------------------------------------------
def _collect(sub: Subscriber, n: int) -> list[Message]:
    got = []
    while len(got) < n and (msg := sub.recv(timeout_s=5)) is not None:
        got.append(msg)
    return got


def test_replay_reproduces_messages_and_pace_on_a_subscriber(tmp_path):
    gaps = [0] + [25] * 19
    msgs = _recording(tmp_path / "r.ccrec", gaps)
    endpoint = f"ipc://{tmp_path}/r.sock"
    settings = ReplaySettings(recording=str(tmp_path / "r.ccrec"), to=endpoint,
                              wait_subscribers=1, wait_timeout_s=20, linger_s=0.1)
    with Subscriber(endpoint, ["frames", "sync"], hwm=1000) as sub:
        summary = replay(settings)
        got = _collect(sub, len(msgs))
    assert summary["total"] == len(msgs) and summary["passes"] == 1
    assert len(got) == len(msgs) and sub.stats.as_dict()["total_dropped"] == 0
    for g, want in zip(got, msgs):
        _assert_replayed(g, want)
    sent_at = np.array([m.stamps[-1][1] for m in got], dtype=float) / 1e9
    want_at = np.cumsum(gaps) / 1000
    late = (sent_at - sent_at[0]) - want_at
    assert np.all(late > -0.002) and np.all(late < 0.1), late  # loosely: never early, no drift


def test_replay_cli_fast_to_a_subscriber(tmp_path):
    msgs = _recording(tmp_path / "r.ccrec", [0] + [1000] * 9)  # 9 s at recorded pace
    endpoint = f"ipc://{tmp_path}/c.sock"
    stats = tmp_path / "stats.json"
    with Subscriber(endpoint, ["frames", "sync"], hwm=1000) as sub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cortexcast.stream.record_cli", "replay", str(tmp_path / "r.ccrec"),
             "--to", endpoint, "--fast", "--wait-subscribers", "1", "--wait-timeout", "20",
             "--linger", "0.3", "--stats-out", str(stats)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            got = _collect(sub, len(msgs))
            stdout, stderr = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert f"replayed {len(msgs)} messages" in stdout
    assert json.loads(stats.read_text())["elapsed_s"] < 5
    assert [(m.topic, m.seq) for m in got] == [(m.topic, m.seq) for m in msgs]
    for g, want in zip(got, msgs):
        _assert_replayed(g, want)


def test_replay_cli_fails_without_subscribers_and_on_bad_config(tmp_path):
    _recording(tmp_path / "r.ccrec", [0, 10])
    base = [sys.executable, "-m", "cortexcast.stream.record_cli", "replay", str(tmp_path / "r.ccrec"),
            "--to", f"ipc://{tmp_path}/n.sock"]
    proc = subprocess.run([*base, "--wait-subscribers", "1", "--wait-timeout", "0.2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1 and "subscriber" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[replay]\nspeeed = 2.0\n")
    proc = subprocess.run([*base, "--config", str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "speeed" in proc.stderr and "bad.toml" in proc.stderr


def test_settings_load_from_toml(tmp_path):
    cfg = tmp_path / "rig.toml"
    cfg.write_text('[record]\nendpoints = ["tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556"]\n'
                   'topics = ["frames"]\nout = "x.ccrec"\nfsync_s = 0.5\n'
                   '[replay]\nspeed = 2\ntopics = ["frames", "sync"]\nclock = "t_acq"\n')
    rec = load_settings(RecordSettings, cfg, "record", {"duration_s": 3.0})
    assert rec.endpoints == ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
    # a relative path in a config file is relative to that file
    assert (rec.topics, rec.out, rec.fsync_s, rec.duration_s) == (
        ("frames",), str(tmp_path / "x.ccrec"), 0.5, 3.0)
    rep = load_settings(ReplaySettings, cfg, "replay")
    assert (rep.speed, rep.topics, rep.clock) == (2.0, ("frames", "sync"), "t_acq")
    with pytest.raises(ConfigError, match="speed"):
        load_settings(ReplaySettings, None, "replay", {"speed": -1.0})
    with pytest.raises(ConfigError, match="clock"):
        load_settings(ReplaySettings, None, "replay", {"clock": "wall"})


def test_looping_replay_stops_cleanly_on_sigterm(tmp_path):
    msgs = _recording(tmp_path / "r.ccrec", [0] + [5] * 5)
    endpoint = f"ipc://{tmp_path}/l.sock"
    with Subscriber(endpoint, ["frames", "sync"], hwm=1000) as sub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cortexcast.stream.record_cli", "replay", str(tmp_path / "r.ccrec"),
             "--to", endpoint, "--loop", "--speed", "4", "--wait-subscribers", "1"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            got = _collect(sub, 3 * len(msgs))  # three passes
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert [m.seq for m in got[:len(msgs)]] == [m.seq for m in got[len(msgs):2 * len(msgs)]]
    assert len(got) == 3 * len(msgs) and "replayed" in stdout
    passes = int(stdout.split(" pass(es)")[0].rsplit(" ", 1)[1])
    assert passes >= 2
