"""Start the processes of a stack, watch them, restart or stop them, stop them all cleanly.

Each process is ``python -m cortexcast <name> --config FILE`` in its own
session / process group (so the terminal's Ctrl-C reaches only the supervisor,
which then stops the pipeline front to back: daq first, so the decoder and
display drain what is in flight). The OS-specific calls (process groups,
SIGTERM vs CTRL_BREAK, PDEATHSIG vs a Windows job object) are in
:mod:`cortexcast.core.platform`. Logs go to ``<run_dir>/<name>.log``; each process
writes ``<run_dir>/<name>.json`` with its counters on exit.

A process that dies (or hangs: no heartbeat, see
:func:`cortexcast.core.runtime.supervisor_heartbeat`) is handled by its
:class:`RestartPolicy` action: ``restart`` it (the consumers, by default; a
restart appends to the same log after a marker line and writes its stats to
``<name>.<k>.json``), ``end_session`` (the daq and the recorder, by default),
or ``ignore`` it (the session goes on without it). A process that exits 0 by
itself finished its work and ends the session, as before.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from cortexcast.app.registry import process, stop_order
from cortexcast.app.supervised import (ACTIONS, DEFAULT_ON_EXIT, Child, RestartPolicy,
                                       exit_cause)
from cortexcast.core import platform as plat
from cortexcast.core.runtime import HEARTBEAT_ENV

__all__ = ["ACTIONS", "DEFAULT_ON_EXIT", "Child", "RestartPolicy", "Supervisor", "exit_cause"]

#: How often child exits and heartbeats are checked (s): a restart starts within this.
POLL_S = 0.05


def _signal_group(popen: subprocess.Popen, how: str) -> None:
    """Stop (``"stop"``: SIGTERM / CTRL_BREAK) or ``"kill"`` a child's process group."""
    plat.signal_group(popen, "kill" if how == "kill" else "stop")


class Supervisor:
    def __init__(self, config: Path, processes: list[str], run_dir: Path,
                 extra_args: dict[str, list[str]] | None = None,
                 policy: RestartPolicy | None = None,
                 restart_args: dict[str, Callable[[int], list[str]]] | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        """``restart_args[name](k)``: extra flags for the k-th restart (the recorder's new
        ``--out``); ``on_event``: where restart and hang messages go as they happen."""
        self.config = config
        self.processes = processes
        self.run_dir = run_dir
        self.extra_args = extra_args or {}
        self.policy = policy or RestartPolicy()
        self.restart_args = restart_args or {}
        self.on_event = on_event or (lambda text: print(text, flush=True))
        self.children: dict[str, Child] = {}
        self.failed: list[str] = []
        self.t0 = time.monotonic()
        self._hb: socket.socket | None = None
        self._env: dict[str, str] = {}
        self._stop_requested = threading.Event()
        self._job: plat.JobObject | None = None

    def request_stop(self) -> None:
        """End :meth:`watch` from another thread (``cortexcast bench --faults``)."""
        self._stop_requested.set()

    # -- starting -----------------------------------------------------------
    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        # Heartbeats from each process's main loop (cortexcast.core.runtime.supervisor_heartbeat).
        self._hb = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._hb.bind(("127.0.0.1", 0))
        self._hb.setblocking(False)
        # Linux: the child asks the kernel for SIGTERM when we die (die_with_parent);
        # Windows: the children go in a job that Windows kills when we die.
        self._job = self._job or self._new_job()
        self._env = dict(os.environ, PYTHONUNBUFFERED="1", CORTEXCAST_SUPERVISOR_PID=str(os.getpid()),
                         **{HEARTBEAT_ENV: "127.0.0.1:%d" % self._hb.getsockname()[1]})
        # One BLAS/OpenMP thread per process: the processes already share the cores, and a
        # threaded BLAS call in one of them stalls the others (p99 latency 4 -> 21 ms seen).
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            self._env.setdefault(var, "1")
        for name in self.processes:
            self._spawn(name)

    def _spawn(self, name: str) -> Child:
        """Start ``name`` (again): a restart appends to its log and gets its own stats file."""
        old = self.children.get(name)
        k = 0 if old is None else old.incarnation + 1
        stats = self.run_dir / (f"{name}.json" if k == 0 else f"{name}.{k}.json")
        stats.unlink(missing_ok=True)
        cmd = process(name).argv(self.config, stats) + self.extra_args.get(name, [])
        if k and name in self.restart_args:
            cmd += self.restart_args[name](k)
        log_path = self.run_dir / f"{name}.log"
        if not k:
            log_path.write_text("")
        # Append mode for every incarnation: a killed process's helpers (its correlation
        # worker, multiprocessing's resource tracker) may still write to their copy of the
        # fd, and without O_APPEND they would overwrite the restart marker and the new log.
        with log_path.open("a") as log:
            if k:
                log.write(f"\n===== cortexcast supervisor: restart {k} of {name} at "
                          f"{time.strftime('%H:%M:%S')} after {old.restarts[-1]['cause']} "
                          f"=====\n")
                log.flush()
            popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env,
                                     **plat.new_group_kwargs())
        if self._job is not None:
            try:
                self._job.assign(popen.pid)
            except OSError as exc:
                self.on_event(f"!! {name}: not tied to the supervisor's life ({exc}); "
                              "if the supervisor is killed, end it in the Task Manager")
        now = time.monotonic()
        if old is None:
            child = Child(name, popen, log_path, stats, stats_paths=[stats], spawned=now)
            self.children[name] = child
            return child
        old.cpu_prev, old.cpu_s = old.cpu_s, old.cpu_s
        old.popen, old.stats_path, old.incarnation, old.spawned = popen, stats, k, now
        old.stats_paths.append(stats)
        old.last_beat, old.restart_at, old.hang_reported, old.ended = None, None, False, None
        event = old.restarts[-1]
        event["restarted_after_s"] = round(now - self.t0 - event["at_s"], 3)
        if not old.beats:  # no heartbeat to wait for: up as far as we can tell
            event["down_s"], event["up_by"] = event["restarted_after_s"], "spawn"
        return old

    def _new_job(self) -> plat.JobObject | None:
        try:
            return plat.child_job()
        except OSError as exc:
            self.on_event(f"!! no job object ({exc}): if the supervisor is killed, its "
                          "processes keep running")
            return None

    # -- watching -----------------------------------------------------------
    def dead(self) -> list[str]:
        """Names of processes that have exited."""
        return [n for n, c in self.children.items() if c.popen.poll() is not None]

    def sample(self) -> None:
        for c in self.children.values():
            if c.popen.poll() is None:
                c.sample()

    def _read_heartbeats(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for heartbeats (the watch loop's only sleep); note them."""
        if self._hb is None:
            time.sleep(timeout_s)
            return
        if not select.select([self._hb], [], [], max(0.0, timeout_s))[0]:
            return
        by_pid = {c.popen.pid: c for c in self.children.values()}
        while True:
            try:
                data = self._hb.recv(256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. Windows' ICMP-port-unreachable echo: nothing to read
                return
            parts = data.decode(errors="replace").split()
            if len(parts) < 2 or parts[0] != "cchb" or not parts[1].isdigit():
                continue
            child = by_pid.get(int(parts[1]))
            if child is None:
                continue
            now = time.monotonic()
            if child.last_beat is None and child.restarts and "down_s" not in child.restarts[-1]:
                child.restarts[-1]["down_s"] = round(now - self.t0 - child.restarts[-1]["at_s"], 3)
                child.restarts[-1]["up_by"] = "heartbeat"
                self.on_event(f"-- {child.name} is back (first heartbeat "
                              f"{child.restarts[-1]['down_s']:.2f} s after it went down)")
            child.last_beat, child.beats = now, True

    def _check(self, now: float) -> str | None:
        """Handle exits, hangs and due restarts; a reason when the session must end."""
        for name, child in self.children.items():
            if child.dead:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._spawn(name)
                continue
            code = child.popen.poll()
            if code is not None:
                if code == 0:  # it finished its work (the source ended, a duration ran out)
                    return f"process exited: {name} (exit 0)"
                reason = self._on_death(child, exit_cause(code), now)
            elif self._hung(child, now):
                silent = now - (child.last_beat or now)
                self.on_event(f"!! {name} hung: no heartbeat for {silent:.1f} s; killing it")
                _signal_group(child.popen, "kill")
                try:
                    child.popen.wait(5.0)
                except subprocess.TimeoutExpired:
                    pass
                reason = self._on_death(child, f"hung (no heartbeat for {silent:.1f} s)", now)
            else:
                continue
            if reason is not None:
                return reason
        if all(c.dead for c in self.children.values()):
            return "every process has exited"
        return None

    def _hung(self, child: Child, now: float) -> bool:
        """Silent past the limit after its first heartbeat. Only processes that would be
        restarted are killed for it: a daq silent between acquisitions or a busy recorder
        would end the session on a false alarm, so for them a hang is reported only."""
        limit = self.policy.hang_after_s
        if not limit or child.last_beat is None or now - child.last_beat <= limit:
            return False
        if self.policy.action(child.name) == "restart":
            return True
        if not child.hang_reported:
            child.hang_reported = True
            self.on_event(f"!! {child.name} has sent no heartbeat for {now - child.last_beat:.1f}"
                          f" s (hung?); its on_exit is {self.policy.action(child.name)!r}, so "
                          "it is left running")
        return False

    def _on_death(self, child: Child, cause: str, now: float) -> str | None:
        name, action = child.name, self.policy.action(child.name)
        child.sample()
        child.ended = now
        event: dict[str, Any] = {"incarnation": child.incarnation, "cause": cause,
                                 "at_s": round(now - self.t0, 3), "action": action}
        child.restarts.append(event)
        loud = ("" if name != "record" else " THE RECORDING STOPS HERE: what comes now is lost"
                + (" until the restarted recorder writes its new file" if action == "restart"
                   else "") + ".")
        tail = child.log_tail(8)
        if action == "end_session":
            self.failed.append(name)
            self.on_event(f"!! {name} died ({cause}); on_exit 'end_session': stopping the "
                          f"session.{loud}")
            return f"process exited: {name} ({cause})"
        if action == "ignore":
            self.failed.append(name)
            child.dead = True
            self.on_event(f"!! {name} died ({cause}); on_exit 'ignore': the session goes on "
                          f"without it.{loud}")
            return None
        recent = [e for e in child.restarts[:-1]
                  if e.get("action") == "restart" and now - self.t0 - e["at_s"] < self.policy.window_s]
        if len(recent) >= self.policy.limit:
            self.failed.append(name)
            event["action"] = "gave up"
            self.on_event(f"!! {name} died ({cause}); last lines of its log:\n{tail}")
            return (f"restart limit reached: {name} died {len(recent) + 1} times in "
                    f"{self.policy.window_s:g} s (last: {cause})")
        delay = 0.0 if not recent else self.policy.backoff_s * 2 ** (len(recent) - 1)
        child.restart_at = now + delay
        self.on_event(f"!! {name} died ({cause}); restarting it"
                      f"{f' in {delay:.1f} s' if delay else ''} (restart {len(recent) + 1} of "
                      f"at most {self.policy.limit} per {self.policy.window_s:g} s; log "
                      f"{child.log_path}).{loud}")
        return None

    def watch(self, until: float | None, tick: Callable[[], None], interval_s: float = 1.0) -> str:
        """Run until a deadline, Ctrl-C, or a death that ends the session. Returns why it stopped.

        Exits and heartbeats are checked every :data:`POLL_S` (waiting on the heartbeat
        socket, so an idle supervisor sleeps); ``tick`` (the status line) and resource
        sampling run every ``interval_s``.
        """
        next_tick = time.monotonic() + interval_s
        try:
            while True:
                now = time.monotonic()
                reason = self._check(now)
                if reason is not None:
                    return reason
                if until is not None and now >= until:
                    return "duration reached"
                if self._stop_requested.is_set():
                    return "stop requested"
                if now >= next_tick:
                    self.sample()
                    tick()
                    next_tick = max(next_tick + interval_s, now)
                wait = POLL_S if until is None else min(POLL_S, until - time.monotonic())
                self._read_heartbeats(wait)
        except KeyboardInterrupt as exc:
            return f"interrupted ({str(exc) or 'Ctrl-C'})"

    # -- stopping -----------------------------------------------------------
    def stop(self, timeout_s: float = 10.0, drain_s: float = 0.5) -> None:
        """Stop front to back, waiting for each; kill what does not exit in time.

        POSIX: SIGTERM, then SIGKILL, to each child's process group, so helpers it spawned
        stop too. Windows: CTRL_BREAK_EVENT to its group (SIGBREAK: the same clean stop),
        then TerminateProcess; closing the job at the end kills any helper left.
        A process that exits with an error (not 0, not by our SIGTERM) counts as failed.
        """
        sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan
        try:
            for i, name in enumerate(stop_order(list(self.children))):
                child = self.children[name]
                if child.dead:
                    continue
                child.sample()
                if i > 0:
                    time.sleep(drain_s)  # let in-flight messages reach this consumer
                if child.popen.poll() is None:
                    _signal_group(child.popen, "stop")
                    try:
                        child.popen.wait(timeout_s)
                    except subprocess.TimeoutExpired:
                        _signal_group(child.popen, "kill")
                        child.popen.wait()
                        self.failed.append(name)
                code = child.popen.returncode
                if code not in (0, -signal.SIGTERM) and name not in self.failed \
                        and child.restart_at is None:  # (one waiting for its restart is not)
                    self.failed.append(name)
                child.ended = child.ended or time.monotonic()
        finally:
            signal.signal(signal.SIGINT, sigint)
            if self._hb is not None:
                self._hb.close()
                self._hb = None
            if self._job is not None:  # every child has exited; this ends stray helpers
                self._job.close()
                self._job = None

    def resources(self) -> dict[str, dict[str, Any]]:
        """Per process: CPU, peak memory, and its memory over time (``rss_mb``: [s since
        start, MB] pairs of the current incarnation, at most :data:`RSS_POINTS`)."""
        return {n: {"cpu_s": c.cpu_s, "peak_rss_mb": c.peak_rss / 2**20,
                    "cpu_percent": 100 * c.cpu_s / max(1e-9, (c.ended or time.monotonic()) - c.started),
                    "rss_mb": c.rss_series()}
                for n, c in self.children.items()}

    def restarts(self) -> dict[str, dict[str, Any]]:
        """Per process that died: how often it was restarted, why, and how long it was down."""
        out: dict[str, dict[str, Any]] = {}
        for n, c in self.children.items():
            if not c.restarts:
                continue
            downs = [e["down_s"] for e in c.restarts if e.get("down_s") is not None]
            out[n] = {"restarts": sum(1 for e in c.restarts if "restarted_after_s" in e),
                      "down_s": round(sum(downs), 3), "events": c.restarts,
                      "heartbeats": c.beats}
        return out
