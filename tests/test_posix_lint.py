"""No POSIX-only call on the live path without a Windows path (the daq runs on Windows).

The live-path modules (``cortexcast/app`` but ``bench*.py``; ``cortexcast/core``;
``stream``; ``daq`` but its stand-ins and the ScanImage bench; ``decoder/live``;
``decoder/closed_loop``; ``display``) are parsed, not imported, and every use of a
POSIX-only name is flagged:

* ``os.X`` for X in :data:`POSIX_OS` (``killpg``, ``setsid``, ``fork``, ``getuid``, ...);
* ``signal.X`` for X in :data:`POSIX_SIGNAL` (``SIGALRM``, ``setitimer``, ``SIGHUP``,
  ``SIGKILL``, ``pthread_kill``, ...);
* ``from os import X`` / ``from signal import X`` of those, ``getattr(os|signal, "X")``
  without a default (with one it is a fallback, fine);
* ``prctl`` (any name or attribute), imports of the POSIX-only modules in
  :data:`POSIX_MODULES` (``fcntl``, ``termios``, ``pty``, ``resource``, ``grp``, ``pwd``,
  ``tty``, ...);
* the Popen keywords ``start_new_session=``, ``preexec_fn=``, ``process_group=``.

The rule for "guarded": such a use is fine

* anywhere in ``cortexcast/core/platform.py``, the one module for OS-specific process
  calls (each there has its Windows branch), or
* inside either branch of an ``if`` (or ``x if c else y``) whose test mentions ``os.name``,
  ``sys.platform``, or calls ``hasattr(os, ...)`` / ``hasattr(signal, ...)``: the code
  picked a branch by OS, so the other branch is the Windows (or POSIX) one.

``try/except AttributeError`` does not count: say which OS you mean. Aliases
(``import signal as sig``) are followed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

POSIX_OS = frozenset({
    "killpg", "getpgid", "setsid", "setpgrp", "setpgid", "getpgrp", "getsid", "fork",
    "forkpty", "getuid", "geteuid", "getgid", "getegid", "setuid", "setgid", "seteuid",
    "setegid", "getgroups", "wait3", "wait4", "WNOHANG", "mkfifo", "getloadavg", "nice",
    "sched_setaffinity", "sched_getaffinity", "register_at_fork",
})
POSIX_SIGNAL = frozenset({
    "SIGALRM", "SIGHUP", "SIGKILL", "SIGSTOP", "SIGCONT", "SIGQUIT", "SIGUSR1", "SIGUSR2",
    "SIGCHLD", "SIGPIPE", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGWINCH", "SIGIO", "SIGPOLL",
    "setitimer", "getitimer", "ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF", "pause",
    "alarm", "pthread_kill", "pthread_sigmask", "sigwait", "sigwaitinfo", "sigtimedwait",
    "siginterrupt", "sigpending",
})
POSIX_MODULES = frozenset({"fcntl", "termios", "pty", "resource", "grp", "pwd", "tty",
                           "posix", "syslog", "crypt"})
POSIX_KEYWORDS = frozenset({"start_new_session", "preexec_fn", "process_group"})
POSIX_ONLY = {"os": POSIX_OS, "signal": POSIX_SIGNAL}

LIVE_DIRS = ("cortexcast/app", "cortexcast/core", "stream", "daq", "decoder/live",
             "decoder/closed_loop", "display")
EXCLUDED = ("daq/standins/", "daq/serial_sync/standin.py", "daq/scanimage/bench.py")
PLATFORM_MODULE = "cortexcast/core/platform.py"


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _is_guard(test: ast.expr, aliases: dict[str, str]) -> bool:
    """Does an ``if`` test pick a branch by OS (``os.name``, ``sys.platform``, hasattr)?"""
    for node in ast.walk(test):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id)
            if (module, node.attr) in (("os", "name"), ("sys", "platform")):
                return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "hasattr" and node.args \
                and isinstance(node.args[0], ast.Name) \
                and aliases.get(node.args[0].id) in ("os", "signal"):
            return True
    return False


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str, aliases: dict[str, str]) -> None:
        self.path, self.aliases = path, aliases
        self.guarded = 0
        self.found: list[Finding] = []

    def _flag(self, node: ast.AST, what: str) -> None:
        if not self.guarded:
            self.found.append(Finding(self.path, getattr(node, "lineno", 0), what))

    def _branches(self, node: ast.If | ast.IfExp) -> None:
        self.visit(node.test)
        guard = _is_guard(node.test, self.aliases)
        self.guarded += guard
        for part in (node.body, node.orelse):
            for child in part if isinstance(part, list) else [part]:
                self.visit(child)
        self.guarded -= guard

    visit_If = visit_IfExp = _branches  # type: ignore[assignment]

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name):
            module = self.aliases.get(node.value.id)
            if node.attr in POSIX_ONLY.get(module or "", ()):
                self._flag(node, f"{module}.{node.attr}")
        if node.attr == "prctl":
            self._flag(node, "prctl")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "prctl":
            self._flag(node, "prctl")

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name.split(".")[0] in POSIX_MODULES:
                self._flag(node, f"import {a.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = (node.module or "").split(".")[0]
        if node.level == 0 and module in POSIX_MODULES:
            self._flag(node, f"from {node.module} import ...")
        for a in node.names:
            if node.level == 0 and a.name in POSIX_ONLY.get(module, ()):
                self._flag(node, f"from {module} import {a.name}")

    def visit_Call(self, node: ast.Call) -> None:
        for kw in node.keywords:
            if kw.arg in POSIX_KEYWORDS:
                self._flag(kw.value, f"{kw.arg}=")
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) == 2 and isinstance(node.args[0], ast.Name) \
                and isinstance(node.args[1], ast.Constant):
            module = self.aliases.get(node.args[0].id)
            if node.args[1].value in POSIX_ONLY.get(module or "", ()):
                self._flag(node, f"getattr({module}, {node.args[1].value!r}) without a default")
        self.generic_visit(node)


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> module, for os/signal/sys however imported (plain names by default)."""
    names = {"os": "os", "signal": "signal", "sys": "sys"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in ("os", "signal", "sys"):
                    names[a.asname or a.name] = a.name
    return names


def check_source(source: str, path: str) -> list[Finding]:
    """The unguarded POSIX-only uses in one module's source (``path``: repo-relative)."""
    if path == PLATFORM_MODULE:
        return []
    tree = ast.parse(source, filename=path)
    checker = _Checker(path, _aliases(tree))
    checker.visit(tree)
    return checker.found


def live_modules() -> list[Path]:
    out = []
    for d in LIVE_DIRS:
        for p in sorted((REPO / d).rglob("*.py")):
            rel = p.relative_to(REPO).as_posix()
            if rel.startswith(EXCLUDED) or (d == "cortexcast/app" and p.name.startswith("bench")):
                continue
            out.append(p)
    return out


def test_the_live_path_has_no_unguarded_posix_only_call() -> None:
    modules = live_modules()
    assert len(modules) > 50 and any(p.name == "process.py" for p in modules)
    found = [f for p in modules
             for f in check_source(p.read_text(encoding="utf-8"),
                                   p.relative_to(REPO).as_posix())]
    assert not found, ("POSIX-only calls without a Windows path (use "
                       "cortexcast/core/platform.py, or guard by os.name / sys.platform / "
                       "hasattr):\n" + "\n".join(map(str, found)))


def test_the_excluded_and_included_files_are_the_intended_ones() -> None:
    rel = {p.relative_to(REPO).as_posix() for p in live_modules()}
    assert "daq/process.py" in rel and "cortexcast/app/supervisor.py" in rel
    assert "cortexcast/core/runtime.py" in rel and "display/server.py" in rel
    assert "cortexcast/app/bench_faults.py" not in rel
    assert "daq/serial_sync/standin.py" not in rel and "daq/scanimage/bench.py" not in rel
    assert not any(r.startswith("daq/standins/") for r in rel)


def test_adding_killpg_to_the_daq_is_caught() -> None:
    path = REPO / "daq" / "process.py"
    source = path.read_text(encoding="utf-8") + "\n\ndef _bad(pid):\n    os.killpg(pid, 15)\n"
    found = check_source(source, "daq/process.py")
    assert [f.what for f in found] == ["os.killpg"]
    assert str(found[0]).startswith("daq/process.py:")


@pytest.mark.parametrize("snippet, what", [
    ("import os\nos.killpg(1, 15)", ["os.killpg"]),
    ("import os as o\no.setsid()", ["os.setsid"]),
    ("import signal\nsignal.signal(signal.SIGALRM, h)\nsignal.setitimer(signal.ITIMER_REAL, 1)",
     ["signal.SIGALRM", "signal.setitimer", "signal.ITIMER_REAL"]),
    ("import signal\nfor s in (signal.SIGTERM, signal.SIGHUP): pass", ["signal.SIGHUP"]),
    ("from signal import SIGKILL", ["from signal import SIGKILL"]),
    ("import fcntl", ["import fcntl"]),
    ("from termios import tcgetattr", ["from termios import ..."]),
    ("import subprocess\nsubprocess.Popen(['x'], start_new_session=True)",
     ["start_new_session="]),
    ("import subprocess\nsubprocess.Popen(['x'], preexec_fn=f)", ["preexec_fn="]),
    ("import ctypes\nctypes.CDLL(None).prctl(1, 15)", ["prctl"]),
    ("import signal\ngetattr(signal, 'SIGKILL')", ["getattr(signal, 'SIGKILL') without a default"]),
    ("import signal\ndef f():\n    return signal.pause()", ["signal.pause"]),
])
def test_the_checker_flags_posix_only_calls(snippet: str, what: list[str]) -> None:
    assert [f.what for f in check_source(snippet, "daq/x.py")] == what


@pytest.mark.parametrize("snippet", [
    "import os\nif os.name == 'nt':\n    pass\nelse:\n    os.killpg(1, 15)",
    "import sys, os\nif sys.platform.startswith('linux'):\n    os.setsid()",
    "import signal\nif hasattr(signal, 'SIGALRM'):\n    signal.signal(signal.SIGALRM, h)",
    "import signal\nKILL = signal.SIGKILL if hasattr(signal, 'SIGKILL') else signal.SIGTERM",
    "import signal\nKILL = getattr(signal, 'SIGKILL', signal.SIGTERM)",
    "import signal\nsignal.signal(signal.SIGTERM, h)\nsignal.signal(signal.SIGINT, h)",
    "import asyncio, signal\nloop.add_signal_handler(signal.SIGINT, cb)",
    "import os\nos.getppid(); os.kill(os.getpid(), 15)",
])
def test_the_checker_accepts_guarded_or_portable_code(snippet: str) -> None:
    assert check_source(snippet, "daq/x.py") == []


def test_the_platform_module_may_hold_both_branches() -> None:
    source = (REPO / PLATFORM_MODULE).read_text(encoding="utf-8")
    assert "killpg" in source and "prctl" in source
    assert check_source(source, PLATFORM_MODULE) == []
    assert check_source(source, "cortexcast/core/elsewhere.py") != []
