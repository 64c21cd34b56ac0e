"""A command written to a serial port on each firing (pyserial).

For a microcontroller (Arduino, Teensy, a laser or valve driver) that acts on
a few bytes. The port is opened once; if a write fails (cable pulled, device
reset) the port is closed, the firing is reported as failed, and the next
firing reopens it, so an unplug and re-plug needs no restart.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from cortexcast.decoder.closed_loop.outputs.output import SerialCommandSettings, TriggerError

log = logging.getLogger("loop")


def _default_port_factory(settings: SerialCommandSettings) -> Any:
    try:
        import serial
    except ImportError as exc:
        raise TriggerError("the pyserial package is not installed: pip install 'cortexcast[hw]'") \
            from exc
    return serial.Serial(settings.port, settings.baud, timeout=0,
                         write_timeout=settings.write_timeout_s)


def _serial_errors() -> tuple[type[BaseException], ...]:
    try:
        import serial
    except ImportError:
        return (OSError,)
    return (serial.SerialException, OSError)


class SerialCommandOutput:
    def __init__(self, name: str, settings: SerialCommandSettings,
                 port_factory: Callable[[SerialCommandSettings], Any] = _default_port_factory
                 ) -> None:
        self.name = name
        self.settings = settings
        self.payload = settings.payload
        self._port_factory = port_factory
        self._port: Any = None
        self.sent = 0
        self.reopened = 0

    def _open_port(self) -> None:
        try:
            self._port = self._port_factory(self.settings)
        except _serial_errors() as exc:
            raise TriggerError(f"output {self.name}: cannot open serial port "
                               f"{self.settings.port}: {exc} (is it plugged in? "
                               "on Linux, is your user in the 'dialout' group?)") from exc

    def open(self) -> None:
        self._open_port()
        log.info("output %s: %r to %s at %d baud", self.name, self.payload,
                 self.settings.port, self.settings.baud)

    def fire(self) -> int:
        """Write the command; returns the monotonic time (ns) once it has left our buffer."""
        if self._port is None:  # the last write failed: the device may be back
            self._open_port()
            self.reopened += 1
            log.info("output %s: reopened %s", self.name, self.settings.port)
        try:
            n = self._port.write(self.payload)
            self._port.flush()
        except _serial_errors() as exc:
            self._drop_port()
            raise TriggerError(f"output {self.name}: write to {self.settings.port} failed: "
                               f"{exc} (will reopen on the next firing)") from exc
        t = time.monotonic_ns()
        if n is not None and n != len(self.payload):
            self._drop_port()
            raise TriggerError(f"output {self.name}: wrote {n} of {len(self.payload)} bytes "
                               f"to {self.settings.port}")
        self.sent += 1
        return t

    def _drop_port(self) -> None:
        port, self._port = self._port, None
        try:
            port.close()
        except _serial_errors():
            pass

    def close(self) -> None:
        if self._port is not None:
            self._drop_port()
