"""Publishing a recording again, at recorded pace or as fast as possible.

The logic is socket-free: :class:`Replayer` reads a
:class:`~cortexcast.stream.recording.RecordingReader` and hands each message to a
``send`` callable (``Publisher.send`` in the ``replay`` process, a list in
tests). :class:`~cortexcast.core.pacing.Pacer` schedules against absolute deadlines
``start + t_recorded / speed``, so sleeping late for one message never delays
the next ones (no drift accumulates); its clock and sleep are injectable.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from cortexcast.core.config import path_field
from cortexcast.core.pacing import Pacer
from cortexcast.stream.message import Message
from cortexcast.stream.recording import RecordingError, RecordingReader

log = logging.getLogger(__name__)
Clock = Literal["recv", "t_acq"]


@dataclass(frozen=True)
class ReplaySettings:
    """Settings of a replay: the ``replay`` process (table ``[replay]``) and the daq's
    ``replay`` backend (table ``[daq.replay]``; ``[daq] recording`` / ``replay_paced`` are
    its shorthand). The backend uses recording, speed, fast, clock, loop, topics and
    strict."""

    recording: str = path_field("")
    """Recording file to replay (the command's FILE argument wins)."""
    to: str = "tcp://127.0.0.1:5555"
    """Endpoint to bind and publish on."""
    speed: float = 1.0
    """Pace as a multiple of the recorded pace (2.0: twice as fast)."""
    fast: bool = False
    """Ignore the recorded pace and send as fast as possible."""
    topics: tuple[str, ...] = ()
    """Topics to replay (exact names); empty: every recorded topic."""
    clock: Clock = "recv"
    """Pace by the recorder's receive times (``recv``) or by the rig's ``t_acq``."""
    loop: bool = False
    """Start again at the end, until stopped."""
    wait_subscribers: int = 0
    """Before sending, wait until every replayed topic has this many subscribers."""
    wait_timeout_s: float = 10.0
    """How long to wait for them (s); the process fails if they do not come."""
    hwm: int = 1000
    """Send high-water mark (messages per subscriber)."""
    linger_s: float = 0.5
    """How long to keep the socket open after the last message, so it leaves (s)."""
    source: str = "replay"
    """Source name of this process's heartbeats (messages keep their recorded source)."""
    shift_stamps: bool = False
    """Shift each message's recorded stamps so its last one is now (keeps latencies
    downstream meaningful); off: stamps are re-sent exactly as recorded."""
    stats_out: str | None = path_field(None)
    """Write a JSON of the replay's counters here on exit."""
    strict: bool = False
    """Fail on the first damaged record (CRC mismatch, undecodable) or damaged span in the
    file; off: skip it, log it once and count it (``damaged`` in the stats)."""

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        if self.wait_subscribers < 0 or self.wait_timeout_s < 0 or self.linger_s < 0:
            raise ValueError("wait_subscribers, wait_timeout_s and linger_s must be >= 0")
        if self.hwm < 1:
            raise ValueError(f"hwm must be >= 1, got {self.hwm}")


def timeline(reader: RecordingReader, indices: np.ndarray, clock: Clock = "recv") -> np.ndarray:
    """Recorded times (s) of records ``indices``, relative to the first of them.

    ``recv``: the recorder's receive times (monotone in file order); ``t_acq``:
    the rig's acquisition times (a NaN takes the previous finite value).
    """
    if not len(indices):
        return np.zeros(0)
    if clock == "recv":
        ns = reader.index["t_recv_ns"][indices]
        return (ns - ns[0]) / 1e9
    t = reader.index["t_acq"][indices].astype(float)
    finite = np.isfinite(t)
    if not finite.any():
        return np.zeros(len(t))
    fill = np.where(finite, np.arange(len(t)), np.flatnonzero(finite)[0])
    t = t[np.maximum.accumulate(fill)]
    return t - t[0]


def loop_period(t: np.ndarray) -> float:
    """Recorded time from the start of one pass to the start of the next (s).

    The span of the pass plus one mean interval, so a looped recording keeps
    its rhythm across the seam (1/30 s for a single message).
    """
    if len(t) < 2:
        return 1 / 30
    span = float(np.max(t))
    return span + span / (len(t) - 1) if span > 0 else 1 / 30


@dataclass
class ReplayStats:
    """What a replay did."""

    sent: Counter = field(default_factory=Counter)
    passes: int = 0
    max_late_s: float = 0.0
    elapsed_s: float = 0.0
    stopped: bool = False
    damaged: int = 0
    """Damaged records skipped: spans the scan skipped plus records that failed to read."""
    damaged_records: list[int] = field(default_factory=list)
    """Indices of the indexed records that failed to read or decode."""

    def as_dict(self) -> dict[str, Any]:
        return {"sent": dict(self.sent), "total": sum(self.sent.values()), "passes": self.passes,
                "max_late_s": self.max_late_s, "elapsed_s": self.elapsed_s,
                "stopped": self.stopped, "damaged": self.damaged,
                "damaged_records": list(self.damaged_records)}


def check_damage(reader: RecordingReader, strict: bool) -> int:
    """The damaged spans a scan of ``reader`` skipped (it logged each); RecordingError if
    ``strict`` and there are any."""
    spans = getattr(reader, "damaged_spans", [])
    if strict and spans:
        off, n = spans[0]
        raise RecordingError(f"{reader.path}: {len(spans)} damaged span(s), the first "
                             f"{n} bytes at byte offset {off} (strict)")
    return len(spans)


def read_or_skip(reader: RecordingReader, i: int, strict: bool, seen: set[int]) -> Message | None:
    """Record ``i`` decoded, or None when it is damaged (logged once per record, added to
    ``seen``); re-raises the RecordingError if ``strict``."""
    try:
        return reader.message(i)
    except RecordingError as exc:
        if strict:
            raise
        if i not in seen:
            seen.add(i)
            e = reader.index[i]
            log.warning("skipping damaged record %d (byte offset %d, %d bytes): %s", i,
                        int(e["offset"]), int(e["length"]), exc)
        return None


def shift_stamps(msg: Message, now_ns: int | None = None) -> Message:
    """``msg`` with every stamp moved by one offset so that its last stamp is ``now_ns``."""
    if not msg.stamps:
        return msg
    delta = (time.monotonic_ns() if now_ns is None else now_ns) - msg.stamps[-1][1]
    return Message(msg.topic, msg.kind, msg.seq, msg.source, msg.t_acq, msg.arrays,
                   tuple((s, t + delta) for s, t in msg.stamps), msg.meta)


class Replayer:
    """Sends a recording's messages, in order, paced by ``settings``.

    Messages keep their recorded topic, seq, source, t_acq and meta and get
    one more stamp, ``replay.pub``, just before ``send``. A damaged record is skipped,
    logged once and counted (``stats.damaged``) unless ``settings.strict``, which raises
    RecordingError instead.
    """

    STAGE = "replay.pub"

    def __init__(self, settings: ReplaySettings, send: Callable[[Message], Any], *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 idle: Callable[[], Any] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self._send = send
        self._clock = clock
        self._should_stop = should_stop or (lambda: False)
        self.pacer = Pacer(None if settings.fast else settings.speed, clock=clock, sleep=sleep,
                           idle=idle, should_stop=self._should_stop)
        self.stats = ReplayStats()

    def run(self, reader: RecordingReader) -> ReplayStats:
        """Replay ``reader`` (once, or until stopped with ``loop``); returns the stats."""
        s = self.settings
        indices = reader.select(s.topics or None)
        t = timeline(reader, indices, s.clock)
        period = loop_period(t)
        start = self._clock()
        self.stats.damaged = check_damage(reader, s.strict)
        seen: set[int] = set()
        self.pacer.start()
        while len(indices):
            for i, t_i in zip(indices, t, strict=True):
                msg = read_or_skip(reader, int(i), s.strict, seen)  # before the deadline
                if msg is None:
                    continue
                if not self.pacer.wait(float(t_i) + self.stats.passes * period):
                    self.stats.stopped = True
                    break
                if s.shift_stamps:
                    msg = shift_stamps(msg)
                self._send(msg.stamped(self.STAGE))
                self.stats.sent[msg.topic] += 1
            else:
                self.stats.passes += 1
            if self.stats.stopped or not s.loop:
                break
        self.stats.damaged_records = sorted(seen)
        self.stats.damaged += len(seen)
        self.stats.max_late_s = self.pacer.max_late_s
        self.stats.elapsed_s = self._clock() - start
        return self.stats
