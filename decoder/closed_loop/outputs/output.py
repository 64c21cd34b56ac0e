"""Trigger outputs: what a closed-loop rule drives when it fires.

One small interface, :class:`TriggerOutput`, with interchangeable backends:

* ``ni-ttl``  – a TTL pulse on an NI digital line (``daq/triggers/ni_ttl.py``);
* ``serial``  – a command written to a serial port (``daq/triggers/serial_command.py``);
* ``log``     – the simulated output: it does nothing but say it fired (for the simulated rig).

Each output is one ``[[loop.outputs]]`` table of a rig config::

    [[loop.outputs]]
    name = "laser"
    kind = "ni-ttl"
    ni = { line = "Dev1/port0/line0", pulse_ms = 5.0 }

    [[loop.outputs]]
    name = "arduino"
    kind = "serial"
    serial = { port = "/dev/ttyACM0", baud = 115200, command = "FIRE\\n" }

:meth:`TriggerOutput.fire` may block (a pulse lasts its width, a serial write
waits for the port): the closed-loop process calls it only from the output's
own worker thread (``daq/triggers/worker.py``), never from the thread that
receives reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from cortexcast.daq.source import AcquisitionError


class TriggerError(AcquisitionError):
    """An output could not be opened or fired (device missing, driver absent, port gone).

    Vendor errors (``nidaqmx.errors.DaqError``, ``serial.SerialException``) are chained.
    """


@dataclass(frozen=True)
class NiTtlSettings:
    line: str = "Dev1/port0/line0"
    """NI digital output line, as NI MAX names it (device/port/line)."""
    pulse_ms: float = 5.0
    """How long the line stays high (ms); software timed, so good to about a millisecond."""
    active_high: bool = True
    """True: idle low, pulse high. False: idle high, pulse low."""

    def __post_init__(self) -> None:
        if self.line.count("/") < 1 or "line" not in self.line:
            raise ValueError(f"ni.line {self.line!r} is not a digital line like 'Dev1/port0/line0'")
        if not 0 < self.pulse_ms <= 1000:
            raise ValueError(f"ni.pulse_ms must be in (0, 1000], got {self.pulse_ms}")

    @property
    def device(self) -> str:
        return self.line.split("/", 1)[0]


@dataclass(frozen=True)
class SerialCommandSettings:
    port: str = ""
    """Serial device, e.g. /dev/ttyACM0 or COM3."""
    baud: int = 115200
    command: str = ""
    """Text to send on each firing (UTF-8; TOML escapes such as \\n work)."""
    command_hex: str = ""
    """Or raw bytes in hex ("A5 01 FF"), for devices with a binary protocol."""
    write_timeout_s: float = 0.5
    """A write that takes longer fails (and the port is reopened on the next firing)."""

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("serial.port is required (e.g. '/dev/ttyACM0' or 'COM3')")
        if self.baud <= 0:
            raise ValueError(f"serial.baud must be positive, got {self.baud}")
        if bool(self.command) == bool(self.command_hex):
            raise ValueError("give exactly one of serial.command (text) or serial.command_hex")
        if self.command_hex:
            try:
                bytes.fromhex(self.command_hex)
            except ValueError as exc:
                raise ValueError(f"serial.command_hex {self.command_hex!r} is not hex: {exc}") \
                    from exc
        if not 0 < self.write_timeout_s <= 10:
            raise ValueError(f"serial.write_timeout_s must be in (0, 10], got "
                             f"{self.write_timeout_s}")

    @property
    def payload(self) -> bytes:
        return bytes.fromhex(self.command_hex) if self.command_hex else self.command.encode()


@dataclass(frozen=True)
class OutputSettings:
    name: str
    """What rules call this output (``output = "<name>"``)."""
    kind: Literal["ni-ttl", "serial", "log"] = "log"
    ni: NiTtlSettings = field(default_factory=NiTtlSettings)
    """For kind = "ni-ttl"."""
    serial: SerialCommandSettings | None = None
    """For kind = "serial"."""
    queue: int = 8
    """Firings that may wait for this output; beyond that they are dropped (and logged)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an output needs a name")
        if self.kind == "serial" and self.serial is None:
            raise ValueError(f"output {self.name!r}: kind 'serial' needs a serial table "
                             "(port, baud, command)")
        if self.queue < 1:
            raise ValueError(f"output {self.name!r}: queue must be >= 1")

    def describe(self) -> str:
        if self.kind == "ni-ttl":
            return f"TTL {self.ni.pulse_ms:g} ms on {self.ni.line}"
        if self.kind == "serial" and self.serial is not None:
            return f"{self.serial.payload!r} to {self.serial.port} at {self.serial.baud} baud"
        return "log only (simulated)"


@runtime_checkable
class TriggerOutput(Protocol):
    """A device a firing drives. ``fire`` returns when the output asserted
    (``time.monotonic_ns()`` of the TTL edge / the bytes written)."""

    name: str

    def open(self) -> None: ...

    def fire(self) -> int: ...

    def close(self) -> None: ...
