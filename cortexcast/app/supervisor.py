"""Start the processes of a stack, watch them, stop them all cleanly.

Each process is ``python -m cortexcast <name> --config FILE`` in its own
session (so the terminal's Ctrl-C reaches only the supervisor, which then
stops the pipeline front to back: daq first, so the decoder and display
drain what is in flight). If any process dies, the others are stopped and
the exit code says so. Logs go to ``<run_dir>/<name>.log``; each process
writes ``<run_dir>/<name>.json`` with its counters on exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from cortexcast.app.registry import process, stop_order


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
        self.cpu_s = max(self.cpu_s, cpu)
        self.peak_rss = max(self.peak_rss, rss, hwm)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stats(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.stats_path.read_text())
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


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)  # the child leads its own session/group
    except ProcessLookupError:
        pass


class Supervisor:
    def __init__(self, config: Path, processes: list[str], run_dir: Path,
                 extra_args: dict[str, list[str]] | None = None) -> None:
        self.config = config
        self.processes = processes
        self.run_dir = run_dir
        self.extra_args = extra_args or {}
        self.children: dict[str, Child] = {}
        self.failed: list[str] = []

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # The child asks the kernel for SIGTERM when we die (cortexcast.core.runtime.die_with_parent).
        env = dict(os.environ, PYTHONUNBUFFERED="1", CORTEXCAST_SUPERVISOR_PID=str(os.getpid()))
        # One BLAS/OpenMP thread per process: the processes already share the cores, and a
        # threaded BLAS call in one of them stalls the others (p99 latency 4 -> 21 ms seen).
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        for name in self.processes:
            stats = self.run_dir / f"{name}.json"
            stats.unlink(missing_ok=True)
            cmd = process(name).argv(self.config, stats) + self.extra_args.get(name, [])
            log_path = self.run_dir / f"{name}.log"
            with log_path.open("w") as log:
                popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
            self.children[name] = Child(name, popen, log_path, stats)

    def dead(self) -> list[str]:
        """Names of processes that have exited."""
        return [n for n, c in self.children.items() if c.popen.poll() is not None]

    def sample(self) -> None:
        for c in self.children.values():
            if c.popen.poll() is None:
                c.sample()

    def watch(self, until: float | None, tick: Callable[[], None], interval_s: float = 1.0) -> str:
        """Run until a deadline, Ctrl-C, or a process exiting. Returns why it stopped."""
        try:
            while True:
                self.sample()
                if self.dead():
                    for name in self.dead():
                        code = self.children[name].popen.returncode
                        if code != 0 and name not in self.failed:
                            self.failed.append(name)
                    return "process exited: " + ", ".join(
                        f"{n} (exit {self.children[n].popen.returncode})" for n in self.dead())
                if until is not None and time.monotonic() >= until:
                    return "duration reached"
                tick()
                time.sleep(interval_s if until is None else
                           max(0.0, min(interval_s, until - time.monotonic())))
        except KeyboardInterrupt as exc:
            return f"interrupted ({str(exc) or 'Ctrl-C'})"

    def stop(self, timeout_s: float = 10.0, drain_s: float = 0.5) -> None:
        """SIGTERM front to back, waiting for each; SIGKILL what does not exit in time.

        Signals go to each child's process group, so helpers it spawned stop too.
        A process that exits with an error (not 0, not by our SIGTERM) counts as failed.
        """
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan
        try:
            for i, name in enumerate(stop_order(list(self.children))):
                child = self.children[name]
                child.sample()
                if i > 0:
                    time.sleep(drain_s)  # let in-flight messages reach this consumer
                if child.popen.poll() is None:
                    _signal_group(child.popen, signal.SIGTERM)
                    try:
                        child.popen.wait(timeout_s)
                    except subprocess.TimeoutExpired:
                        _signal_group(child.popen, signal.SIGKILL)
                        child.popen.wait()
                        self.failed.append(name)
                code = child.popen.returncode
                if code not in (0, -signal.SIGTERM) and name not in self.failed:
                    self.failed.append(name)
                child.ended = child.ended or time.monotonic()
        finally:
            signal.signal(signal.SIGINT, old)

    def resources(self) -> dict[str, dict[str, float]]:
        return {n: {"cpu_s": c.cpu_s, "peak_rss_mb": c.peak_rss / 2**20,
                    "cpu_percent": 100 * c.cpu_s / max(1e-9, (c.ended or time.monotonic()) - c.started)}
                for n, c in self.children.items()}
