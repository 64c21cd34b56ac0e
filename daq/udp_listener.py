"""A bound UDP socket whose datagrams one thread reads until it is closed from any thread.

The stimulus computer (stimulus identity) and the eye tracker (behaviour) both send small
JSON datagrams; this is the receiving end they share. Closing from another thread does not
close a socket under a blocked ``recv``: the reading thread notices within ``poll_s`` and
closes it itself (or :meth:`close` does, when nothing reads).
"""

from __future__ import annotations

import socket
from typing import Callable, Iterator

from cortexcast.daq.source import AcquisitionError


class UdpListener:
    """Datagrams arriving at ``listen`` ("host:port"; port 0 picks a free one)."""

    def __init__(self, listen: str, poll_s: float, *, what: str, setting: str) -> None:
        host, _, port = listen.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            sock.close()
            raise AcquisitionError(f"{what}: cannot listen on UDP {listen} ({exc}); check "
                                   f"{setting}, or whether another program holds the port"
                                   ) from exc
        sock.settimeout(poll_s)
        self._sock: socket.socket | None = sock
        self._closed = False
        self._reading = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound address."""
        if self._sock is None:
            raise RuntimeError("not open")
        return self._sock.getsockname()[:2]

    def datagrams(self, on_error: Callable[[OSError], None] | None = None
                  ) -> Iterator[bytes]:
        """Each datagram until :meth:`close`. A receive error goes to ``on_error`` (and the
        reading goes on), or is raised when there is none."""
        sock = self._sock
        if sock is None:
            return
        self._reading = True
        try:
            while not self._closed:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError as exc:  # e.g. ICMP port-unreachable on some platforms
                    if on_error is None:
                        raise
                    on_error(exc)
                    continue
                yield data
        finally:
            self._reading = False
            if self._closed:
                self._close_socket()

    def close(self) -> None:
        """Stop :meth:`datagrams` (any thread)."""
        self._closed = True
        if not self._reading:
            self._close_socket()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def reading(self) -> bool:
        """A thread is inside :meth:`datagrams` now."""
        return self._reading

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
