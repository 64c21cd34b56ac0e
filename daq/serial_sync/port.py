"""A serial line reader that survives unplug and re-plug (pyserial, one thread per port).

The thread opens the port, reads whatever arrived (a short read timeout so a stop request is
seen quickly), splits it into lines and hands each complete line on. When the port fails
(unplugged: pyserial raises SerialException / OSError) it drops the partial line it held
(counted), closes the port and re-opens it with a doubling back-off until the device is back
— the daq process keeps running, and the sync box's counts tell how many events were lost.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import serial

from cortexcast.daq.source import AcquisitionError

log = logging.getLogger(__name__)


def list_ports() -> list[str]:
    """Serial ports on this computer ([] if they cannot be listed)."""
    try:
        from serial.tools import list_ports as lp

        return [p.device for p in lp.comports()]
    except Exception:  # noqa: BLE001 - only for an error message
        return []


class SerialLineReader:
    """Reads ``\\n``-terminated lines from ``port`` in a thread; ``on_line(name, line)``.

    ``on_reconnect(name)`` is called after a re-open that followed a failure. Counters:
    ``lines``, ``partial`` (lines cut by an unplug), ``overlong`` (longer than ``max_line``),
    ``disconnects``, ``reconnects``.
    """

    def __init__(self, name: str, port: str, baudrate: int,
                 on_line: Callable[[str, bytes], None], *,
                 on_reconnect: Callable[[str], None] = lambda name: None,
                 read_timeout_s: float = 0.05, reconnect_min_s: float = 0.05,
                 reconnect_max_s: float = 2.0, max_line: int = 256,
                 serial_factory: Callable[..., Any] = serial.Serial) -> None:
        self.name, self.port, self.baudrate = name, port, baudrate
        self.on_line, self.on_reconnect = on_line, on_reconnect
        self.read_timeout_s = read_timeout_s
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.max_line = max_line
        self._factory = serial_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ser: Any = None
        self.connected = threading.Event()
        self.lines = self.partial = self.overlong = self.disconnects = self.reconnects = 0

    def status(self) -> dict[str, int]:
        p = f"serial_{self.name}"
        return {f"{p}_lines": self.lines, f"{p}_partial": self.partial,
                f"{p}_overlong": self.overlong, f"{p}_disconnects": self.disconnects,
                f"{p}_connected": int(self.connected.is_set())}

    def open(self) -> None:
        """Open the port now; AcquisitionError naming the port (and the ports present)."""
        try:
            self._ser = self._factory(self.port, self.baudrate, timeout=self.read_timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            present = ", ".join(list_ports()) or "none found"
            raise AcquisitionError(
                f"{self.name}: cannot open serial port {self.port!r} ({exc}); ports present: "
                f"{present}; check [daq.serial] port and that the device is plugged in") from exc
        self.connected.set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"serial-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close()

    def _close(self) -> None:
        ser, self._ser = self._ser, None
        self.connected.clear()
        if ser is not None:
            try:
                ser.close()
            except (serial.SerialException, OSError):
                pass

    def _run(self) -> None:
        delay = self.reconnect_min_s
        failed = False
        while not self._stop.is_set():
            if self._ser is None:
                try:
                    self.open()
                except AcquisitionError as exc:
                    if not failed:
                        log.warning("%s; retrying every <= %g s", exc, self.reconnect_max_s)
                        failed = True
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.reconnect_max_s)
                    continue
                if failed:
                    self.reconnects += 1
                    log.warning("%s: serial port %s is back (reconnect %d)", self.name,
                                self.port, self.reconnects)
                    self.on_reconnect(self.name)
                failed, delay = False, self.reconnect_min_s
            try:
                self._read_lines()
            except (serial.SerialException, OSError) as exc:
                self.disconnects += 1
                failed = True
                log.warning("%s: serial port %s failed (%s): unplugged? reconnecting",
                            self.name, self.port, exc)
                self._close()

    def _read_lines(self) -> None:
        """Read until the port fails or stop is requested."""
        buf = bytearray()
        skipping = False  # inside an overlong line: drop bytes up to its newline
        try:
            while not self._stop.is_set():
                chunk = self._ser.read(max(1, self._ser.in_waiting))
                if not chunk:
                    continue
                buf += chunk
                *lines, rest = buf.split(b"\n")
                buf = bytearray(rest)
                for line in lines:
                    if skipping or len(line) > self.max_line:
                        self.overlong += not skipping
                        skipping = False
                        continue
                    self.lines += 1
                    self.on_line(self.name, bytes(line))
                if len(buf) > self.max_line:  # no newline in sight: skip to the next one
                    self.overlong += not skipping
                    skipping = True
                    buf.clear()
        except BaseException:
            if buf:
                self.partial += 1
            raise
