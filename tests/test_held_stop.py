"""A stop signal between a frame's sync and the frame waits for the frame, but not for long."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cortexcast.core.runtime import StopSignals as HeldStop, Stop, ignore_stop_signals


@pytest.fixture
def held():
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    stop = HeldStop(max_hold_s=0.2)
    stop.install()
    yield stop
    signal.setitimer(signal.ITIMER_REAL, 0)
    for s, h in old.items():
        signal.signal(s, h)


def test_a_stop_outside_a_held_section_is_raised_at_once(held) -> None:
    with pytest.raises(Stop, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)  # interrupted by the handler


def test_a_stop_inside_a_held_section_waits_for_release(held) -> None:
    held.hold()
    os.kill(os.getpid(), signal.SIGINT)  # handled here, at the next bytecode boundary
    done = sum(range(1000))  # the section's work goes on
    assert done == 499500 and held.pending == "SIGINT"
    with pytest.raises(Stop, match="SIGINT"):
        held.release()


def test_a_section_that_never_ends_is_stopped_after_max_hold(held) -> None:
    held.hold()
    t0 = time.monotonic()
    with pytest.raises(Stop, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5.0)  # the frame never comes: the alarm raises
    assert time.monotonic() - t0 < 2.0


def test_release_without_a_signal_goes_on_and_cleanup_cancels_the_alarm(held) -> None:
    held.hold()
    held.release()
    held.hold()
    os.kill(os.getpid(), signal.SIGTERM)
    ignore_stop_signals()  # cleanup starts: the pending alarm must not fire into it
    time.sleep(0.4)


def test_end_leaves_a_held_section_quietly_and_cancels_the_alarm(held) -> None:
    held.hold()
    os.kill(os.getpid(), signal.SIGTERM)
    held.end()  # the loop is unwinding (its source ended or failed): no Stop from here on
    time.sleep(0.4)
    assert not held.holding
