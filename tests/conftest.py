"""Shared fixtures: sockets that close with linger=0 and bind to random loopback ports."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Iterator

import pytest
import zmq

REPO = Path(__file__).resolve().parents[1]


class _TrackingContext(zmq.Context):
    """A context that keeps its sockets alive until teardown closes them (linger=0)."""

    def socket(self, *args, **kwargs):  # type: ignore[override]
        s = super().socket(*args, **kwargs)
        self.__dict__.setdefault("_held", []).append(s)
        return s


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """A test that runs a process's stop handling in this process (which ends by ignoring
    SIGTERM/SIGINT for its clean-up) must not leave them ignored: every child started
    later would inherit SIG_IGN and outlive its own SIGTERM."""
    names = ("SIGTERM", "SIGINT", "SIGHUP", "SIGBREAK")
    saved = {sig: signal.getsignal(sig) for n in names if (sig := getattr(signal, n, None))}
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


@pytest.fixture
def zmq_ctx() -> Iterator[zmq.Context]:
    ctx = _TrackingContext()
    yield ctx
    for s in ctx.__dict__.get("_held", []):
        s.close(linger=0)
    ctx.term()


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running `python -m cortexcast` subprocesses from the checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", default=False,
                     help="also run tests marked 'hardware' (they need a real rig: an NI DAQ, "
                          "a serial sync box, ScanImage); see docs/rig.md")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs a real rig: run with --hardware (docs/rig.md)")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
