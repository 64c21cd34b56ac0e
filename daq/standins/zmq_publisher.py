"""A bound publisher for the ZeroMQ stand-ins, with a subscriber handshake.

It is an XPUB socket: on the wire the same as ScanImage's PUB (subscribers cannot
tell), but it sees subscriptions, so a stand-in can wait until its consumer is
connected instead of sleeping (``--wait-subscribers``).
"""

from __future__ import annotations

import logging
import time

import zmq

log = logging.getLogger("standin")


class StandinPublisher:
    def __init__(self, endpoint: str, hwm: int = 1000) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise SystemExit(f"stand-in: cannot bind {endpoint}: {exc}") from exc
        self.endpoint = endpoint
        self.subscribers = 0

    def _drain(self) -> None:
        while self.sock.poll(0):
            msg = self.sock.recv()
            if msg[:1] == b"\x01":
                self.subscribers += 1
            elif msg[:1] == b"\x00":
                self.subscribers -= 1

    def wait_for_subscribers(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            self._drain()
            if self.subscribers >= n:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.poll(min(100, int(left * 1000) + 1))

    def send(self, data: bytes) -> None:
        self._drain()
        self.sock.send(data, copy=False)

    def close(self, linger_ms: int = 0) -> None:
        self.sock.close(linger=linger_ms)
        self.ctx.term()
