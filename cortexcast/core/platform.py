"""The one place for OS-specific process calls: each with its POSIX and its Windows branch.

ScanImage and NI-DAQmx run on Windows, so the daq beside the microscope does too. Live
code never calls a POSIX-only function directly (tests/test_posix_lint.py checks); it
calls these, which pick the branch from ``os_name`` (default :data:`OS_NAME`, i.e.
``os.name``). The choice being a parameter lets the tests run the Windows branches'
logic on Linux (with fakes for what only Windows has: CTRL_BREAK, job objects).

=====================  ====================================  ===============================
what                   POSIX                                 Windows (``os.name == "nt"``)
=====================  ====================================  ===============================
child's own group      ``start_new_session=True``            ``CREATE_NEW_PROCESS_GROUP``
stop a child           SIGTERM to its group (``killpg``)     CTRL_BREAK_EVENT (-> SIGBREAK)
kill a child           SIGKILL to its group                  ``TerminateProcess``
children die with us   PDEATHSIG in the child (Linux)        a job object, kill-on-close
stop signals taken     SIGTERM, SIGINT                       SIGTERM, SIGINT, SIGBREAK
``up`` also stops on   SIGHUP (closed terminal)              SIGBREAK
wake the main thread   ``pthread_kill`` (interrupts waits)   ``_thread.interrupt_main``
absolute paths         ``/x``                                ``C:\\x``, ``D:/x``, ``\\\\host\\share``
=====================  ====================================  ===============================
"""

from __future__ import annotations

import _thread
import ctypes
import os
import signal
import subprocess
import sys
import threading
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any, Literal

#: The OS whose branch is taken when a function gets no ``os_name`` (tests may patch it).
OS_NAME: str = os.name
#: Windows' values, usable (as plain numbers) on every OS, for tests of the Windows branch.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CTRL_BREAK_EVENT = 1
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
PROCESS_SET_QUOTA, PROCESS_TERMINATE = 0x0100, 0x0001


def is_windows(os_name: str | None = None) -> bool:
    return (OS_NAME if os_name is None else os_name) == "nt"


# -- paths ----------------------------------------------------------------------

def path_flavour(os_name: str | None = None) -> type[PurePath]:
    """The pure path class of that OS (on Linux ``Path("C:\\\\x").is_absolute()`` is False)."""
    return PureWindowsPath if is_windows(os_name) else PurePosixPath


def is_absolute_path(value: str, os_name: str | None = None) -> bool:
    return path_flavour(os_name)(value).is_absolute()


def join_path(base: str | PurePath, value: str, os_name: str | None = None) -> str:
    """``base / value`` with that OS's rules (an absolute ``value`` wins)."""
    flavour = path_flavour(os_name)
    return str(flavour(str(base)) / value)


# -- signals ----------------------------------------------------------------------

def stop_signal_names(os_name: str | None = None) -> tuple[str, ...]:
    """The signals a process takes as "stop cleanly". Windows: the supervisor's
    CTRL_BREAK_EVENT arrives as SIGBREAK (CTRL_C is off in a new process group)."""
    return ("SIGTERM", "SIGINT", "SIGBREAK") if is_windows(os_name) else ("SIGTERM", "SIGINT")


def terminate_signal_names(os_name: str | None = None) -> tuple[str, ...]:
    """What, besides Ctrl-C, stops ``cortexcast up``: docker stop / timeout (SIGTERM), a
    closed terminal (SIGHUP, POSIX only), Ctrl-Break or a parent's CTRL_BREAK (Windows)."""
    return ("SIGTERM", "SIGBREAK") if is_windows(os_name) else ("SIGTERM", "SIGHUP")


def signals_named(names: tuple[str, ...]) -> list[int]:
    """Those of ``names`` this Python's signal module has (SIGBREAK only on Windows)."""
    return [getattr(signal, n) for n in names if hasattr(signal, n)]


def stop_signals(os_name: str | None = None) -> list[int]:
    return signals_named(stop_signal_names(os_name))


def terminate_signals(os_name: str | None = None) -> list[int]:
    return signals_named(terminate_signal_names(os_name))


def add_async_stop_handlers(loop: Any, callback: Any) -> list[str]:
    """Call ``callback`` in ``loop`` on a stop signal (the display's asyncio loop).

    POSIX: ``loop.add_signal_handler``. Windows' proactor loop has none
    (NotImplementedError): a plain handler hands the stop to the loop (which a signal
    wakes: asyncio sets a wakeup fd). Off the main thread: nothing. Returns per signal
    how it was taken (``"loop"`` / ``"signal"``), for the tests.
    """
    taken = []
    for sig in stop_signals():
        try:
            loop.add_signal_handler(sig, callback)
            taken.append("loop")
        except NotImplementedError:
            if threading.current_thread() is not threading.main_thread():
                continue

            def handler(_signum: int, _frame: object) -> None:
                try:
                    loop.call_soon_threadsafe(callback)
                except RuntimeError:  # the loop is closed: the process is ending anyway
                    pass

            signal.signal(sig, handler)
            taken.append("signal")
        except (RuntimeError, ValueError):  # not the main thread
            pass
    return taken


def wake_main_thread(signum: int, os_name: str | None = None) -> str:
    """Run ``signum``'s Python handler in the main thread soon; returns the branch taken.

    POSIX: a real signal to the main thread (``pthread_kill``), which interrupts a blocking
    wait there (a sleep, a lock, a socket read), as SIGALRM used to. Windows (or no
    ``pthread_kill``): ``_thread.interrupt_main``, which runs the handler at the main
    thread's next bytecode, i.e. when a blocking call returns (sources poll in <= 0.2 s).
    """
    kill = getattr(signal, "pthread_kill", None)
    if not is_windows(os_name) and kill is not None:
        kill(threading.main_thread().ident, signum)
        return "pthread_kill"
    _thread.interrupt_main(signum)
    return "interrupt_main"


def lower_priority(os_name: str | None = None) -> str:
    """Make this process yield the CPU to the pipeline (a helper computing a statistic).

    POSIX: ``os.nice(10)``. Windows: BELOW_NORMAL_PRIORITY_CLASS (via psutil).
    """
    if is_windows(os_name):
        import psutil

        psutil.Process().nice(getattr(psutil, "BELOW_NORMAL_PRIORITY_CLASS", 0x4000))
        return "below_normal"
    os.nice(10)
    return "nice"


def parent_is_gone(parent_pid: int, os_name: str | None = None) -> bool:
    """Whether the process that started us has exited. POSIX: we were re-parented.
    Windows never re-parents (``getppid`` stays), so ask whether that pid still runs."""
    if is_windows(os_name):
        import psutil

        return not psutil.pid_exists(parent_pid)
    return os.getppid() != parent_pid


# -- child processes ------------------------------------------------------------------

def new_group_kwargs(os_name: str | None = None) -> dict[str, Any]:
    """Popen keywords that start a child in its own process group, so the terminal's
    Ctrl-C reaches only the supervisor (which then stops the children in order)."""
    if is_windows(os_name):
        return {"creationflags": CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def signal_group(popen: subprocess.Popen, how: Literal["stop", "kill"],
                 os_name: str | None = None) -> str:
    """Stop (cleanly) or kill a child started with :func:`new_group_kwargs`; returns the
    branch taken (for the tests).

    POSIX: SIGTERM / SIGKILL to the child's whole group, so its helpers go too
    (``killpg``; without it, the child alone). Windows: CTRL_BREAK_EVENT to its group (it
    arrives as SIGBREAK, which :class:`~cortexcast.core.runtime.StopSignals` takes as a
    stop); where that cannot be sent (no console: pythonw, a service) ``terminate()``.
    Kill is ``TerminateProcess``; helpers then go with the job (:class:`JobObject`).
    """
    if is_windows(os_name):
        if how == "kill":
            _quiet(popen.kill)
            return "kill"
        try:
            popen.send_signal(getattr(signal, "CTRL_BREAK_EVENT", CTRL_BREAK_EVENT))
            return "ctrl_break"
        except (OSError, ValueError):
            _quiet(popen.terminate)
            return "terminate"
    sig = signal.SIGTERM if how == "stop" else getattr(signal, "SIGKILL", signal.SIGTERM)
    killpg = getattr(os, "killpg", None)
    if killpg is None:
        _quiet(lambda: popen.send_signal(sig))
        return "send_signal"
    try:
        killpg(popen.pid, sig)  # the child leads its own session/group
    except (ProcessLookupError, PermissionError):  # gone (or its pid is someone else's now)
        pass
    return "killpg"


def _quiet(call: Any) -> None:
    try:
        call()
    except OSError:  # already gone
        pass


class _IoCounters(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class _BasicLimits(ctypes.Structure):
    _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64),
                ("PerJobUserTimeLimit", ctypes.c_int64),
                ("LimitFlags", ctypes.c_uint32),
                ("MinimumWorkingSetSize", ctypes.c_size_t),
                ("MaximumWorkingSetSize", ctypes.c_size_t),
                ("ActiveProcessLimit", ctypes.c_uint32),
                ("Affinity", ctypes.c_size_t),
                ("PriorityClass", ctypes.c_uint32),
                ("SchedulingClass", ctypes.c_uint32)]


class JobObjectExtendedLimits(ctypes.Structure):
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION (144 bytes on 64-bit Windows)."""

    _fields_ = [("BasicLimitInformation", _BasicLimits),
                ("IoInfo", _IoCounters),
                ("ProcessMemoryLimit", ctypes.c_size_t),
                ("JobMemoryLimit", ctypes.c_size_t),
                ("PeakProcessMemoryUsed", ctypes.c_size_t),
                ("PeakJobMemoryUsed", ctypes.c_size_t)]


def _kernel32() -> Any:
    from ctypes import wintypes

    k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    k32.CreateJobObjectW.restype = wintypes.HANDLE
    k32.CreateJobObjectW.argtypes = (ctypes.c_void_p, wintypes.LPCWSTR)
    k32.SetInformationJobObject.argtypes = (wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p,
                                            wintypes.DWORD)
    k32.OpenProcess.restype = wintypes.HANDLE
    k32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    k32.AssignProcessToJobObject.argtypes = (wintypes.HANDLE, wintypes.HANDLE)
    k32.CloseHandle.argtypes = (wintypes.HANDLE,)
    return k32


def _last_error() -> OSError:
    get = getattr(ctypes, "get_last_error", lambda: 0)
    make = getattr(ctypes, "WinError", None)
    return make(get()) if make is not None else OSError("Windows call failed")


class JobObject:
    """A Windows job object with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE: the supervisor holds
    the only handle, so when it dies (even killed) Windows closes the handle and kills
    every process in the job, the children and whatever they started. The Windows
    counterpart of the children's PDEATHSIG on Linux.

    ``kernel32`` is injectable so the tests can check the calls on any OS. A child is
    assigned right after it starts; one that starts a helper within that moment leaves
    the helper outside the job (the supervisor's stop still ends the child itself).
    """

    def __init__(self, kernel32: Any = None) -> None:
        self.k32 = kernel32 if kernel32 is not None else _kernel32()
        self.handle = self.k32.CreateJobObjectW(None, None)
        if not self.handle:
            raise _last_error()
        info = JobObjectExtendedLimits()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not self.k32.SetInformationJobObject(self.handle,
                                                JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
                                                ctypes.byref(info), ctypes.sizeof(info)):
            err = _last_error()
            self.close()
            raise err

    def assign(self, pid: int) -> None:
        """Put process ``pid`` in the job (OSError if Windows refuses)."""
        proc = self.k32.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, pid)
        if not proc:
            raise _last_error()
        try:
            if not self.k32.AssignProcessToJobObject(self.handle, proc):
                raise _last_error()
        finally:
            self.k32.CloseHandle(proc)

    def close(self) -> None:
        """Close the handle: Windows kills what is still in the job."""
        if self.handle:
            self.k32.CloseHandle(self.handle)
            self.handle = None


def child_job(os_name: str | None = None) -> JobObject | None:
    """Windows: a new :class:`JobObject` for the supervisor's children; elsewhere None
    (there each child calls :func:`die_with_parent` itself)."""
    return JobObject() if is_windows(os_name) else None


def die_with_parent(supervisor_pid: str | None,
                    platform_name: str | None = None) -> str:
    """In a supervised child: get SIGTERM from the kernel if the supervisor dies.

    Linux: PDEATHSIG via ``prctl``; SystemExit if the supervisor is already gone.
    Windows: nothing here (the supervisor's :class:`JobObject` does it). Other POSIX
    (macOS): nothing (no such call; a killed supervisor may leave its children).
    Returns the branch taken.
    """
    plat = sys.platform if platform_name is None else platform_name
    if not supervisor_pid:
        return "unsupervised"
    if not plat.startswith("linux"):
        return "job object" if plat == "win32" else "none"
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return "none"
    if os.getppid() != int(supervisor_pid):  # it died before we asked
        raise SystemExit("cortexcast: supervisor is gone; exiting")
    return "pdeathsig"
