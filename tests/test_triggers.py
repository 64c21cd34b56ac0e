"""Trigger outputs: NI TTL against create_autospec fakes of the real nidaqmx classes,
serial commands against a pseudo-terminal, and the non-blocking worker."""

from __future__ import annotations

import os
import pty
import queue
import select
import threading
import time
import tty
from pathlib import Path
from unittest import mock

import nidaqmx
import nidaqmx.errors
import pytest
from nidaqmx.constants import LineGrouping
from nidaqmx.task.collections import DOChannelCollection

from cortexcast.core.config import ConfigError, settings_from_table
from cortexcast.decoder.closed_loop.outputs.log_output import LogOutput
from cortexcast.decoder.closed_loop.outputs.ni_ttl import NiTtlOutput
from cortexcast.decoder.closed_loop.outputs.factory import make_output
from cortexcast.decoder.closed_loop.outputs.output import (
    NiTtlSettings, OutputSettings, SerialCommandSettings, TriggerError,
)
from cortexcast.decoder.closed_loop.outputs.serial_command import SerialCommandOutput
from cortexcast.decoder.closed_loop.outputs.worker import TriggerWorker


# -- NI TTL ---------------------------------------------------------------------------------

def fake_task() -> mock.NonCallableMagicMock:
    """A strict fake of nidaqmx.Task: any call nidaqmx does not have fails."""
    task = mock.create_autospec(nidaqmx.Task, instance=True)
    task.do_channels = mock.create_autospec(DOChannelCollection, instance=True)
    return task


def test_the_fake_task_is_strict() -> None:
    task = fake_task()
    with pytest.raises(AttributeError):
        task.wirte(True)
    with pytest.raises(TypeError):
        task.do_channels.add_do_chan("Dev1/port0/line0", grouping=LineGrouping.CHAN_PER_LINE)


def test_ttl_pulse_goes_high_for_the_pulse_width_then_low() -> None:
    task = fake_task()
    writes: list[tuple[bool, int]] = []
    task.write.side_effect = lambda data, **kw: writes.append((data, time.monotonic_ns()))
    out = NiTtlOutput("laser", NiTtlSettings(line="Dev2/port1/line3", pulse_ms=3.0),
                      task_factory=lambda: task)
    out.open()
    task.do_channels.add_do_chan.assert_called_once_with(
        "Dev2/port1/line3", line_grouping=LineGrouping.CHAN_PER_LINE)
    assert task.write.call_args_list[0] == mock.call(False, auto_start=True)  # idle low first
    edge = out.fire()
    levels = [w[0] for w in writes]
    assert levels == [False, True, False]
    t_high, t_low = writes[1][1], writes[2][1]
    assert t_high <= edge <= t_low
    assert t_low - t_high >= 3_000_000  # the line stayed high at least the pulse width
    out.close()
    assert [w[0] for w in writes][-1] is False
    task.close.assert_called_once_with()


def test_active_low_line_idles_high_and_pulses_low() -> None:
    task = fake_task()
    out = NiTtlOutput("x", NiTtlSettings(pulse_ms=0.1, active_high=False),
                      task_factory=lambda: task)
    out.open()
    out.fire()
    assert [c.args[0] for c in task.write.call_args_list] == [True, False, True]


def test_daq_errors_become_trigger_errors_naming_the_line() -> None:
    task = fake_task()
    task.do_channels.add_do_chan.side_effect = nidaqmx.errors.DaqError(
        "Device identifier is invalid.", error_code=-200220)
    out = NiTtlOutput("laser", NiTtlSettings(line="Dev9/port0/line0"), task_factory=lambda: task)
    with pytest.raises(TriggerError, match=r"laser.*Dev9/port0/line0.*Device identifier"):
        out.open()
    task.close.assert_called_once_with()  # nothing leaked

    task = fake_task()
    out = NiTtlOutput("laser", NiTtlSettings(), task_factory=lambda: task)
    out.open()
    task.write.side_effect = nidaqmx.errors.DaqError("Device was removed.", error_code=-88709)
    with pytest.raises(TriggerError, match="pulse failed.*Device was removed"):
        out.fire()


def test_no_ni_driver_says_how_to_install_it() -> None:
    def no_driver():
        raise nidaqmx.errors.DaqNotFoundError("Could not find an installation of NI-DAQmx.")

    out = NiTtlOutput("laser", NiTtlSettings(), task_factory=no_driver)
    with pytest.raises(TriggerError, match="NI-DAQmx is not installed.*installdriver"):
        out.open()


def test_real_nidaqmx_without_driver_fails_cleanly() -> None:
    """On this machine (no NI-DAQmx) the real default factory must map the vendor error."""
    out = make_output(OutputSettings("laser", "ni-ttl"))
    try:
        out.open()
    except TriggerError as exc:
        assert "laser" in str(exc)
    else:  # a machine with NI-DAQmx and a Dev1: fine too
        out.close()


# -- serial ---------------------------------------------------------------------------------

class FakeDevice:
    """A pseudo-terminal whose slave end is the 'device' path (a symlink, so it can be
    unplugged and come back under the same name, as udev does)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.plug()

    def plug(self) -> None:
        self.master, slave = pty.openpty()
        tty.setraw(self.master)
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(self.slave_name)

    def unplug(self) -> None:
        os.close(self.master)
        self.link.unlink()

    def read(self, n: int, timeout_s: float = 5.0) -> bytes:
        got = b""
        deadline = time.monotonic() + timeout_s
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                break
            got += os.read(self.master, n - len(got))
        return got

    def close(self) -> None:
        if self.link.is_symlink():
            os.close(self.master)
            self.link.unlink()


@pytest.fixture
def device(tmp_path: Path):
    d = FakeDevice(tmp_path / "ttyFAKE0")
    yield d
    d.close()


def test_serial_command_bytes_reach_the_device(device: FakeDevice) -> None:
    out = SerialCommandOutput("valve", SerialCommandSettings(port=str(device.link), baud=9600,
                                                             command="FIRE 3\n"))
    out.open()
    try:
        t0 = time.monotonic_ns()
        t = out.fire()
        assert device.read(7) == b"FIRE 3\n"
        assert t >= t0
        out.fire()
        out.fire()
        assert device.read(14) == b"FIRE 3\nFIRE 3\n"
    finally:
        out.close()


def test_serial_hex_command(device: FakeDevice) -> None:
    out = make_output(OutputSettings("laser", "serial", serial=SerialCommandSettings(
        port=str(device.link), command_hex="A5 01 ff 00")))
    out.open()
    try:
        out.fire()
        assert device.read(4) == bytes([0xA5, 0x01, 0xFF, 0x00])
    finally:
        out.close()


def test_serial_unplug_fails_one_firing_then_reconnects(device: FakeDevice) -> None:
    out = SerialCommandOutput("valve", SerialCommandSettings(port=str(device.link), command="X"))
    out.open()
    try:
        out.fire()
        assert device.read(1) == b"X"
        device.unplug()
        with pytest.raises(TriggerError, match="valve"):
            out.fire()  # the write fails, or (once the port is gone) the reopen does
        with pytest.raises(TriggerError, match="cannot open serial port"):
            out.fire()  # still unplugged: reopening fails, clearly
        device.plug()
        out.fire()
        assert device.read(1) == b"X"
        assert out.reopened >= 1
    finally:
        out.close()


def test_missing_serial_port_is_a_clear_error(tmp_path: Path) -> None:
    out = SerialCommandOutput("v", SerialCommandSettings(port=str(tmp_path / "ttyNONE"),
                                                         command="X"))
    with pytest.raises(TriggerError, match="cannot open serial port .*ttyNONE.*plugged in"):
        out.open()


@pytest.mark.parametrize("table, message", [
    ({"name": "s", "kind": "serial"}, "needs a serial table"),
    ({"name": "s", "kind": "serial", "serial": {"port": "/dev/x"}}, "exactly one of"),
    ({"name": "s", "kind": "serial", "serial": {"port": "/dev/x", "command_hex": "zz"}},
     "not hex"),
    ({"name": "n", "kind": "ni-ttl", "ni": {"line": "Dev1"}}, "not a digital line"),
    ({"name": "n", "kind": "ni-ttl", "ni": {"pulse_ms": 0}}, "pulse_ms"),
    ({"name": "n", "kind": "laser"}, "must be one of"),
])
def test_output_settings_are_validated(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_table(OutputSettings, table, "rig.toml: [[loop.outputs]]")


# -- worker ---------------------------------------------------------------------------------

class GatedOutput(LogOutput):
    """Blocks in fire() until the test opens the gate (a slow device)."""

    def __init__(self) -> None:
        super().__init__("slow")
        self.gate = threading.Event()
        self.entered = threading.Event()

    def fire(self) -> int:
        self.entered.set()
        assert self.gate.wait(10)
        return super().fire()


def test_a_slow_output_never_blocks_submit() -> None:
    done: queue.SimpleQueue = queue.SimpleQueue()
    out = GatedOutput()
    worker = TriggerWorker(out, done, queue_size=2)
    worker.start()
    try:
        assert worker.submit("a")
        assert out.entered.wait(5)  # the worker is stuck inside fire("a")
        t0 = time.monotonic()
        results = [worker.submit(x) for x in "bcd"]
        assert time.monotonic() - t0 < 1.0  # returned at once (generous bound, not a benchmark)
        assert results == [True, True, False] and worker.refused == 1
        out.gate.set()
        got = [done.get(timeout=5) for _ in range(3)]
        assert [g[0] for g in got] == ["a", "b", "c"]
        assert all(t is not None and err is None for _, t, err in got)
    finally:
        out.gate.set()
        worker.close()


def test_worker_reports_output_errors_and_keeps_going() -> None:
    class Flaky(LogOutput):
        def fire(self) -> int:
            self.fired += 1
            if self.fired == 1:
                raise TriggerError("device went away")
            return super().fire()

    done: queue.SimpleQueue = queue.SimpleQueue()
    worker = TriggerWorker(Flaky("f"), done)
    worker.start()
    worker.submit(1)
    worker.submit(2)
    first, second = done.get(timeout=5), done.get(timeout=5)
    worker.close()
    assert first == (1, None, "device went away")
    assert second[0] == 2 and second[2] is None
