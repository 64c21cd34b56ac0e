"""The sync box line protocol and the event builder: pure, no ports."""

from __future__ import annotations

import math

import pytest

from cortexcast.daq.serial_sync.builder import SerialSyncBuilder
from cortexcast.daq.serial_sync.protocol import DeviceEvent, LineParser, MicrosClock
from cortexcast.daq.serial_sync.settings import DEFAULT_PATTERN, SerialSettings
from cortexcast.daq.serial_sync.source import SerialSyncSource


def test_default_protocol_and_garbage() -> None:
    p = LineParser(DEFAULT_PATTERN, ("I", "V", "P"))
    assert p(b"@I_123456_7\r\n") == DeviceEvent("I", 123456, 7)
    assert p(b"@P_99_-42") == DeviceEvent("P", 99, -42)
    for bad in (b"@I_12", b"I_1_2", b"@X_1_2", b"\xff\xfe", b"", b"@I_1_2_3", b"@I_a_2"):
        assert p(bad) is None
    assert p.garbage == 7


def test_custom_pattern() -> None:
    s = SerialSettings(port="x", pattern=r"^(?P<kind>F|S|W),(?P<micros>\d+),(?P<value>-?\d+)$",
                       imaging_kind="F", flip_kind="S", position_kind="W")
    p = LineParser(s.pattern, ("F", "S", "W"))
    assert p(b"F,10,3") == DeviceEvent("F", 10, 3) and p(b"@I_1_2") is None
    with pytest.raises(ValueError, match="named groups"):
        SerialSettings(port="x", pattern=r"(?P<kind>\w)_(\d+)")
    with pytest.raises(ValueError, match="port is required"):
        SerialSyncSource(SerialSettings())


def test_micros_clock_unwraps() -> None:
    c = MicrosClock(bits=32)
    top = (1 << 32) - 1000
    assert c(top) == pytest.approx(top / 1e6)
    assert c(500) == pytest.approx(((1 << 32) + 500) / 1e6)  # wrapped, still increasing
    assert c(2000) == pytest.approx(((1 << 32) + 2000) / 1e6)  # no second wrap
    c.reset()
    assert c(2000) == pytest.approx(2000 / 1e6)  # a restarted device starts afresh


def _speed_settings(**kw) -> SerialSettings:
    return SerialSettings(port="x", ticks_per_rev=1000, wheel_diameter_cm=10.0, **kw)


def test_builder_frames_stimulus_speed_loss_and_restart() -> None:
    b = SerialSyncBuilder(_speed_settings(first_frame=5))
    assert b("box", DeviceEvent("I", 0, 0), 0.0).stim_frame == -1
    b("box", DeviceEvent("V", 10_000, 0), 0.01)
    cm_per_tick = math.pi * 10.0 / 1000
    for k in range(11):  # 20 cm/s: ticks every 10 ms
        b("box", DeviceEvent("P", 10_000 * k, int(round(0.2 * k / cm_per_tick))), 0.01 * k)
    ev = b("box", DeviceEvent("I", 110_000, 1), 0.11)
    assert (ev.imaging_frame, ev.stim_frame, ev.t_flip, ev.t) == (6, 0, 0.01, 0.11)
    assert ev.behavior["running"] == pytest.approx(20.0, rel=0.02)
    ev = b("box", DeviceEvent("I", 200_000, 4), 5.0)  # pulses 2 and 3 lost; wheel still
    assert ev.imaging_frame == 9 and b.frames.lost == 2 and ev.behavior["running"] == 0.0
    b.device_restarted("box")
    ev = b("box", DeviceEvent("I", 50, 0), 5.1)  # box rebooted: count back to 0
    assert ev.imaging_frame == 10 and b.frames.restarts == 1


def test_first_seen_numbering() -> None:
    b = SerialSyncBuilder(SerialSettings(port="x", numbering="first_seen", first_frame=0))
    assert b("box", DeviceEvent("I", 0, 1234), 0).imaging_frame == 0
    assert b("box", DeviceEvent("I", 33_000, 1235), 0).imaging_frame == 1
    assert "running" not in b("box", DeviceEvent("I", 66_000, 1236), 0).behavior
