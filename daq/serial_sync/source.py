"""The serial sync source: sync box (+ optional wheel encoder) lines -> SyncEvents.

Reader threads (one per port) put complete lines on a queue; :meth:`SerialSyncSource.events`
parses them (garbage counted and skipped) and turns them into SyncEvents with
:class:`~cortexcast.daq.serial_sync.builder.SerialSyncBuilder`. Unplugging a device is survived (the
reader reconnects); only a port that cannot be opened at start is an error (unless
``require_device = false``).
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any, Callable, Iterator

import serial

from cortexcast.daq.serial_sync.builder import SerialSyncBuilder
from cortexcast.daq.serial_sync.port import SerialLineReader
from cortexcast.daq.serial_sync.protocol import LineParser
from cortexcast.daq.serial_sync.settings import SerialSettings
from cortexcast.core.events import SyncEvent
from cortexcast.daq.source import AcquisitionSource

log = logging.getLogger(__name__)
_STOP = ("", b"", 0.0)
_RECONNECT = b"\x00reconnect"


class SerialSyncSource(AcquisitionSource):
    """Sync events from a serial sync box (context manager; ``events()`` until ``close()``)."""

    def __init__(self, settings: SerialSettings, *,
                 serial_factory: Callable[..., Any] = serial.Serial,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        s = self.s = settings
        if not s.port:
            raise ValueError("[daq.serial] port is required (e.g. '/dev/ttyACM0' or 'COM3')")
        self.builder = SerialSyncBuilder(s)
        kinds = (s.imaging_kind, s.flip_kind, s.position_kind)
        self.parser = LineParser(s.pattern, kinds, "serial")
        self._monotonic = monotonic
        self._queue: queue.SimpleQueue[tuple[str, bytes, float]] = queue.SimpleQueue()
        ports = {"syncbox": s.port, **({"encoder": s.encoder_port} if s.encoder_port else {})}
        self.readers = [
            SerialLineReader(name, port, s.baudrate, self._on_line,
                             on_reconnect=self._on_reconnect, read_timeout_s=s.read_timeout_s,
                             reconnect_min_s=s.reconnect_min_s, reconnect_max_s=s.reconnect_max_s,
                             max_line=s.max_line, serial_factory=serial_factory)
            for name, port in ports.items()]
        self._closed = False

    def _on_line(self, name: str, line: bytes) -> None:
        self._queue.put((name, line, self._monotonic()))

    def _on_reconnect(self, name: str) -> None:
        self._queue.put((name, _RECONNECT, self._monotonic()))

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.builder.status(), "serial_garbage": self.parser.garbage}
        for r in self.readers:
            out.update(r.status())
        return out

    def __enter__(self) -> SerialSyncSource:
        self._closed = False
        for r in self.readers:
            if self.s.require_device:
                r.open()
            r.start()
        return self

    def close(self) -> None:
        """Stop the readers and end :meth:`events` (idempotent, from any thread)."""
        self._closed = True
        self._queue.put(_STOP)
        for r in self.readers:
            r.stop()

    def events(self) -> Iterator[SyncEvent]:
        while not self._closed:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is _STOP:
                break
            name, line, host_t = item
            if line == _RECONNECT:
                self.builder.device_restarted(name)
                continue
            ev = self.parser(line)
            if ev is None:
                continue
            out = self.builder(name, ev, host_t)
            if out is not None:
                yield out
