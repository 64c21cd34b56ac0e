"""What every process shares: stop signals, the process skeleton, stats files, logging."""

from __future__ import annotations

import _thread
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from cortexcast.core import platform as plat


T = TypeVar("T")


class Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT so loops unwind and clean up.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it.
    """


class StopSignals:
    """SIGTERM/SIGINT (and SIGBREAK on Windows) for one process run, the one stop handling
    every process uses.

    A signal is remembered (:attr:`requested`, also settable from any thread with
    :meth:`request`) and, with ``raise_stop`` (the default), raised as :class:`Stop` in the
    main thread wherever it is, so blocking calls unwind at once. Processes whose loops poll
    (the recorder) pass ``raise_stop=False`` and check :attr:`requested` instead.

    The daq publishes each frame's ``sync`` just before the frame; a stop landing between
    the two would leave a recording with a sync whose frame never went out. While
    :meth:`hold` is on, a stop is remembered and raised when the section ends
    (:meth:`release`), or after ``max_hold_s`` if the source never delivers the frame, so
    a stop is never lost or delayed for long.

    The deadline is the same on every OS (SIGALRM does not exist on Windows): a watchdog
    thread, started at the first :meth:`hold`, which the signal handler arms and which at
    the deadline wakes the main thread with the stop's own signal
    (:func:`cortexcast.core.platform.wake_main_thread`); the handler then raises. The
    handler takes no lock and starts no thread (it may interrupt the main thread anywhere):
    it only sets attributes and releases a raw lock, which never blocks.
    """

    def __init__(self, max_hold_s: float = 0.5, *, raise_stop: bool = True) -> None:
        self.max_hold_s = max_hold_s
        self.raise_stop = raise_stop
        self.holding = False
        self.pending: str | None = None
        self.installed = False
        self._requested = threading.Event()
        self._lock = threading.Lock()  # watchdog vs main-thread code, never the handler
        self._deadline: float | None = None  # set by the handler, cleared under _lock
        self._signum = int(signal.SIGTERM)
        self._armed = _thread.allocate_lock()  # released = armed: the handler's doorbell
        self._armed.acquire()
        self._watchdog: threading.Thread | None = None
        self._closed = False
        self._wake_sent = False
        self.wakes: list[str] = []  # how each deadline woke the main thread (for tests)

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def request(self, reason: str = "request") -> None:
        """Ask the run to stop (any thread; never raises): loops see :attr:`requested`."""
        if self.pending is None:
            self.pending = reason
        self._requested.set()

    def install(self) -> bool:
        """Take the stop signals (main thread only; elsewhere only :meth:`request` stops)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in plat.stop_signals():
            signal.signal(sig, self._on_signal)
        self.installed = True
        return True

    def hold(self) -> None:
        if self._watchdog is None and self.installed and self.raise_stop:
            self._watchdog = threading.Thread(target=self._watch, name="held-stop-deadline",
                                              daemon=True)
            self._watchdog.start()
        self.holding = True

    def release(self) -> None:
        """End the section; raise the stop that arrived during it, if any."""
        self._cancel_deadline()  # (while still holding: a wake-up racing it raises the same)
        self.holding = False
        if self.pending is not None and self.raise_stop and self.installed:
            raise Stop(self.pending)

    def end(self) -> None:
        """Leave any held section without raising: the caller is unwinding anyway."""
        self._cancel_deadline()
        self.holding = False

    def ignore(self) -> None:
        """During clean-up a second Ctrl-C must not interrupt writing the stats file."""
        self._cancel_deadline()
        self._closed = True  # the watchdog ends
        _ring(self._armed)
        if self.installed:
            ignore_stop_signals()

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self._wake_sent:  # the hold deadline's own wake-up (or a signal coinciding)
            self._wake_sent = False
            if self.holding and self.raise_stop:
                raise Stop(self.pending or name)
            return  # the section ended first: its release raised the stop already
        first = self.pending is None
        self.request(name)
        if not self.raise_stop:
            return
        if not self.holding:
            raise Stop(name)
        if first:
            self._signum = signum
            self._deadline = time.monotonic() + self.max_hold_s
            _ring(self._armed)

    def _watch(self) -> None:
        """The watchdog: sleeps until armed, then until the deadline or its cancelling."""
        while True:
            self._armed.acquire()
            if self._closed:
                return
            while (deadline := self._deadline) is not None:
                left = deadline - time.monotonic()
                if left > 0:
                    time.sleep(min(left, 0.02))
                    continue
                with self._lock:
                    if self._deadline == deadline and self.holding:
                        self._deadline = None
                        self._wake_sent = True
                        self.wakes.append(plat.wake_main_thread(self._signum))
                break

    def _cancel_deadline(self) -> None:
        """After this returns no wake-up comes (one already sent is swallowed if the
        section has ended by the time it runs: see :meth:`_on_signal`)."""
        with self._lock:
            self._deadline = None


def _ring(lock: Any) -> None:
    """Release a raw lock if held (never blocks: safe in a signal handler)."""
    try:
        lock.release()
    except RuntimeError:  # already released: already armed
        pass


def ignore_stop_signals() -> None:
    """During cleanup a second Ctrl-C must not interrupt writing the stats file."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in plat.stop_signals():
        signal.signal(sig, signal.SIG_IGN)


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
        """Whether a stop was asked for. Every process loop asks this once per turn, so it
        also sends the supervisor's heartbeat (rate-limited; nothing when unsupervised)."""
        supervisor_heartbeat(self.name)
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


#: Set by the supervisor (``host:port``, UDP): where a supervised process sends heartbeats.
HEARTBEAT_ENV = "CORTEXCAST_SUPERVISOR_HEARTBEAT"
#: At most one heartbeat per this many seconds (the supervisor's hang limit is several).
HEARTBEAT_PERIOD_S = 0.25


class _Heartbeat:
    """Tiny UDP datagrams (``cchb <pid> <name>``) to the supervisor, from the main loop.

    Sent from the loop itself, never from a thread of its own, so a main loop that is
    stuck (deadlock, SIGSTOP, an endless computation) stops the heartbeat and the
    supervisor notices. UDP: nothing to connect, never blocks, works on Windows too.
    """

    def __init__(self, address: str | None) -> None:
        self.target: tuple[str, int] | None = None
        self.sock: socket.socket | None = None
        self.last = float("-inf")
        if address:
            host, _, port = address.rpartition(":")
            try:
                self.target = (host or "127.0.0.1", int(port))
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.sock.setblocking(False)
            except (ValueError, OSError):
                self.target = self.sock = None

    def beat(self, name: str) -> None:
        if self.sock is None:
            return
        now = time.monotonic()
        if now - self.last < HEARTBEAT_PERIOD_S:
            return
        self.last = now
        try:
            self.sock.sendto(f"cchb {os.getpid()} {name}".encode(), self.target)  # type: ignore[arg-type]
        except OSError:  # a full buffer or a gone supervisor: the next beat tries again
            pass


_heartbeat: _Heartbeat | None = None


def supervisor_heartbeat(name: str) -> None:
    """Tell the supervisor (if one started us) that this process's main loop turns.

    :class:`ProcessRun` calls it from :attr:`ProcessRun.stopping`; a process without a
    ProcessRun loop (the display's asyncio loop) may call it from its own loop. Cheap:
    one clock read unless a beat is due. The supervisor starts its hang clock only at a
    process's first beat, so a slow start-up (loading a model) is never taken for a hang.
    """
    global _heartbeat
    if _heartbeat is None:
        _heartbeat = _Heartbeat(os.environ.get(HEARTBEAT_ENV))
    _heartbeat.beat(name)


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

    Children run in their own sessions/process groups (so the terminal's Ctrl-C reaches
    only the supervisor); this keeps a killed supervisor from leaving processes that hold
    the rig's ports. On Windows the supervisor's job object does it instead
    (:func:`cortexcast.core.platform.die_with_parent`).
    """
    plat.die_with_parent(os.environ.get("CORTEXCAST_SUPERVISOR_PID"))
