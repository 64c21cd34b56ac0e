"""What the supervisor keeps per process (:class:`Child`) and its :class:`RestartPolicy`."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

#: What the supervisor does when a process dies or hangs (``[stack] on_exit``).
ACTIONS = ("restart", "end_session", "ignore")
#: The daq is the source and the recorder holds the data: their death ends the session.
DEFAULT_ON_EXIT = {"daq": "end_session", "record": "end_session"}


@dataclass(frozen=True)
class RestartPolicy:
    on_exit: dict[str, str] = field(default_factory=dict)
    """Per process: ``restart`` | ``end_session`` | ``ignore``; unnamed ones: DEFAULT_ON_EXIT,
    else ``restart``."""
    limit: int = 5
    """At most this many restarts of one process per ``window_s``; one more ends the session."""
    window_s: float = 60.0
    backoff_s: float = 0.2
    """Delay before the 2nd restart within the window, doubling after (the 1st is at once)."""
    hang_after_s: float = 3.0
    """A process silent this long after its first heartbeat is hung (0: never)."""

    def action(self, name: str) -> str:
        return self.on_exit.get(name, DEFAULT_ON_EXIT.get(name, "restart"))


#: Windows' NTSTATUS exit codes a process may end with (Popen gives them unsigned).
WINDOWS_EXIT = {0xC000013A: "ended by Ctrl-C/Ctrl-Break", 0xC0000005: "access violation",
                0xC00000FD: "stack overflow", 0xC0000409: "stack buffer overrun"}


def exit_cause(code: int) -> str:
    """``exit 3`` or ``killed by SIGKILL`` (POSIX), ``exit 0xC0000005 (access violation)``
    (Windows) for a Popen return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    if code >= 0x80000000:  # an NTSTATUS (Windows): hex is how it is looked up
        name = WINDOWS_EXIT.get(code)
        return f"exit 0x{code:08X}" + (f" ({name})" if name else "")
    return f"exit {code}"


#: Memory samples kept per process: between this many and twice as many.
RSS_POINTS = 1000


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log_path: Path
    stats_path: Path
    peak_rss: int = 0
    cpu_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    incarnation: int = 0
    """0 for the first start, k for its k-th restart."""
    stats_paths: list[Path] = field(default_factory=list)
    """The stats file of every incarnation, oldest first (a killed one may have none)."""
    spawned: float = field(default_factory=time.monotonic)
    last_beat: float | None = None
    beats: bool = False
    """Whether any incarnation ever sent a heartbeat (the display does not)."""
    restarts: list[dict[str, Any]] = field(default_factory=list)
    """One per death handled: cause, when, whether restarted, how long it was down (s)."""
    restart_at: float | None = None
    dead: bool = False
    """Died and left dead (``ignore``); not waited for or restarted."""
    hang_reported: bool = False
    cpu_prev: float = 0.0
    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic s, bytes) of this incarnation; thinned to every other one when full."""

    def sample(self) -> None:
        """Update CPU time and peak memory while the process lives."""
        try:
            p = psutil.Process(self.popen.pid)
            procs = [p, *p.children(recursive=True)]  # e.g. the display's correlation worker
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        cpu, rss, hwm = 0.0, 0, 0
        for q in procs:
            try:
                t = q.cpu_times()
                cpu += t.user + t.system
                rss += q.memory_info().rss
                hwm += _vm_hwm(q.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.cpu_s = max(self.cpu_s, self.cpu_prev + cpu)
        self.peak_rss = max(self.peak_rss, rss, hwm)
        if self.rss_samples and self.rss_samples[0][0] < self.spawned:  # a new incarnation
            self.rss_samples.clear()
        self.rss_samples.append((time.monotonic(), rss))
        if len(self.rss_samples) > 2 * RSS_POINTS:  # an hour-long soak stays small
            del self.rss_samples[1::2]

    def rss_series(self) -> list[list[float]]:
        """Memory of this incarnation over time: [seconds since it started, MB] pairs."""
        return [[round(t - self.spawned, 2), round(rss / 2**20, 2)]
                for t, rss in self.rss_samples]

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stats(self) -> dict[str, Any] | None:
        """The latest incarnation's stats (None if it wrote none, e.g. killed)."""
        return _read_json(self.stats_path)

    def all_stats(self) -> list[dict[str, Any] | None]:
        """Every incarnation's stats, oldest first."""
        return [_read_json(p) for p in self.stats_paths]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _vm_hwm(pid: int) -> int:
    """Peak resident memory (bytes) from /proc, 0 where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
