"""Free local ports for the stacks that demo, bench and the tests start."""

from __future__ import annotations

import socket


def free_ports(n: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (TCP by default, or ``socket.SOCK_DGRAM``),
    held open together while choosing so none repeats."""
    socks = [socket.socket(socket.AF_INET, kind) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]
