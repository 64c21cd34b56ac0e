"""Small helpers every process wrapper shares: signals, stats files, logging."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT so loops unwind and clean up.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it.
    """


def install_stop_signals() -> None:
    """Turn SIGTERM and SIGINT into :class:`Stop` (raised wherever the main thread is)."""

    def _raise(signum: int, _frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, _raise)


class HeldStop:
    """Stop signals that can be held over a short critical section.

    The daq publishes each frame's ``sync`` just before the frame; a stop landing between
    the two would leave a recording with a sync whose frame never went out. While
    :meth:`hold` is on, a SIGTERM/SIGINT is remembered and raised as :class:`Stop` when the
    section ends (:meth:`release`), or after ``max_hold_s`` (SIGALRM) if the source never
    delivers the frame, so a stop is never lost or delayed for long.
    """

    def __init__(self, max_hold_s: float = 0.5) -> None:
        self.max_hold_s = max_hold_s
        self.holding = False
        self.pending: str | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        """End the section; raise the stop that arrived during it, if any."""
        self.holding = False
        if self.pending is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise Stop(self.pending)

    def end(self) -> None:
        """Leave any held section without raising: the caller is unwinding anyway."""
        self.holding = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if not self.holding:
            raise Stop(name)
        if self.pending is None:
            self.pending = name
            signal.setitimer(signal.ITIMER_REAL, self.max_hold_s)

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        if self.pending is not None:
            raise Stop(self.pending)


def ignore_stop_signals() -> None:
    """During cleanup a second Ctrl-C must not interrupt writing the stats file."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # a HeldStop's pending alarm, if any ...
    signal.setitimer(signal.ITIMER_REAL, 0)  # ... and cancelled


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON via a temp file + rename, so a reader never sees half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, default=_json_default)
    os.replace(tmp, p)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def percentiles_ms(samples_ns: list[int] | np.ndarray) -> dict[str, float | int]:
    """p50/p99/max (ms) and count of a list of nanosecond durations."""
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if a.size == 0:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def setup_logging(name: str, level: str = "INFO") -> logging.Logger:
    logging.basicConfig(
        stream=sys.stderr, level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {name} %(levelname)s %(message)s", datefmt="%H:%M:%S",
    )
    return logging.getLogger(name)


def die_with_parent() -> None:
    """Under `cortexcast up`: get SIGTERM from the kernel if the supervisor dies (Linux).

    Children run in their own sessions (so the terminal's Ctrl-C reaches only the
    supervisor); this keeps a killed supervisor from leaving processes that hold
    the rig's ports.
    """
    parent = os.environ.get("CORTEXCAST_SUPERVISOR_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before we asked
        raise SystemExit("cortexcast: supervisor is gone; exiting")
