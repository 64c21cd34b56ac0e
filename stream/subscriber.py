"""The subscribing end of the wire: a ZeroMQ SUB socket that decodes, counts and never raises.

* A subscriber never raises on a bad message: it counts it per fault kind,
  logs the first of each kind, and goes on.
* It always subscribes to the heartbeat topic ``_hb`` and knows when each producer was
  last alive (and its counters, which heartbeats carry).
* Sequence gaps of data messages count as drops (heartbeat gaps do not: no data was lost).
* Whatever is keyed by names off the wire is bounded: per-(source, topic) counters for at
  most ``max_streams`` streams and heartbeats for ``max_sources`` sources, the rest pooled
  under :data:`OTHER`; a restarted (or fake) sequence is counted every time, logged once a
  minute per source.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable, Sequence

import zmq

from cortexcast.stream.endpoints import StreamError, check_endpoint
from cortexcast.stream.message import Message, MessageError, decode
from cortexcast.stream.security import SecuritySettings, client_curve
from cortexcast.stream.stats import StreamStats

log = logging.getLogger("cortexcast.stream.pubsub")  # one logger name for the wire, as before

HEARTBEAT_TOPIC = "_hb"
#: The (source, topic) counters of streams past a subscriber's ``max_streams`` are pooled here.
OTHER = ("other", "other")
#: A source's restarted/fake sequences are logged at most once per this many seconds.
RESTART_LOG_INTERVAL_S = 60.0


class Subscriber:
    """Subscribes to topics on one or more endpoints and decodes messages.

    Counts sequence gaps per (source, topic) as drops, counts and skips bad
    messages, tracks each producer's last heartbeat. Source names come off the wire,
    so at most ``max_streams`` (source, topic) pairs and ``max_sources`` sources are
    tracked by name; messages of later ones are counted under :data:`OTHER` (no
    sequence checks). ``clock`` (monotonic seconds) paces the restart log.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        topics: Sequence[str],
        *,
        hwm: int = 100,
        bind: bool = False,
        context: zmq.Context | None = None,
        name: str = "subscriber",
        max_streams: int = 64,
        max_sources: int = 32,
        clock: Callable[[], float] = time.monotonic,
        security: SecuritySettings | None = None,
    ) -> None:
        self.max_streams = max_streams
        self.max_sources = max_sources
        self._clock = clock
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.name = name
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        for t in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self._sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC.encode())
        # tcp last: CURVE options, once set, apply to every later connect (ipc/inproc stay plain)
        for ep in sorted(self.endpoints, key=lambda e: e.startswith("tcp://")):
            check_endpoint(ep)
            client_curve(self._sock, ep, security, name)
            try:
                self._sock.bind(ep) if bind else self._sock.connect(ep)
            except zmq.ZMQError as exc:
                self._sock.close(0)
                raise StreamError(f"cannot {'bind' if bind else 'connect'} {ep}: {exc}") from exc
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self.stats = StreamStats()
        self._last_seq: dict[tuple[str, str], int] = {}
        self.last_heartbeat: dict[str, float] = {}
        self.producer_status: dict[str, dict[str, Any]] = {}
        self._logged: set[str] = set()
        self._restart_log: dict[str, tuple[float, int]] = {}  # source -> (last logged, unlogged)
        self._pending: deque[Message] = deque()  # data that arrived during wait_ready

    def _accept(self, frames: list[zmq.Frame]) -> Message | None:
        """Decode, count, and return a data message (None for heartbeats/bad)."""
        try:
            msg = decode(frames)
        except MessageError as exc:
            self.stats.bad[exc.reason] += 1
            if exc.reason not in self._logged:
                self._logged.add(exc.reason)
                log.warning("%s: dropping bad message (%s): %s (further ones counted, not logged)",
                            self.name, exc.reason, exc)
            return None
        key = (msg.source, msg.topic)
        if key in self._last_seq or len(self._last_seq) < self.max_streams:
            last = self._last_seq.get(key)
            if last is not None:
                if msg.seq > last + 1:
                    # A heartbeat gap is not data lost: drops count data messages only
                    # (a stalled consumer once reported 88 drops for 43 lost frames).
                    if msg.topic != HEARTBEAT_TOPIC:
                        self.stats.dropped[key] += msg.seq - last - 1
                elif msg.seq <= last:  # producer restarted (or a fake): start counting afresh
                    self.stats.restarted[key] += 1
                    self._log_restart(msg, last)
            self._last_seq[key] = msg.seq
        else:
            key = OTHER
        known_source = (msg.source in self.last_heartbeat
                        or len(self.last_heartbeat) < self.max_sources)
        if msg.kind == "heartbeat":
            if known_source:
                self.last_heartbeat[msg.source] = time.monotonic()
                status = msg.meta.get("status")
                if isinstance(status, dict):
                    self.producer_status[msg.source] = status
            return None
        self.stats.received[key] += 1
        if known_source:
            self.last_heartbeat[msg.source] = time.monotonic()
        return msg

    def _log_restart(self, msg: Message, last: int) -> None:
        """Log a source's sequence restart at most once per :data:`RESTART_LOG_INTERVAL_S`."""
        now = self._clock()
        logged_at, unlogged = self._restart_log.get(msg.source, (None, 0))
        if logged_at is not None and now - logged_at < RESTART_LOG_INTERVAL_S:
            self._restart_log[msg.source] = (logged_at, unlogged + 1)
            return
        self._restart_log[msg.source] = (now, 0)
        more = f"; {unlogged} more since the last such line" if unlogged else ""
        log.info("%s: %s/%s restarted its sequence (%d after %d)%s (logged at most once a "
                 "minute per source; all counted in 'restarted')",
                 self.name, msg.source, msg.topic, msg.seq, last, more)

    def recv(self, timeout_s: float | None = None) -> Message | None:
        """The next data message, or None if none arrives within ``timeout_s``.

        ``timeout_s=None`` waits forever; heartbeats and bad messages are
        consumed silently (but counted) while waiting.
        """
        if self._pending:
            return self._pending.popleft()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._poller.poll(None if left is None else left * 1000):
                return None
            msg = self._accept(self._sock.recv_multipart(copy=False))
            if msg is not None:
                return msg
            # a heartbeat or a bad message: go on while more is queued (poll(0) at the
            # deadline), so a drain with timeout 0 does not stop at a heartbeat

    def recv_all(self) -> list[Message]:
        """Every data message already waiting, without blocking."""
        out = list(self._pending)
        self._pending.clear()
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return out
            msg = self._accept(frames)
            if msg is not None:
                out.append(msg)

    def recv_latest(self, timeout_s: float | None = None) -> dict[str, Message]:
        """Newest-only receive for consumers that may skip (the display).

        Waits up to ``timeout_s`` for something, then drains the queue and
        returns the newest message per topic; older ones count as skipped.
        """
        first = self.recv(timeout_s)
        if first is None:
            return {}
        msgs = [first, *self.recv_all()]
        latest: dict[str, Message] = {}
        for m in msgs:
            latest[m.topic] = m
        self.stats.skipped += len(msgs) - len(latest)
        return latest

    def wait_ready(self, timeout_s: float, sources: int = 1) -> bool:
        """Handshake: wait until ``sources`` producers have been heard from."""
        deadline = time.monotonic() + timeout_s
        while len(self.last_heartbeat) < sources:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._poller.poll(left * 1000):
                msg = self._accept(self._sock.recv_multipart(copy=False))
                if msg is not None:
                    self._pending.append(msg)
        return True

    def producer_alive(self, source: str, within_s: float = 2.0) -> bool:
        t = self.last_heartbeat.get(source)
        return t is not None and time.monotonic() - t <= within_s

    @property
    def socket(self) -> zmq.Socket:
        return self._sock

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
