"""What every process shares: stop signals, the process skeleton, stats files, logging."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np


T = TypeVar("T")


class Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT so loops unwind and clean up.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it.
    """


class StopSignals:
    """SIGTERM/SIGINT for one process run, the one stop handling every process uses.

    A signal is remembered (:attr:`requested`, also settable from any thread with
    :meth:`request`) and, with ``raise_stop`` (the default), raised as :class:`Stop` in the
    main thread wherever it is, so blocking calls unwind at once. Processes whose loops poll
    (the recorder) pass ``raise_stop=False`` and check :attr:`requested` instead.

    The daq publishes each frame's ``sync`` just before the frame; a stop landing between
    the two would leave a recording with a sync whose frame never went out. While
    :meth:`hold` is on, a stop is remembered and raised when the section ends
    (:meth:`release`), or after ``max_hold_s`` (SIGALRM) if the source never delivers the
    frame, so a stop is never lost or delayed for long.
    """

    def __init__(self, max_hold_s: float = 0.5, *, raise_stop: bool = True) -> None:
        self.max_hold_s = max_hold_s
        self.raise_stop = raise_stop
        self.holding = False
        self.pending: str | None = None
        self.installed = False
        self._requested = threading.Event()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def request(self, reason: str = "request") -> None:
        """Ask the run to stop (any thread; never raises): loops see :attr:`requested`."""
        if self.pending is None:
            self.pending = reason
        self._requested.set()

    def install(self) -> bool:
        """Take SIGTERM/SIGINT (main thread only; elsewhere only :meth:`request` stops)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, self._on_alarm)
        self.installed = True
        return True

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        """End the section; raise the stop that arrived during it, if any."""
        self.holding = False
        if self.pending is not None and self.raise_stop and self.installed:
            _cancel_alarm()
            raise Stop(self.pending)

    def end(self) -> None:
        """Leave any held section without raising: the caller is unwinding anyway."""
        self.holding = False
        _cancel_alarm()

    def ignore(self) -> None:
        """During clean-up a second Ctrl-C must not interrupt writing the stats file."""
        if self.installed:
            ignore_stop_signals()

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        first = self.pending is None
        self.request(name)
        if not self.raise_stop:
            return
        if not self.holding:
            raise Stop(name)
        if first and hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, self.max_hold_s)

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        if self.pending is not None and self.raise_stop:
            raise Stop(self.pending)


def _cancel_alarm() -> None:
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)


def ignore_stop_signals() -> None:
    """During cleanup a second Ctrl-C must not interrupt writing the stats file."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, signal.SIG_IGN)  # a held stop's pending alarm, if any ...
    _cancel_alarm()  # ... and cancelled


class ProcessRun:
    """The skeleton every process plugs into: stop signals, counters, stats JSON, clean-up.

    ::

        with ProcessRun("decoder", settings.stats_out) as run:
            pub = run.own(sockets.publisher(...))
            while not run.stopping:
                ...
                run.counts["frames_in"] += 1

    On the way out the reason is set (``ended``, ``stopped by SIGTERM``, ``failed: ...``;
    a process may set its own first), stop signals are ignored, everything :meth:`own` ed is
    closed (newest first; one failing close does not skip the others), and
    ``{"process", "reason", **(stats() or counts)}`` is logged and written to ``stats_out``
    atomically. A :class:`Stop` ends the block quietly; any other exception propagates after
    the clean-up. Off the main thread (a test running a process loop over ``inproc://``)
    no signal is taken: ``run.stop.request()`` stops it.
    """

    def __init__(self, name: str, stats_out: str | None = None, *,
                 stop: StopSignals | None = None,
                 stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.name = name
        self.stats_out = stats_out
        self.stop = stop or StopSignals()
        self.counts: dict[str, Any] = {}
        self.reason = "ended"
        self.stats: dict[str, Any] = {}
        self.stats_fn = stats
        self.started = time.monotonic()
        self.log = logging.getLogger(name)
        self._closers: list[Callable[[], None]] = []

    @property
    def stopping(self) -> bool:
        return self.stop.requested

    def own(self, thing: T, close: Callable[[], None] | None = None) -> T:
        """Close ``thing`` (``thing.close()``, or ``close``) when the run ends; returns it."""
        self._closers.append(close or thing.close)  # type: ignore[attr-defined]
        return thing

    def __enter__(self) -> "ProcessRun":
        self.stop.install()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 _tb: object) -> bool:
        stopped = et is not None and issubclass(et, Stop)
        if stopped:
            self.reason = f"stopped by {ev}"
        elif et is not None and self.reason == "ended":
            self.reason = f"failed: {ev}"
        elif self.stop.requested and self.reason == "ended":
            self.reason = f"stopped by {self.stop.pending}"
        self.stop.end()
        self.stop.ignore()
        for close in reversed(self._closers):
            try:
                close()
            except Exception as exc:  # clean-up goes on; the stats still get written
                self.log.error("clean-up: %s", exc)
        extra = self.stats_fn() if self.stats_fn is not None else self.counts
        self.stats = {"process": self.name, "reason": self.reason, **extra}
        self.log.info("%s: %s", self.reason, self.counts)
        if self.stats_out:
            write_json_atomic(self.stats_out, self.stats)
        return stopped


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
