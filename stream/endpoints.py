"""Endpoints and wait-for lists as the config writes them: checked before ZeroMQ sees them
(its own errors are terse), with the error the stream layer raises."""

from __future__ import annotations

import os
from typing import Sequence

from cortexcast.core.errors import CortexcastError


class StreamError(CortexcastError, RuntimeError):
    """A socket could not be set up (bad endpoint, address in use, ...)."""


def check_endpoint(endpoint: str, *, windows: bool | None = None) -> None:
    """Raise StreamError for an endpoint ZeroMQ cannot use here.

    ``ipc://`` (Unix-domain sockets) is refused on Windows, where the rig's PCs run: libzmq
    builds for Windows do not reliably support it. ``windows`` defaults to this machine.
    """
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        raise StreamError(f"endpoint {endpoint!r} must start with tcp://, ipc:// or inproc://")
    if endpoint.startswith("ipc://") and (os.name == "nt" if windows is None else windows):
        raise StreamError(f"endpoint {endpoint!r}: ipc:// (Unix-domain sockets) does not work "
                          "on Windows; use tcp://127.0.0.1:PORT (a free port) instead")


def endpoint_problem(endpoint: str) -> str | None:
    """A readable reason a tcp endpoint cannot work, or None (zmq's own errors are terse)."""
    if not endpoint.startswith("tcp://"):
        return None
    host, sep, port = endpoint[len("tcp://"):].rpartition(":")
    if not sep or not host:
        return "expected tcp://HOST:PORT"
    if port != "*" and not (port.isdigit() and 0 <= int(port) <= 65535):
        return f"port {port!r} is not a number from 0 to 65535 (or *)"
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts) and any(int(p) > 255 for p in parts):
        return f"{host!r} is not an IPv4 address"
    return None


def parse_wait_for(items: Sequence[str]) -> dict[str, int]:
    """["frames", "stimulus:2"] -> {"frames": 1, "stimulus": 2} (config's wait_for lists)."""
    out: dict[str, int] = {}
    for item in items:
        topic, _, count = item.partition(":")
        try:
            out[topic] = int(count) if count else 1
        except ValueError as exc:
            raise StreamError(f"wait_for entry {item!r}: expected 'topic' or 'topic:N'") from exc
    return out
