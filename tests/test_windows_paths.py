"""The Windows paths of the live processes, proven on Linux (no Windows machine in CI).

The daq beside the microscope runs on Windows (ScanImage, NI-DAQmx). What differs there is
in cortexcast/core/platform.py, each choice a function of ``os_name``; here:

* the Windows branches are the ones taken for ``os_name="nt"`` (process-group flags,
  CTRL_BREAK stop, TerminateProcess, the kill-on-close job object with a fake kernel32,
  SIGBREAK, no SIGHUP, drive-letter paths in a config);
* the held stop and the daq's stop handling work with every POSIX-only attribute
  (SIGALRM, setitimer, pthread_kill, killpg, setsid, ...) removed from this process;
* a supervisor and a short ``up`` run in "Windows mode": ``platform.OS_NAME = "nt"``, the
  POSIX-only attributes removed, and a Popen shim that refuses POSIX keywords, takes
  ``creationflags`` and turns CTRL_BREAK_EVENT into the SIGTERM a Linux child understands
  (the children themselves are real Linux processes: they cannot be monkeypatched).
"""

from __future__ import annotations

import _thread
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import cortexcast.core.platform as plat
from cortexcast.core.config import load_settings, path_field, resolve_paths
from cortexcast.core.events import ImagingFrame, SyncEvent
from cortexcast.core.runtime import Stop, StopSignals

POSIX_ONLY = {os: ("killpg", "getpgid", "setsid", "setpgrp", "getuid"),
              signal: ("SIGALRM", "setitimer", "ITIMER_REAL", "alarm", "pthread_kill",
                       "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")}


@pytest.fixture
def no_posix(monkeypatch):
    """This process without the POSIX-only calls (as on Windows); signal handlers restored."""
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for module, names in POSIX_ONLY.items():
        for name in names:
            monkeypatch.delattr(module, name, raising=False)
    yield
    for s, h in old.items():
        signal.signal(s, h)


@pytest.fixture
def windows_mode(monkeypatch, no_posix):
    """The supervisor side takes its Windows branches: OS_NAME "nt", a fake job object,
    and a Popen that behaves like Windows' (no start_new_session; creationflags;
    CTRL_BREAK_EVENT delivered, here as the SIGTERM a Linux child takes)."""
    seen: dict[str, list[Any]] = {"creationflags": [], "signals": [], "jobs": []}
    real_popen = subprocess.Popen

    class WindowsLikePopen(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, args: Any, **kw: Any) -> None:
            for posix_only in ("start_new_session", "preexec_fn", "process_group"):
                assert posix_only not in kw, f"{posix_only}= on Windows"
            flags = kw.pop("creationflags", 0)
            seen["creationflags"].append(flags)
            super().__init__(args, start_new_session=bool(flags & plat.CREATE_NEW_PROCESS_GROUP),
                             **kw)

        def send_signal(self, sig: int) -> None:
            seen["signals"].append(sig)
            assert sig == plat.CTRL_BREAK_EVENT, "on Windows only CTRL_BREAK reaches a group"
            super().send_signal(signal.SIGTERM)

    class FakeJob:
        def __init__(self) -> None:
            self.pids: list[int] = []
            self.closed = False
            seen["jobs"].append(self)

        def assign(self, pid: int) -> None:
            self.pids.append(pid)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(plat, "OS_NAME", "nt")
    monkeypatch.setattr(plat, "JobObject", FakeJob)
    monkeypatch.setattr(subprocess, "Popen", WindowsLikePopen)
    return seen


# -- paths in a config ------------------------------------------------------------

@dataclass(frozen=True)
class _Inner:
    clips: str = path_field("")


@dataclass(frozen=True)
class _Paths:
    rois: str = path_field("")
    model: str = path_field("")
    out: str = path_field("")
    name: str = ""
    sim: _Inner = field(default_factory=_Inner)


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "rig.toml"
    cfg.write_text("[x]\nrois = 'C:\\data\\x.npz'\nmodel = '\\\\rigserver\\models\\m.onnx'\n"
                   "out = 'sessions/s1.ccr'\nname = 'C:\\not-a-path'\n"
                   "[x.sim]\nclips = 'D:/calibration/clips'\n")
    return cfg


def test_drive_letter_paths_stay_absolute_with_windows_rules(tmp_path: Path) -> None:
    from cortexcast.core.config import load_table

    cfg = _config(tmp_path)
    table = resolve_paths(_Paths, load_table(cfg, "x"), cfg, os_name="nt")
    assert table["rois"] == "C:\\data\\x.npz"
    assert table["model"] == "\\\\rigserver\\models\\m.onnx"  # a UNC share
    assert table["sim"]["clips"] == "D:/calibration/clips"
    assert table["name"] == "C:\\not-a-path"  # not a path field: untouched
    # a relative path still goes under the config's folder, joined the Windows way
    assert table["out"].endswith("\\sessions\\s1.ccr")
    assert plat.is_absolute_path("C:\\data\\x.npz", "nt")
    assert plat.is_absolute_path("D:/calibration/clips", "nt")
    assert not plat.is_absolute_path("calibration/clips", "nt")


def test_posix_rules_are_unchanged(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    s = load_settings(_Paths, cfg, "x")  # this OS (Linux in CI): / is absolute, C:\ is not
    base = str(tmp_path.resolve())
    assert s.out == f"{base}/sessions/s1.ccr"
    assert s.rois == f"{base}/C:\\data\\x.npz"
    table = resolve_paths(_Paths, {"rois": "/data/x.npz"}, cfg, os_name="posix")
    assert table["rois"] == "/data/x.npz"


def test_a_daq_config_keeps_windows_paths_in_every_nested_table(tmp_path: Path) -> None:
    from cortexcast.core.config import load_table
    from cortexcast.daq.process import DaqSettings

    cfg = tmp_path / "rig.toml"
    cfg.write_text("[daq]\nsource = 'tiff'\nstats_out = 'C:\\runs\\daq.json'\n"
                   "[daq.tiff]\nfolder = 'E:\\ScanImage\\mouse1'\n"
                   "[daq.sim]\nclips = 'D:/calibration/clips'\n")
    table = resolve_paths(DaqSettings, load_table(cfg, "daq"), cfg, os_name="nt")
    assert table["stats_out"] == "C:\\runs\\daq.json"
    assert table["tiff"]["folder"] == "E:\\ScanImage\\mouse1"
    assert table["sim"]["clips"] == "D:/calibration/clips"


# -- which branch, per OS ------------------------------------------------------------

class _FakePopen:
    pid = 4242

    def __init__(self, refuse_ctrl_break: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse = refuse_ctrl_break

    def send_signal(self, sig: int) -> None:
        self.calls.append(("send_signal", sig))
        if self.refuse:
            raise OSError("GenerateConsoleCtrlEvent: no console")

    def terminate(self) -> None:
        self.calls.append(("terminate", None))

    def kill(self) -> None:
        self.calls.append(("kill", None))


def test_windows_branches_of_the_process_calls() -> None:
    assert plat.new_group_kwargs("nt") == {"creationflags": 0x200}
    assert plat.new_group_kwargs("posix") == {"start_new_session": True}
    assert plat.CREATE_NEW_PROCESS_GROUP == getattr(subprocess, "CREATE_NEW_PROCESS_GROUP",
                                                    0x200)
    assert plat.CTRL_BREAK_EVENT == getattr(signal, "CTRL_BREAK_EVENT", 1)

    p = _FakePopen()
    assert plat.signal_group(p, "stop", "nt") == "ctrl_break"
    assert plat.signal_group(p, "kill", "nt") == "kill"
    assert p.calls == [("send_signal", plat.CTRL_BREAK_EVENT), ("kill", None)]
    q = _FakePopen(refuse_ctrl_break=True)  # pythonw / a service: no console to signal
    assert plat.signal_group(q, "stop", "nt") == "terminate"
    assert q.calls[-1] == ("terminate", None)

    assert plat.stop_signal_names("nt") == ("SIGTERM", "SIGINT", "SIGBREAK")
    assert plat.stop_signal_names("posix") == ("SIGTERM", "SIGINT")
    assert plat.terminate_signal_names("nt") == ("SIGTERM", "SIGBREAK")
    assert plat.terminate_signal_names("posix") == ("SIGTERM", "SIGHUP")
    assert plat.die_with_parent(None) == "unsupervised"
    assert plat.die_with_parent("123", "win32") == "job object"
    assert plat.die_with_parent("123", "darwin") == "none"
    assert plat.parent_is_gone(os.getpid(), "nt") is False
    assert plat.parent_is_gone(os.getppid(), "posix") is False


def test_posix_stop_without_killpg_signals_the_child_itself(no_posix) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             **plat.new_group_kwargs())
    try:
        assert plat.signal_group(child, "stop") == "send_signal"
        assert child.wait(10) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()


def test_priority_and_signals_on_windows(monkeypatch) -> None:
    import psutil

    got: list[int] = []

    class _Proc:
        def nice(self, value: int) -> None:
            got.append(value)

    monkeypatch.setattr(psutil, "Process", _Proc)
    assert plat.lower_priority("nt") == "below_normal" and got == [0x4000]
    # SIGBREAK is taken only where the signal module has it (Windows)
    assert plat.signals_named(("SIGTERM", "SIGBREAK")) == (
        [signal.SIGTERM] + ([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else []))


def test_the_asyncio_stop_falls_back_to_a_plain_handler(no_posix) -> None:
    """Windows' proactor loop has no add_signal_handler: a plain handler hands it on."""
    called: list[str] = []

    class ProactorLike:
        def add_signal_handler(self, *_a: Any) -> None:
            raise NotImplementedError

        def call_soon_threadsafe(self, cb: Any) -> None:
            called.append("scheduled")
            cb()

    assert plat.add_async_stop_handlers(ProactorLike(), lambda: called.append("stop")) == \
        ["signal", "signal"]
    signal.raise_signal(signal.SIGTERM)
    assert called == ["scheduled", "stop"]


class _FakeKernel32:
    def __init__(self, fail_set: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_set = fail_set

    def CreateJobObjectW(self, *a: Any) -> int:
        self.calls.append(("CreateJobObjectW", *a))
        return 77

    def SetInformationJobObject(self, handle: int, cls: int, ref: Any, size: int) -> int:
        info = ref._obj
        self.calls.append(("SetInformationJobObject", handle, cls,
                           info.BasicLimitInformation.LimitFlags, size))
        return 0 if self.fail_set else 1

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        self.calls.append(("OpenProcess", access, inherit, pid))
        return 99

    def AssignProcessToJobObject(self, job: int, proc: int) -> int:
        self.calls.append(("AssignProcessToJobObject", job, proc))
        return 1

    def CloseHandle(self, handle: int) -> int:
        self.calls.append(("CloseHandle", handle))
        return 1


def test_the_job_object_kills_children_when_its_handle_closes() -> None:
    k32 = _FakeKernel32()
    job = plat.JobObject(kernel32=k32)
    job.assign(1234)
    job.close()
    job.close()  # idempotent
    size = ctypes.sizeof(plat.JobObjectExtendedLimits)
    assert k32.calls == [
        ("CreateJobObjectW", None, None),
        ("SetInformationJobObject", 77, 9, plat.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, size),
        ("OpenProcess", 0x0101, False, 1234),
        ("AssignProcessToJobObject", 77, 99),
        ("CloseHandle", 99),
        ("CloseHandle", 77),
    ]
    assert plat.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE == 0x2000
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert size == 144  # JOBOBJECT_EXTENDED_LIMIT_INFORMATION on 64-bit Windows
    bad = _FakeKernel32(fail_set=True)
    with pytest.raises(OSError):
        plat.JobObject(kernel32=bad)
    assert bad.calls[-1] == ("CloseHandle", 77)  # no half-made job left open


def test_windows_exit_codes_are_named() -> None:
    from cortexcast.app.supervised import exit_cause

    assert exit_cause(0xC000013A) == "exit 0xC000013A (ended by Ctrl-C/Ctrl-Break)"
    assert exit_cause(1) == "exit 1"
    assert exit_cause(-signal.SIGTERM) == "killed by SIGTERM"


# -- the held stop, without SIGALRM ------------------------------------------------------

@pytest.fixture
def held(no_posix):
    stop = StopSignals(max_hold_s=0.2)
    assert stop.install()
    yield stop
    stop.end()


def test_no_posix_a_stop_during_hold_waits_for_release(held) -> None:
    held.hold()
    signal.raise_signal(signal.SIGTERM)
    assert held.pending == "SIGTERM" and held.holding
    with pytest.raises(Stop, match="SIGTERM"):
        held.release()
    time.sleep(0.3)  # past the deadline: no late wake-up
    assert held.wakes == []


def test_no_posix_a_section_that_never_ends_stops_at_the_deadline(held) -> None:
    held.hold()
    t0 = time.monotonic()
    with pytest.raises(Stop, match="SIGTERM"):
        signal.raise_signal(signal.SIGTERM)
        while time.monotonic() - t0 < 5.0:  # a source polling for a frame that never comes
            time.sleep(0.01)
    assert 0.15 < time.monotonic() - t0 < 1.0
    assert held.wakes == ["interrupt_main"]  # the Windows wake-up (no pthread_kill)


def test_with_pthread_kill_a_blocking_wait_is_interrupted() -> None:
    """POSIX keeps the old guarantee: the deadline interrupts a blocking call."""
    if not hasattr(signal, "pthread_kill"):
        pytest.skip("POSIX only")
    old = signal.getsignal(signal.SIGTERM)
    stop = StopSignals(max_hold_s=0.2)
    stop.install()
    try:
        stop.hold()
        t0 = time.monotonic()
        with pytest.raises(Stop):
            signal.raise_signal(signal.SIGTERM)
            time.sleep(5.0)
        assert time.monotonic() - t0 < 2.0 and stop.wakes == ["pthread_kill"]
    finally:
        stop.end()
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_a_signal_from_another_thread_stops_like_ctrl_break(held) -> None:
    """On Windows a console event's handler runs on a thread of its own: the flag trips
    there and the handler runs in the main thread, as with ``interrupt_main``."""
    threading.Timer(0.05, _thread.interrupt_main, args=(signal.SIGTERM,)).start()
    with pytest.raises(Stop, match="SIGTERM"):
        for _ in range(500):
            time.sleep(0.01)


# -- the daq's stop handling, in-process ---------------------------------------------

class _ScriptedSource:
    """Frame 0 with its sync; then frame 1's sync, a stop (as from the supervisor), and
    frame 1 after ``frame_after_s`` (None: never, the source polls forever)."""

    def __init__(self, frame_after_s: float | None) -> None:
        self.frame_after_s = frame_after_s

    def __enter__(self) -> "_ScriptedSource":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {}

    def events(self) -> Iterator[Any]:
        px = np.zeros((8, 8), np.uint16)
        yield SyncEvent(0, 0.0, 0)
        yield ImagingFrame(0, 0.0, px)
        yield SyncEvent(1, 1 / 30, 1)  # the daq holds from here to frame 1
        signal.raise_signal(signal.SIGTERM)
        t0 = time.monotonic()
        while self.frame_after_s is None or time.monotonic() - t0 < self.frame_after_s:
            time.sleep(0.01)
            if time.monotonic() - t0 > 10:
                raise AssertionError("the held stop never came")
        yield ImagingFrame(1, 1 / 30, px)
        yield SyncEvent(2, 2 / 30, 2)  # never published: the stop ends the run first
        yield ImagingFrame(2, 2 / 30, px)


@pytest.mark.parametrize("frame_after_s", [0.1, None])
def test_no_posix_daq_stop_between_sync_and_frame(tmp_path: Path, monkeypatch, no_posix,
                                                  frame_after_s: float | None) -> None:
    import cortexcast.daq.process as daq_process
    from cortexcast.app.bench import free_ports

    monkeypatch.setattr(daq_process, "make_source", lambda _s: _ScriptedSource(frame_after_s))
    settings = daq_process.DaqSettings(publish=f"tcp://127.0.0.1:{free_ports(1)[0]}",
                                       stats_out=str(tmp_path / "daq.json"))
    stop = StopSignals()  # max_hold_s 0.5, as in the daq
    t0 = time.monotonic()
    assert daq_process.run_daq(settings, stop=stop) == 0
    took = time.monotonic() - t0
    stats = json.loads((tmp_path / "daq.json").read_text())
    assert stats["reason"] == "stopped by SIGTERM"
    published = stats["published"]
    if frame_after_s is not None:  # the frame came: both went out, then the stop
        assert (published.get("sync"), published.get("frames")) == (2, 2)
        assert stop.wakes == []
    else:  # it never came: the stop after at most the deadline
        assert (published.get("sync"), published.get("frames")) == (2, 1)
        assert stop.wakes == ["interrupt_main"] and took < 3.0


# -- the supervisor and a short `up`, Windows side -----------------------------------------

def _daq_config(tmp_path: Path) -> Path:
    from cortexcast.app.bench import free_ports

    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"[stack]\nprocesses = ['daq']\nrun_dir = 'run'\n"
                   f"[daq]\npublish = 'tcp://127.0.0.1:{free_ports(1)[0]}'\n"
                   "[daq.sim]\nn_neurons = 200\nframe_height = 64\nframe_width = 64\n")
    return cfg


def _wait_for_text(path: Path, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never in {path}"
        time.sleep(0.05)


def test_supervisor_windows_mode_starts_and_stops_via_ctrl_break(tmp_path: Path,
                                                                 windows_mode) -> None:
    from cortexcast.app.supervisor import Supervisor

    cfg = _daq_config(tmp_path)
    sup = Supervisor(cfg, ["daq"], tmp_path / "run", on_event=lambda _t: None)
    sup.start()
    try:
        _wait_for_text(tmp_path / "run" / "daq.log", "publishing")
    finally:
        sup.stop(timeout_s=20)
    assert windows_mode["creationflags"] == [plat.CREATE_NEW_PROCESS_GROUP]
    assert windows_mode["signals"] == [plat.CTRL_BREAK_EVENT]
    (job,) = windows_mode["jobs"]
    assert job.pids == [sup.children["daq"].popen.pid] and job.closed
    assert sup.failed == [] and sup.children["daq"].popen.returncode == 0
    stats = json.loads((tmp_path / "run" / "daq.json").read_text())
    assert stats["reason"] == "stopped by SIGTERM"  # (SIGBREAK on a real Windows)


def test_short_up_in_windows_mode(tmp_path: Path, windows_mode, capsys) -> None:
    from cortexcast.app.launcher import run_stack

    cfg = _daq_config(tmp_path)
    code, summary = run_stack(cfg, 4.0, tmp_path / "run", quiet=True)
    assert code == 0, capsys.readouterr().out
    assert windows_mode["creationflags"] == [plat.CREATE_NEW_PROCESS_GROUP]
    assert windows_mode["signals"] == [plat.CTRL_BREAK_EVENT]
    assert windows_mode["jobs"][0].closed
    stats = json.loads((tmp_path / "run" / "daq.json").read_text())
    assert stats["reason"] == "stopped by SIGTERM" and stats["published"]["frames"] > 0
