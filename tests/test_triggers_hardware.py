"""Trigger outputs on real devices: skipped unless pytest runs with --hardware.

A rig operator runs them with the device named in the environment::

    CORTEXCAST_NI_LINE=Dev1/port0/line0 pytest --hardware tests/test_triggers_hardware.py
    CORTEXCAST_SERIAL_PORT=/dev/ttyACM0 CORTEXCAST_SERIAL_COMMAND='T\\n' \\
        pytest --hardware tests/test_triggers_hardware.py

Watch the line on a scope (three 5 ms pulses) or the device react to three commands.
"""

from __future__ import annotations

import os

import pytest

from cortexcast.decoder.closed_loop.outputs.factory import make_output
from cortexcast.decoder.closed_loop.outputs.output import NiTtlSettings, OutputSettings, SerialCommandSettings

pytestmark = pytest.mark.hardware


def _fire_three(settings: OutputSettings) -> None:
    out = make_output(settings)
    out.open()
    try:
        edges = [out.fire() for _ in range(3)]
    finally:
        out.close()
    assert edges == sorted(edges)


def test_ni_ttl_pulses_on_a_real_line() -> None:
    line = os.environ.get("CORTEXCAST_NI_LINE")
    if not line:
        pytest.skip("set CORTEXCAST_NI_LINE (e.g. Dev1/port0/line0)")
    _fire_three(OutputSettings("ni", "ni-ttl", ni=NiTtlSettings(line=line, pulse_ms=5.0)))


def test_serial_command_on_a_real_port() -> None:
    port = os.environ.get("CORTEXCAST_SERIAL_PORT")
    if not port:
        pytest.skip("set CORTEXCAST_SERIAL_PORT (e.g. /dev/ttyACM0)")
    command = os.environ.get("CORTEXCAST_SERIAL_COMMAND", "T\n").encode().decode("unicode_escape")
    _fire_three(OutputSettings("serial", "serial", serial=SerialCommandSettings(
        port=port, baud=int(os.environ.get("CORTEXCAST_SERIAL_BAUD", "115200")),
        command=command)))
