"""`cortexcast bench --faults`: kill -9 each consumer of a recording stack, measure recovery.

Runs the simulated stack as ``demo --record --headless`` does, waits until every process
is up, then kills (SIGKILL, the process itself, as a crash would) each consumer in
turn, waiting for it to come back before the next. Per victim it reports:

* restart time: kill -> the new process's first heartbeat (target < 1 s); a process
  that sends no heartbeat (the display) only says when it was started again;
* frames the decoder missed while down: frames recorded between the kill and the
  decoder's first reconstruction after it (read from the recording);

and for the session: frames lost from the recording (daq published - recorded; target 0,
the daq and the recorder live throughout). The daq and the recorder are not killed: by
default their death ends the session (``[stack] on_exit``), which is what it is for.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from cortexcast.app.supervisor import Supervisor

TARGET_RESTART_S = 1.0
VICTIMS = ("decoder", "display")
SETTLE_S = 2.0
"""Steady running before the first kill and between kills (s)."""
UP_TIMEOUT_S = 30.0


def _wait(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class Injector(threading.Thread):
    """Kills each victim in turn once the stack is up; records when it did what."""

    def __init__(self, sup: Supervisor, victims: tuple[str, ...]) -> None:
        super().__init__(name="fault-injector", daemon=True)
        self.sup, self.victims = sup, victims
        self.results: list[dict[str, Any]] = []
        self.error: str | None = None

    def _beating(self, name: str) -> bool:
        c = self.sup.children[name]
        return c.last_beat is not None or (not c.beats and c.popen.poll() is None)

    def run(self) -> None:
        try:
            heartbeaters = ("daq", "decoder", "record")
            if not _wait(lambda: all(self.sup.children[n].last_beat is not None
                                     for n in heartbeaters if n in self.sup.children),
                         UP_TIMEOUT_S):
                self.error = "the stack did not come up (no heartbeats)"
                return
            time.sleep(SETTLE_S)
            for name in self.victims:
                self.results.append(self._kill(name))
                time.sleep(SETTLE_S)
        except Exception as exc:  # reported in the JSON, the session still stops cleanly
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.sup.request_stop()

    def _kill(self, name: str) -> dict[str, Any]:
        child = self.sup.children[name]
        k, beats, pid = child.incarnation, child.beats, child.popen.pid
        t_kill = time.monotonic()
        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        back = _wait(lambda: child.incarnation > k and (
            child.last_beat is not None if beats else True), UP_TIMEOUT_S)
        t_up = (child.last_beat if beats else child.spawned) if back else None
        return {"process": name, "pid_killed": pid, "t_kill": t_kill, "t_up": t_up,
                "restart_s": None if t_up is None else t_up - t_kill,
                "measured_to": "first heartbeat" if beats else
                               "respawn (this process sends no heartbeat)"}


def _decoder_gap(recording: Path, t_kill: float) -> dict[str, Any]:
    """Frames recorded after ``t_kill`` before the decoder's next reconstruction."""
    from cortexcast.stream.recording import RecordingReader

    with RecordingReader(recording) as rec:
        t = rec.index["t_recv_ns"]
        frames = t[rec.select(["frames"])]
        recons = t[rec.select(["reconstruction"])]
    t0 = int(t_kill * 1e9)
    after = recons[recons > t0]
    if not len(after):
        return {"frames_missed": None, "gap_s": None}
    missed = int(np.count_nonzero((frames > t0) & (frames < after[0])))
    return {"frames_missed": missed, "gap_s": (int(after[0]) - t0) / 1e9}


def run_fault_bench(run_dir: Path, model: str = "bundled",
                    victims: tuple[str, ...] = VICTIMS) -> dict[str, Any]:
    from cortexcast.app.ports import free_ports
    from cortexcast.app.launcher import run_stack, write_sim_config
    from cortexcast.stream.recording import RecordingReader

    http, daq, dec = free_ports(3)
    recording = run_dir.resolve() / "session.ccr"
    recording.unlink(missing_ok=True)
    config = write_sim_config(run_dir, model=model, headless=True, port=http, daq_port=daq,
                              decoder_port=dec, record=str(recording))
    holder: dict[str, Injector] = {}

    def start(sup: Supervisor) -> None:
        holder["inj"] = Injector(sup, victims)
        holder["inj"].start()

    code, summary = run_stack(config, None, run_dir, on_start=start)
    inj = holder.get("inj")
    if inj is not None:
        inj.join(5.0)
    with RecordingReader(recording) as rec:
        recorded = rec.counts()
    acquired = summary.get("frames_acquired")
    per = []
    for r in (inj.results if inj else []):
        gap = (_decoder_gap(recording, r["t_kill"])
               if r["t_up"] is not None and r["process"] == "decoder" else {})
        per.append({"process": r["process"], "restart_s": r["restart_s"],
                    "restart_measured_to": r["measured_to"],
                    "met": r["restart_s"] is not None and r["restart_s"] < TARGET_RESTART_S,
                    "decoder_frames_missed": gap.get("frames_missed"),
                    "decoder_gap_s": gap.get("gap_s")})
    lost = None if acquired is None else acquired - recorded.get("frames", 0)
    return {
        "command": f"cortexcast bench --faults --model {model}",
        "exit_code": code, "reason": summary["reason"], "injector_error": inj.error if inj else
        "not started", "killed": per,
        "recording": {"path": str(recording), "frames_published": acquired,
                      "frames_recorded": recorded.get("frames"), "frames_lost": lost,
                      "messages": recorded},
        "not_killed": {"daq": "on_exit 'end_session' (default): killing the source ends the "
                              "session by design; nothing to measure",
                       "record": "on_exit 'end_session' (default): a dead recorder is data "
                                 "loss, so the session ends loudly"},
        "targets": {"restart_s": TARGET_RESTART_S, "frames_lost": 0},
        "restarts": summary.get("restarts"), "failed": summary.get("failed"),
    }


def print_fault_report(report: dict[str, Any]) -> None:
    print("\n== cortexcast bench --faults ==")
    for r in report["killed"]:
        rs = r["restart_s"]
        print(f"kill -9 {r['process']:<8}: back in "
              f"{'never' if rs is None else f'{rs:.3f} s'} (to {r['restart_measured_to']}; "
              f"target < {TARGET_RESTART_S:g} s: {'MET' if r['met'] else 'NOT MET'})"
              + ("" if r["process"] != "decoder" or r["decoder_gap_s"] is None else
                 f"; decoder missed {r['decoder_frames_missed']} frame(s) while down "
                 f"(no reconstruction for {r['decoder_gap_s']:.3f} s)"))
    rec = report["recording"]
    print(f"recording: daq published {rec['frames_published']} frames, recorded "
          f"{rec['frames_recorded']}: lost {rec['frames_lost']} (target 0: "
          f"{'MET' if rec['frames_lost'] == 0 else 'NOT MET'})")
    for name, why in report["not_killed"].items():
        print(f"not killed: {name}: {why}")
    if report["injector_error"]:
        print(f"!! fault injector: {report['injector_error']}")
