"""A thread that owns a publisher's socket, so acquisition never waits on ZeroMQ.

Every call into a ZeroMQ socket first processes that socket's pending commands: new
peers, and the subscriptions they sent. With a peer flooding subscriptions that work
lands in whichever thread calls ``send`` next, which for the daq is the acquisition
loop (a p99 of 785 ms was measured). Here the acquisition loop only puts encoded
messages on a bounded queue; this thread sends them, applies subscriptions (through the
publisher's :class:`~cortexcast.stream.subscriptions.SubscriptionBook`) and closes the
socket. A full queue drops the message and counts it, as a full ZeroMQ queue would.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Sequence

import zmq

#: Subscription messages handled between two sends (the rest wait for the next turn).
DRAIN_BUDGET = 256
_STOP = object()


class SendThread:
    """Sends queued multipart messages on ``sock`` from a daemon thread.

    ``sock`` must no longer be used by its creator once this starts (ZeroMQ sockets
    belong to one thread at a time). ``on_subscription(event) -> bool`` decides whether an
    (un)subscription is applied.
    """

    def __init__(self, sock: zmq.Socket, on_subscription: Callable[[bytes], bool], *,
                 queue_size: int = 200, name: str = "publisher") -> None:
        self._sock = sock
        self._on_subscription = on_subscription
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._linger_ms = 0
        self.dropped = 0
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}-send", daemon=True)
        self._thread.start()

    def put(self, frames: Sequence[Any]) -> bool:
        """Queue one message; False (and counted in ``dropped``) when the queue is full."""
        try:
            self._queue.put_nowait(frames)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        try:
            more = False  # subscriptions still waiting: do not sleep on the queue
            while True:
                try:
                    item = self._queue.get_nowait() if more else self._queue.get(timeout=0.05)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    self._send(item)
                more = self._drain()
            while True:  # what was queued before the stop still goes out
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    self._send(item)
        except BaseException as exc:  # recorded for close(); never silently lost
            self.failed = exc
        finally:
            self._sock.close(self._linger_ms)

    def _send(self, frames: Sequence[Any]) -> None:
        try:
            self._sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:  # only on a connected XPUB without peers
            pass

    def _drain(self) -> bool:
        return drain_subscriptions(self._sock, self._on_subscription)

    def close(self, linger_ms: int = 0, timeout_s: float = 5.0) -> None:
        """Send what is queued, close the socket (with ``linger_ms``) and end the thread."""
        self._linger_ms = linger_ms
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(timeout_s + linger_ms / 1000)


def drain_subscriptions(sock: zmq.Socket, decide: Callable[[bytes], bool]) -> bool:
    """Apply up to :data:`DRAIN_BUDGET` waiting (un)subscriptions of a manual XPUB (those
    ``decide`` accepts); True if more may be waiting."""
    for _ in range(DRAIN_BUDGET):
        try:
            event = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return False
        apply_subscription(sock, event, decide)
    return True


def apply_subscription(sock: zmq.Socket, event: bytes,
                       decide: Callable[[bytes], bool]) -> None:
    """Apply one (un)subscription message read from a manual XPUB if ``decide`` accepts it.

    Must run right after the ``recv`` that returned ``event``: a manual XPUB applies
    ``SUBSCRIBE`` to the peer it last received from.
    """
    if not decide(event):
        return
    try:
        sock.setsockopt(zmq.SUBSCRIBE if event[0] == 1 else zmq.UNSUBSCRIBE, event[1:])
    except zmq.ZMQError:  # the peer left before it was applied
        pass
