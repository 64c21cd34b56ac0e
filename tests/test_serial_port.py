"""The serial sync source against a pseudo-terminal device: garbage, partial lines, unplug.

The test plays the device on the pty master (PtyDevice, the stand-in's own class) and the
source reads the slave through the real pyserial. No sleeps: events are awaited with
timeouts.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from cortexcast.daq.serial_sync.settings import SerialSettings
from cortexcast.daq.serial_sync.source import SerialSyncSource
from cortexcast.daq.serial_sync.standin import PtyDevice
from cortexcast.core.events import SyncEvent
from cortexcast.daq.source import AcquisitionError


class Collector:
    """Runs source.events() in a thread; the test waits on what arrives."""

    def __init__(self, src: SerialSyncSource) -> None:
        self.src = src
        self.q: queue.Queue[SyncEvent | BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for ev in self.src.events():
                self.q.put(ev)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.q.put(exc)

    def take(self, n: int, timeout: float = 10.0) -> list[SyncEvent]:
        out: list[SyncEvent] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            item = self.q.get(timeout=max(deadline - time.monotonic(), 0.01))
            if isinstance(item, BaseException):
                raise item
            out.append(item)
        return out


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)  # polling a condition with a deadline, not waiting blindly


def _settings(link: Path, **kw) -> SerialSettings:
    return SerialSettings(port=str(link), read_timeout_s=0.02, reconnect_min_s=0.01,
                          reconnect_max_s=0.1, **kw)


def test_lines_garbage_and_partial_lines(tmp_path: Path) -> None:
    link = tmp_path / "ttySYNC"
    with PtyDevice(link) as dev, SerialSyncSource(_settings(link)) as src:
        got = Collector(src)
        dev.write(b"@V_1000_0\n@P_1000_0\n@I_2000_0\n")
        dev.write(b"hello from the bootloader\n\xff\xfe\x00\n")  # garbage
        dev.write(b"@I_35")  # a partial line: the rest arrives in the next write
        dev.write(b"000_1\n@I_68000_")
        dev.write(b"@V_60000_1\n")  # the cut line runs into the next: one garbage line
        dev.write(b"x" * 600 + b"\n")  # far too long
        dev.write(b"@P_90000_1000\n@I_101000_3\r\n")
        evs = got.take(3)
    assert [e.imaging_frame for e in evs] == [0, 1, 3]
    assert [e.stim_frame for e in evs] == [0, 0, 0]  # the flip inside the cut line is lost
    assert evs[1].t == pytest.approx(0.035)
    assert "running" in evs[2].behavior and evs[2].behavior["running"] > 0
    st = src.status()
    assert st["serial_garbage"] == 3 and st["serial_syncbox_overlong"] == 1
    assert st["serial_lost_pulses"] == 1


def test_unplug_and_replug_without_restarting(tmp_path: Path) -> None:
    link = tmp_path / "ttySYNC"
    dev = PtyDevice(link)
    dev.plug()
    src = SerialSyncSource(_settings(link))
    with src:
        got = Collector(src)
        dev.write(b"@I_0_0\n@I_33000_1\n@I_66")  # unplugged mid-line
        assert [e.imaging_frame for e in got.take(2)] == [0, 1]
        dev.unplug()
        reader = src.readers[0]
        wait_until(lambda: reader.disconnects == 1)
        assert reader.partial == 1 and not reader.connected.is_set()
        dev.plug()  # a new pty behind the same link
        wait_until(reader.connected.is_set)
        dev.write(b"@I_166000_5\n@I_199000_6\n")  # pulses 2-4 went while unplugged
        evs = got.take(2)
        assert [e.imaging_frame for e in evs] == [5, 6]
        st = src.status()
        assert st["serial_lost_pulses"] == 3 and st["serial_syncbox_disconnects"] == 1
    dev.unplug()


def test_missing_port_is_a_clear_error(tmp_path: Path) -> None:
    src = SerialSyncSource(_settings(tmp_path / "no-such-port"))
    with pytest.raises(AcquisitionError, match="cannot open serial port.*no-such-port.*"
                                               r"\[daq.serial\] port"):
        src.__enter__()
    src.close()


def test_waits_for_a_device_plugged_in_later(tmp_path: Path) -> None:
    link = tmp_path / "ttySYNC"
    with SerialSyncSource(_settings(link, require_device=False)) as src:
        got = Collector(src)
        dev = PtyDevice(link)
        dev.plug()
        wait_until(src.readers[0].connected.is_set)
        dev.write(b"@I_0_0\n")
        assert got.take(1)[0].imaging_frame == 0
        dev.unplug()


def test_standin_process_with_garbage_and_an_unplug(tmp_path: Path, cli_env) -> None:
    link = tmp_path / "ttyBOX"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cortexcast.daq.serial_sync.standin", "--link", str(link),
         "--frame-rate", "100", "--stim-rate", "100", "--frames", "300",
         "--garbage-every", "7", "--partial-every", "50",
         "--unplug-at-s", "1.0", "--unplug-for-s", "0.3"],
        stdout=subprocess.PIPE, text=True, env=cli_env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("READY")
        with SerialSyncSource(_settings(link)) as src:
            got = Collector(src)
            events: list[SyncEvent] = []
            while not events or events[-1].imaging_frame < 290:
                events += got.take(1, timeout=15)
        frames = [e.imaging_frame for e in events]
        assert frames == sorted(set(frames))  # increasing, no duplicates
        st = src.status()
        assert st["serial_syncbox_disconnects"] >= 1 and st["serial_garbage"] > 0
        assert st["serial_lost_pulses"] == frames[-1] - frames[0] + 1 - len(frames)
        assert st["serial_lost_pulses"] >= 20  # ~0.3 s unplugged at 100 Hz
        stims = [e.stim_frame for e in events if e.stim_frame >= 0]
        assert stims == sorted(stims) and events[-1].behavior["running"] > 0
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]


def test_an_overlong_line_arriving_in_pieces_is_skipped_whole(tmp_path: Path) -> None:
    link = tmp_path / "ttySYNC"
    with PtyDevice(link) as dev, SerialSyncSource(_settings(link)) as src:
        got = Collector(src)
        reader = src.readers[0]
        dev.write(b"y" * 300)  # no newline yet: dropped once the buffer passes max_line
        wait_until(lambda: reader.overlong == 1)
        dev.write(b"y" * 100 + b"\n@I_0_0\n")  # the tail of the same line is dropped too
        assert got.take(1)[0].imaging_frame == 0
    assert src.status()["serial_garbage"] == 0 and reader.overlong == 1


def test_standin_schedule_windows_continue_each_other() -> None:
    from cortexcast.daq.serial_sync.standin import schedule

    whole = schedule(29.97, 60.0, 0.02, 100.0, 0.0, 2.0)
    assert schedule(29.97, 60.0, 0.02, 100.0, 0.0, 0.7) + \
        schedule(29.97, 60.0, 0.02, 100.0, 0.7, 2.0) == whole
    for kind in "IVP":
        counts = [c for _, k, c in whole if k == kind]
        assert counts == list(range(len(counts)))
