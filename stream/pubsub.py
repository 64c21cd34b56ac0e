"""Publisher and subscriber wrappers around ZeroMQ PUB/SUB.

* The publisher is an XPUB socket so that it *sees* subscriptions: a producer
  can wait until its consumers are connected (``wait_for_subscribers``) instead
  of sleeping, which removes ZeroMQ's slow-joiner race without a timer.
* Sends never block: a PUB socket drops for a subscriber whose high-water mark
  is full, so a slow consumer can never stall acquisition; the consumer sees
  the loss as a sequence gap.
* Every publisher emits a heartbeat on topic ``_hb`` (call
  :meth:`Publisher.heartbeat_if_due` from its loop); subscribers always
  subscribe to it and know when their producer was last alive.
* A subscriber never raises on a bad message: it counts it per fault kind,
  logs the first of each kind, and goes on.
* Whatever is keyed by names off the wire is bounded: a subscriber keeps
  per-(source, topic) counters for at most ``max_streams`` streams and heartbeats
  for ``max_sources`` sources, and pools the rest under :data:`OTHER`; a
  restarted (or fake) sequence is counted every time, logged once a minute per source.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import zmq

from cortexcast.core.events import AnyEvent, to_message
from cortexcast.stream.message import Message, MessageError, decode, encode
from cortexcast.stream.endpoints import StreamError, check_endpoint, endpoint_problem
from cortexcast.stream.stats import StreamStats

log = logging.getLogger(__name__)

HEARTBEAT_TOPIC = "_hb"
#: The (source, topic) counters of streams past a subscriber's ``max_streams`` are pooled here.
OTHER = ("other", "other")
#: A source's restarted/fake sequences are logged at most once per this many seconds.
RESTART_LOG_INTERVAL_S = 60.0


class Publisher:
    """Publishes :class:`Message` s on one bound (or connected) XPUB socket.

    Sequence numbers are kept per topic, starting at 0. ``what`` names the setting the
    endpoint came from (``"[daq] publish"``) for error messages.
    """

    def __init__(
        self,
        endpoint: str,
        source: str,
        *,
        hwm: int = 100,
        heartbeat_s: float = 0.5,
        bind: bool = True,
        context: zmq.Context | None = None,
        what: str | None = None,
    ) -> None:
        check_endpoint(endpoint)
        verb = "bind" if bind else "connect"
        named = f" ({what})" if what else ""
        problem = endpoint_problem(endpoint)
        if problem is not None:
            raise StreamError(f"cannot {verb} endpoint {endpoint!r}{named}: {problem}")
        self.source = source
        self.endpoint = endpoint
        self.heartbeat_s = heartbeat_s
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        if hasattr(zmq, "XPUB_VERBOSER"):  # unsubscriptions too, so counts fall on disconnect
            self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        try:
            if bind:
                self._sock.bind(endpoint)
            else:
                self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise StreamError(f"cannot {verb} endpoint {endpoint!r}{named}: {exc}") from exc
        # The real endpoint (tcp://127.0.0.1:0 binds to a random port).
        self.address: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) if bind else endpoint
        self._seq: dict[str, int] = {}
        self._subscriptions: Counter[str] = Counter()
        self._last_hb = 0.0
        self.sent: Counter[str] = Counter()
        self.status: dict[str, Any] = {}

    # -- sending -----------------------------------------------------------
    def next_seq(self, topic: str) -> int:
        return self._seq.get(topic, 0)

    def publish(
        self,
        topic: str,
        kind: str,
        arrays: Sequence[np.ndarray] = (),
        *,
        t_acq: float,
        meta: dict[str, Any] | None = None,
        stamps: Iterable[tuple[str, int]] = (),
        stage: str | None = None,
    ) -> Message:
        """Build, stamp (``stage`` or ``<source>.pub``) and send one message.

        Never blocks. Do not modify ``arrays`` afterwards: they are sent zero-copy.
        """
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        msg = Message(topic, kind, seq, self.source, t_acq, tuple(arrays), tuple(stamps), meta or {})
        msg = msg.stamped(stage or f"{self.source}.pub")
        self.send(msg)
        return msg

    def publish_event(self, event: AnyEvent, *, stamps: Iterable[tuple[str, int]] = (),
                      stage: str | None = None) -> Message:
        """Publish a typed event on its topic (:func:`cortexcast.core.events.to_message`)."""
        parts = to_message(event)
        return self.publish(parts.topic, parts.kind, parts.arrays, t_acq=parts.t_acq,
                            meta=parts.meta, stamps=stamps, stage=stage)

    def send(self, msg: Message) -> None:
        """Send a ready-made message as it is (replay uses this)."""
        try:
            self._sock.send_multipart(encode(msg), copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:  # only possible on a connected XPUB without peers
            pass
        self.sent[msg.topic] += 1
        self.heartbeat_if_due()

    def heartbeat_if_due(self, now: float | None = None) -> bool:
        """Send a heartbeat (carrying ``self.status``) if ``heartbeat_s`` has passed."""
        now = time.monotonic() if now is None else now
        self._drain_subscriptions()
        if now - self._last_hb < self.heartbeat_s:
            return False
        self._last_hb = now
        seq = self._seq.get(HEARTBEAT_TOPIC, 0)
        self._seq[HEARTBEAT_TOPIC] = seq + 1
        hb = Message(HEARTBEAT_TOPIC, "heartbeat", seq, self.source, time.time(),
                     meta={"status": self.status})
        try:
            self._sock.send_multipart(encode(hb), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        return True

    # -- readiness ---------------------------------------------------------
    def _drain_subscriptions(self) -> None:
        while True:
            try:
                event = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if event and event[0] in (0, 1):
                topic = event[1:].decode(errors="replace")
                self._subscriptions[topic] += 1 if event[0] == 1 else -1

    def subscribers(self, topic: str) -> int:
        """Number of live subscriptions whose prefix matches ``topic``."""
        self._drain_subscriptions()
        return sum(n for t, n in self._subscriptions.items() if topic.startswith(t) and n > 0)

    def wait_for_subscribers(self, topics: dict[str, int], timeout_s: float) -> bool:
        """Block until each ``topic`` has at least ``count`` subscribers, or time out.

        Returns True when all are there. Heartbeats keep flowing meanwhile.
        """
        deadline = time.monotonic() + timeout_s
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while True:
            if all(self.subscribers(t) >= n for t, n in topics.items()):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(min(left, self.heartbeat_s) * 1000)
            self.heartbeat_if_due()

    def close(self, linger_ms: int = 0) -> None:
        """Close; ``linger_ms`` > 0 lets queued messages go out first (end of a replay)."""
        self._sock.close(linger_ms)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        for ep in self.endpoints:
            check_endpoint(ep)
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


@dataclass(frozen=True)
class Sockets:
    """How a process makes its sockets, passed in so a test can run a process loop in a thread
    over ``inproc://`` (which needs one shared ``context``) without a subprocess."""

    context: zmq.Context | None = None

    def publisher(self, endpoint: str, source: str, **options: Any) -> Publisher:
        return Publisher(endpoint, source, context=self.context, **options)

    def subscriber(self, endpoints: str | Sequence[str], topics: Sequence[str],
                   **options: Any) -> "Subscriber":
        return Subscriber(endpoints, topics, context=self.context, **options)

