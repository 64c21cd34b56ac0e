"""Settings of the display process (the ``[display]`` table of a rig config)."""

from __future__ import annotations

from dataclasses import dataclass

from cortexcast.core.config import path_field


@dataclass(frozen=True)
class DisplaySettings:
    stimulus_from: str = "tcp://127.0.0.1:5555"
    """Endpoint the daq publishes on; the display subscribes to its ``stimulus`` topic."""
    reconstruction_from: str = "tcp://127.0.0.1:5556"
    """Endpoint the decoder publishes on; the display subscribes to ``reconstruction``."""
    host: str = "127.0.0.1"
    """Interface the HTTP/WebSocket server listens on."""
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
