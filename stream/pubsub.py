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
* The subscriber (:mod:`cortexcast.stream.subscriber`, importable from here) never
  raises on a bad message and keeps bounded books of what arrives.
* Subscriptions are applied by the publisher, not by ZeroMQ: only prefixes of its
  topics (or a few dozen when it does not know them), so no peer can bloat or stall it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import zmq

from cortexcast.core.events import AnyEvent, to_message
from cortexcast.stream.message import Message, encode
from cortexcast.stream.endpoints import StreamError, check_endpoint, endpoint_problem
from cortexcast.stream.security import (
    SecuritySettings, check_publish_endpoint, load_security, publisher_socket,
)
from cortexcast.stream.send_thread import SendThread, drain_subscriptions
from cortexcast.stream.subscriptions import SubscriptionBook
from cortexcast.stream.subscriber import HEARTBEAT_TOPIC, Subscriber  # Subscriber: imported from here too

log = logging.getLogger(__name__)



class Publisher:
    """Publishes :class:`Message` s on one bound (or connected) XPUB socket.

    Sequence numbers are kept per topic, starting at 0. ``what`` names the setting the
    endpoint came from (``"[daq] publish"``) for error messages. ``topics``: what it will
    publish; subscriptions to anything else are refused (stream/subscriptions.py).
    ``background``: a thread owns the socket and sends (stream/send_thread.py), so the
    caller never waits on ZeroMQ; then only this object may touch the socket.
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
        security: SecuritySettings | None = None,
        topics: Sequence[str] | None = None,
        background: bool = False,
    ) -> None:
        check_endpoint(endpoint)
        verb = "bind" if bind else "connect"
        named = f" ({what})" if what else ""
        problem = endpoint_problem(endpoint)
        if problem is not None:
            raise StreamError(f"cannot {verb} endpoint {endpoint!r}{named}: {problem}")
        check_publish_endpoint(endpoint, security, what)  # no raw frames off this host
        self.source = source
        self.endpoint = endpoint
        self.heartbeat_s = heartbeat_s
        self._ctx = context or zmq.Context.instance()
        self._sock = publisher_socket(self._ctx, endpoint, security)  # CURVE server with keys
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        # Manual: every (un)subscription comes to us and is applied only if the book accepts
        # it (stream/subscriptions.py), so no peer can fill the socket's trie.
        self._sock.setsockopt(zmq.XPUB_MANUAL, 1)
        self._book = SubscriptionBook(topics, always=(HEARTBEAT_TOPIC,), name=source)
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
        self._sender = (SendThread(self._sock, self._book.decide, queue_size=hwm, name=source)
                        if background else None)
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
        self._send_frames(encode(msg))
        self.sent[msg.topic] += 1
        self.heartbeat_if_due()

    def _send_frames(self, frames: list[Any]) -> None:
        if self._sender is not None:
            self._sender.put(frames)
            return
        try:
            self._sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:  # only possible on a connected XPUB without peers
            pass

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
        self._send_frames(encode(hb))
        return True

    # -- readiness ---------------------------------------------------------
    def _drain_subscriptions(self) -> None:
        """Apply waiting (un)subscriptions, a bounded number per call (the send thread
        does this itself when there is one)."""
        if self._sender is None:
            drain_subscriptions(self._sock, self._book.decide)

    @property
    def refused_subscriptions(self) -> int:
        """Subscriptions refused because they match nothing this publisher sends (or too many)."""
        return self._book.refused

    @property
    def queue_dropped(self) -> int:
        """Messages the send thread's full queue dropped (0 without one)."""
        return 0 if self._sender is None else self._sender.dropped

    def subscribers(self, topic: str) -> int:
        """Number of live subscriptions whose prefix matches ``topic``."""
        self._drain_subscriptions()
        return self._book.count(topic)

    def wait_for_subscribers(self, topics: dict[str, int], timeout_s: float) -> bool:
        """Block until each ``topic`` has at least ``count`` subscribers, or time out.

        Returns True when all are there. Heartbeats keep flowing meanwhile.
        """
        deadline = time.monotonic() + timeout_s
        poller = zmq.Poller()
        if self._sender is None:
            poller.register(self._sock, zmq.POLLIN)
        while True:
            if all(self.subscribers(t) >= n for t, n in topics.items()):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._sender is None:
                poller.poll(min(left, self.heartbeat_s) * 1000)
            else:
                self._book.wait_changed(min(left, self.heartbeat_s))
            self.heartbeat_if_due()

    def close(self, linger_ms: int = 0) -> None:
        """Close; ``linger_ms`` > 0 lets queued messages go out first (end of a replay)."""
        if self._sender is not None:
            self._sender.close(linger_ms)
        else:
            self._sock.close(linger_ms)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Sockets:
    """How a process makes its sockets, passed in so a test can run a process loop in a thread
    over ``inproc://`` (which needs one shared ``context``) without a subprocess."""

    context: zmq.Context | None = None
    security: SecuritySettings | None = None
    """The config's [security] (:func:`sockets_for`); None: no keys."""

    def publisher(self, endpoint: str, source: str, **options: Any) -> Publisher:
        options.setdefault("security", self.security)
        return Publisher(endpoint, source, context=self.context, **options)

    def subscriber(self, endpoints: str | Sequence[str], topics: Sequence[str],
                   **options: Any) -> "Subscriber":
        options.setdefault("security", self.security)
        return Subscriber(endpoints, topics, context=self.context, **options)


def sockets_for(config: str | Path | None, context: zmq.Context | None = None) -> Sockets:
    """The :class:`Sockets` a process of ``config`` makes its sockets with ([security] applied)."""
    return Sockets(context, load_security(config))
