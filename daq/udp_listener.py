"""A bound UDP socket whose datagrams one thread reads until it is closed from any thread.

The stimulus computer (stimulus identity) and the eye tracker (behaviour) both send small
JSON datagrams; this is the receiving end they share. Closing from another thread does not
close a socket under a blocked ``recv``: the reading thread notices within ``poll_s`` and
closes it itself (or :meth:`close` does, when nothing reads).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from typing import Callable, Iterable, Iterator, Sequence

from cortexcast.daq.source import AcquisitionError

log = logging.getLogger(__name__)

#: Who may send by default: programs on this computer only.
LOOPBACK_SENDERS = ("127.0.0.0/8", "::1")
#: A refused sender is logged at most once per this many seconds.
REFUSED_LOG_INTERVAL_S = 60.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_listen(listen: str) -> None:
    """ValueError unless ``listen`` is ``host:port`` (a settings check, before any socket)."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"listen must be 'host:port', got {listen!r}")


def parse_senders(values: Iterable[str], setting: str) -> tuple[Network, ...]:
    """``["10.0.0.5", "192.168.1.0/24", "localhost"]`` as networks; ValueError names the bad one.

    ``"*"`` (alone) allows every sender.
    """
    values = tuple(values)
    if values == ("*",):
        return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    out: list[Network] = []
    for value in values:
        if value == "localhost":
            out += [ipaddress.ip_network(v) for v in LOOPBACK_SENDERS]
            continue
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ValueError(f"{setting}: {value!r} is not an IP address or network (e.g. "
                             "\"10.0.0.5\" or \"10.0.0.0/24\"; \"*\" for any sender)") from exc
    if not out:
        raise ValueError(f"{setting} is empty: no one could send (use \"*\" for any sender)")
    return tuple(out)


class UdpListener:
    """Datagrams arriving at ``listen`` ("host:port"; port 0 picks a free one) from
    ``allowed`` senders (IP networks; others are counted in ``refused``, logged once a
    minute, and dropped: anyone on the network can send a datagram)."""

    def __init__(self, listen: str, poll_s: float, *, what: str, setting: str,
                 allowed: Sequence[Network] = (), allowed_setting: str = "") -> None:
        self.what = what
        self.allowed = tuple(allowed) or parse_senders(LOOPBACK_SENDERS, "")
        self.allowed_setting = allowed_setting
        self.refused = 0
        self._refused_logged_at: float | None = None
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
                    data, sender = sock.recvfrom(65536)
                except TimeoutError:
                    continue
                except OSError as exc:  # e.g. ICMP port-unreachable on some platforms
                    if on_error is None:
                        raise
                    on_error(exc)
                    continue
                if self.admits(sender[0]):
                    yield data
        finally:
            self._reading = False
            if self._closed:
                self._close_socket()

    def admits(self, host: str) -> bool:
        """Whether a datagram from ``host`` is read (counted and logged when not)."""
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            address = None
        if address is not None:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            if any(address in net for net in self.allowed if net.version == address.version):
                return True
        self.refused += 1
        now = time.monotonic()
        if self._refused_logged_at is None or now - self._refused_logged_at >= \
                REFUSED_LOG_INTERVAL_S:
            self._refused_logged_at = now
            log.warning("%s: ignoring datagrams from %s: not an allowed sender (%d refused so "
                        "far; logged at most once a minute). Add it to %s if it is yours.",
                        self.what, host, self.refused, self.allowed_setting or "the allowed senders")
        return False

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
