"""Frame sources that subscribe to a ZeroMQ PUB socket: ScanImage's own stream and our bridge.

Both are :class:`~cortexcast.daq.source.AcquisitionSource` s yielding :class:`ImagingFrame` s
with ScanImage's frame number (0-based index, see :class:`FrameNumbers`) and
timestamp. The SUB socket connects when :meth:`events` starts — after the daq's
own subscribers are ready — and ZeroMQ reconnects by itself when ScanImage
restarts its publisher (it does at every acquisition). A message that does not
parse is counted by fault, logged once per fault, and skipped.

The stream carries no ScanImage header; ``header`` points at one (a TIFF ScanImage wrote
with the same settings, e.g. the first file of the acquisition, or a text file of its
``SI.* = value`` lines). With it the source checks the channel and the frame size and
builds mROI / volume frames like the TIFF follower (``plane``, ``mroi_roi``); the bridge
uses it to refuse what it cannot send (it sends the first ROI of the first plane).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import zmq

from cortexcast.core.config import path_field
from cortexcast.daq.scanimage.frames import (FrameFormatError, FrameNumbers, FrameSourceSettings,
                                  IdleClock, to_uint16)
from cortexcast.daq.scanimage.header import HeaderError, ScanImageHeader
from cortexcast.daq.scanimage.layout import FrameLayout
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
    header: str = path_field("")
    """A ScanImage TIFF of this acquisition's settings, or a text file of its ``SI.*``
    lines: checked against the messages and the decoder; "" = none (mROI/volumes unknown)."""
    plane: int = 0
    """Volumes (needs ``header``): 0 = all planes side by side, k = plane k only."""
    mroi_roi: int = 0
    """mROI (needs ``header``): 0 = all ROI strips side by side, k = ROI k only."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_endpoint(self.endpoint, self.hwm)
        if self.plane < 0 or self.mroi_roi < 0:
            raise ValueError("plane and mroi_roi must be >= 0 (0 = all)")


@dataclass(frozen=True)
class BridgeSettings(FrameSourceSettings):
    """Frames from daq/matlab/cortexcast_frameAcquired.m (table [daq.bridge])."""

    endpoint: str = "tcp://127.0.0.1:5560"
    """Where the MATLAB user function publishes: tcp://<ScanImage PC>:<its port>."""
    hwm: int = 1000
    header: str = path_field("")
    """A ScanImage TIFF or ``SI.*`` text file of this acquisition's settings: mROI and
    volumes (which the bridge cannot send whole) are refused up front; "" = none."""

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
        self.header: ScanImageHeader | None = None
        self._layout: FrameLayout | None = None

    def __enter__(self) -> ZmqFrameSource:
        self._load_header()
        self._ctx = zmq.Context()
        self._closed = False
        return self

    def _load_header(self) -> None:
        path = getattr(self.settings, "header", "")
        if not path or self.header is not None:
            return
        header = ScanImageHeader.from_file(path)
        if isinstance(self.settings, BridgeSettings):
            if header.mroi or header.volumetric:
                raise HeaderError(f"{path}: {header.describe()}: the MATLAB bridge sends the "
                                  "first ROI of the first plane only; use source = 'tiff' "
                                  "(plane / mroi_roi) or the Premium stream, or acquire a "
                                  "single plane without mROI")
            self.header = header
            return
        if self.settings.channel > len(header.channels_saved):
            raise HeaderError(f"{self.what}: channel {self.settings.channel} requested "
                              f"([daq.scanimage] channel) but ScanImage saves "
                              f"{list(header.channels_saved)} ({path})")
        self.header = header
        self._layout = FrameLayout(header, plane=self.settings.plane,  # type: ignore[union-attr]
                                   mroi_roi=self.settings.mroi_roi,  # type: ignore[union-attr]
                                   first=self.settings.first_frame_number,
                                   table="[daq.scanimage]")
        log.info("%s: ScanImage header from %s: %s", self.what, path, header.describe())

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

    def status(self) -> dict[str, int | str]:
        """Counters for the daq's heartbeat and stats file (``si_header_epoch``: the start
        of the acquisition the ``header`` file comes from, "" without one)."""
        out: dict[str, int | str] = {"si_messages": self.received,
                                     "si_bad_messages": sum(self.bad.values()),
                                     **self.numbers.status("si")}
        if self.header is not None:
            out["si_header_epoch"] = self.header.epoch or ""
        if self._layout is not None:
            out["si_dropped_volumes"] = self._layout.dropped_volumes
        return out

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
            number, t, pixels = parsed.number, parsed.t, parsed.pixels
            if self._layout is not None:
                out = self._layout.feed(number, t, pixels)
                if out is None:
                    return None
                number, t, pixels = out
        except FrameFormatError as exc:
            kind = exc.kind
            if not self.bad:
                self._first_error = str(exc)
            if not self.bad[kind]:
                log.error("%s: skipping a bad message: %s (further ones of this kind are "
                          "counted, not logged)", self.what, exc)
            self.bad[kind] += 1
            return None
        index = self.numbers.accept(number)
        if index is None:
            return None
        meta = {"t_mono_ns": now_ns, "scanimage_frame": parsed.number, "channel": parsed.channel}
        if self._layout is not None and self._layout.header.volumetric:
            meta["scanimage_volume"] = number
        return ImagingFrame(index, t, to_uint16(pixels, self.settings.int16), meta)


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
