"""Frame sources that subscribe to a ZeroMQ PUB socket: ScanImage's own stream and our bridge.

Both are :class:`~cortexcast.daq.source.AcquisitionSource` s yielding :class:`ImagingFrame` s
with ScanImage's frame number (0-based index, see :class:`FrameNumbers`) and
timestamp. The SUB socket connects when :meth:`events` starts — after the daq's
own subscribers are ready — and ZeroMQ reconnects by itself when ScanImage
restarts its publisher (it does at every acquisition). A message that does not
parse is counted by fault, logged once per fault, and skipped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import zmq

from cortexcast.daq.scanimage.frames import (FrameFormatError, FrameNumbers, FrameSourceSettings,
                                  IdleClock, to_uint16)
from cortexcast.daq.scanimage.messages import ParsedFrame, parse_bridge_message, parse_scanimage_message
from cortexcast.core.events import ImagingFrame
from cortexcast.daq.source import AcquisitionError, AcquisitionSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanImageStreamSettings(FrameSourceSettings):
    """ScanImage Premium's own ZeroMQ stream (table [daq.scanimage])."""

    endpoint: str = "tcp://127.0.0.1:65179"
    """ScanImage's publisher: tcp://<ScanImage PC>:<port of hSI.hScan2D.hAcq.ZMQAddress>."""
    hwm: int = 1000
    """Frames queued in the receive socket before ZeroMQ drops (about 30 s at 30 Hz)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_endpoint(self.endpoint, self.hwm)


@dataclass(frozen=True)
class BridgeSettings(FrameSourceSettings):
    """Frames from daq/matlab/cortexcast_frameAcquired.m (table [daq.bridge])."""

    endpoint: str = "tcp://127.0.0.1:5560"
    """Where the MATLAB user function publishes: tcp://<ScanImage PC>:<its port>."""
    hwm: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_endpoint(self.endpoint, self.hwm)


def _check_endpoint(endpoint: str, hwm: int) -> None:
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"endpoint {endpoint!r} must start with tcp://, ipc:// or inproc://")
    if hwm < 1:
        raise ValueError(f"hwm must be >= 1, got {hwm}")


class ZmqFrameSource(AcquisitionSource):
    """Subscribes to ``endpoint`` and yields the frames ``parse`` finds in its messages."""

    def __init__(self, settings: ScanImageStreamSettings | BridgeSettings, name: str,
                 parse: Callable[[memoryview], ParsedFrame]) -> None:
        self.settings, self.name, self._parse = settings, name, parse
        self.what = f"{name} at {settings.endpoint}"
        self.numbers = FrameNumbers(self.what, settings.first_frame_number)
        self.bad: Counter[str] = Counter()
        self.received = 0
        self._first_error = ""
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._closed = False

    def __enter__(self) -> ZmqFrameSource:
        self._ctx = zmq.Context()
        self._closed = False
        return self

    def stop(self) -> None:
        """Make :meth:`events` return within one poll; safe from any thread (touches no
        socket or file: call :meth:`close` from the thread that ran :meth:`events`)."""
        self._closed = True

    def close(self) -> None:
        self._closed = True
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self.received:
            log.info("%s: %d messages, bad: %s, frame numbers: %s", self.what, self.received,
                     dict(self.bad) or "none", self.numbers.counts)

    def status(self) -> dict[str, int]:
        """Counters for the daq's heartbeat and stats file."""
        return {"si_messages": self.received, "si_bad_messages": sum(self.bad.values()),
                **self.numbers.status("si")}

    def _connect(self) -> zmq.Socket:
        if self._ctx is None:
            self.__enter__()
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self.settings.hwm)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.settings.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise AcquisitionError(f"{self.what}: cannot connect: {exc}") from exc
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock = sock
        return sock

    def events(self) -> Iterator[ImagingFrame]:
        sock = self._connect()
        log.info("%s: subscribed (channel %d)", self.what, self.settings.channel)
        idle = IdleClock(self.what, self.settings.timeout_s, self.settings.end_after_idle_s)
        while not self._closed:
            if sock.poll(100):
                parts = sock.recv_multipart(copy=False)
                now = time.monotonic_ns()
                self.received += 1
                frame = self._frame(parts, now)
                if frame is not None:
                    idle.frame()
                    yield frame
                    continue
            if self._idle_end(idle):
                return

    def _idle_end(self, idle: IdleClock) -> bool:
        try:
            return idle.should_end()
        except AcquisitionError as exc:
            if self.bad:  # messages came, none usable: say why
                raise AcquisitionError(f"{exc}; {sum(self.bad.values())} message(s) arrived "
                                       f"but none was usable, e.g. {self._first_error}") from None
            raise

    def _frame(self, parts: list[zmq.Frame], now_ns: int) -> ImagingFrame | None:
        data = parts[0].buffer if len(parts) == 1 else memoryview(b"".join(p.bytes for p in parts))
        try:
            parsed = self._parse(data)
        except FrameFormatError as exc:
            kind = exc.kind
            if not self.bad:
                self._first_error = str(exc)
            if not self.bad[kind]:
                log.error("%s: skipping a bad message: %s (further ones of this kind are "
                          "counted, not logged)", self.what, exc)
            self.bad[kind] += 1
            return None
        index = self.numbers.accept(parsed.number)
        if index is None:
            return None
        return ImagingFrame(index, parsed.t, to_uint16(parsed.pixels, self.settings.int16),
                            {"t_mono_ns": now_ns, "scanimage_frame": parsed.number,
                             "channel": parsed.channel})


def scanimage_stream_source(settings: ScanImageStreamSettings) -> ZmqFrameSource:
    """ScanImage Premium's own ZeroMQ stream as an AcquisitionSource."""
    return ZmqFrameSource(settings, "ScanImage stream",
                          lambda data: parse_scanimage_message(data, settings.channel))


def bridge_source(settings: BridgeSettings) -> ZmqFrameSource:
    """Frames from the MATLAB bridge user function as an AcquisitionSource."""

    def parse(data: memoryview) -> ParsedFrame:
        frame = parse_bridge_message(data)
        if frame.channel != settings.channel:
            raise FrameFormatError(f"channel {frame.channel} received, {settings.channel} "
                                   "configured ([daq.bridge] channel)", "channel")
        return frame

    return ZmqFrameSource(settings, "ScanImage bridge", parse)
