"""Settings of the display process (the ``[display]`` table of a rig config)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from cortexcast.core.config import path_field

#: Characters a fixed ``token`` may use: it travels in a URL and a cookie unescaped.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
#: A host name or IPv4 literal in ``allowed_hosts`` (IPv6 literals are checked apart).
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")
MIN_TOKEN_LENGTH = 16


def _is_host_name(name: object) -> bool:
    """A bare host name or IP address (``[::1]`` or ``::1``): no scheme, port or path."""
    if not isinstance(name, str):
        return False
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if ":" in bare:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            return False
        return True
    return bare == name and _HOST_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class DisplaySettings:
    stimulus_from: str = "tcp://127.0.0.1:5555"
    """Endpoint the daq publishes on; the display subscribes to its ``stimulus`` topic."""
    reconstruction_from: str = "tcp://127.0.0.1:5556"
    """Endpoint the decoder publishes on; the display subscribes to ``reconstruction``."""
    host: str = "127.0.0.1"
    """Interface the HTTP/WebSocket server listens on. Anything but loopback (127.x, ::1,
    ``localhost``) makes the page, ``/api/*`` and ``/ws`` require ``token`` (see
    ``require_token``)."""
    port: int = 8030
    """TCP port of the page (0: pick a free port; the URL is printed either way)."""
    fps: float = 30.0
    """Rate (Hz) at which the newest pair is pushed to browsers and saved; at most this."""
    scale: int = 8
    """Upscaling factor (screen px per stimulus px) of the page and of saved frames."""
    headless: bool = False
    """Run without the web server (receive, keep statistics, optionally save)."""
    save: str | None = path_field(None)
    """Write what would be shown: ``*.gif`` (animated GIF) or a directory (PNG series)."""
    duration_s: float | None = None
    """Stop after this many seconds (None: run until SIGINT/SIGTERM)."""
    stats_out: str | None = path_field(None)
    """Write counters and latency percentiles as JSON here on stop."""
    correlation_window: int = 300
    """Number of most recent paired frames (frames, 300 = 10 s at 30 Hz) in the running r."""
    eval_mask: str | None = path_field(None)
    """``.npy`` (36, 64) bool evaluation mask for the correlation (None: every pixel)."""
    hwm: int = 1000
    """Receive high-water mark (messages) of the subscriber socket."""
    token: str = field(default="", repr=False)  # never in logs or tracebacks
    """Access token of the page, ``/api/*`` and ``/ws`` when one is required ("": a random
    one is made at each start). Printed in the URL to open (``/?token=...``); also taken
    from an ``Authorization: Bearer`` header, or the cookie the page sets on first load."""
    require_token: bool | Literal["auto"] = "auto"
    """Whether a token is required: ``"auto"`` only when ``host`` is not loopback; ``true``
    always; ``false`` never (anyone who can reach the port sees the recording)."""
    allowed_hosts: tuple[str, ...] = ()
    """Extra names the page may be reached by (``Host`` header), e.g. ``["rig-3.lab"]``:
    besides ``host`` itself (and localhost names when loopback or ``0.0.0.0``/``::``), any
    other name is refused (DNS rebinding). Cross-origin WebSockets are always refused."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if not 0 < self.fps <= 240:
            raise ValueError(f"fps must be in (0, 240], got {self.fps}")
        if not 1 <= self.scale <= 64:
            raise ValueError(f"scale must be in 1..64, got {self.scale}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")
        if self.correlation_window < 2:
            raise ValueError(f"correlation_window must be >= 2, got {self.correlation_window}")
        if self.hwm < 1:
            raise ValueError(f"hwm must be >= 1, got {self.hwm}")
        if self.token and (len(self.token) < MIN_TOKEN_LENGTH
                           or not _TOKEN_CHARS.fullmatch(self.token)):
            raise ValueError(f"token must be at least {MIN_TOKEN_LENGTH} characters of "
                             "A-Z a-z 0-9 . _ ~ - (or empty for a random one)")
        if self.require_token not in (True, False, "auto"):
            raise ValueError(f"require_token must be true, false or \"auto\", "
                             f"got {self.require_token!r}")
        for name in self.allowed_hosts:
            if not _is_host_name(name):
                raise ValueError(f"allowed_hosts must hold bare host names or IP addresses "
                                 f"(no scheme, port or path), got {name!r}")
