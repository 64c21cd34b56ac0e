"""Byte layouts of the two ZeroMQ frame messages: ScanImage's own stream and our bridge.

Each layout has one pure ``parse_*`` function (bytes -> :class:`ParsedFrame`,
or :class:`~cortexcast.daq.scanimage.frames.FrameFormatError` naming what is wrong) and a
``pack_*`` function that writes exactly those bytes (used by the stand-ins and
tests). All numbers are little-endian. See docs/scanimage.md for which parts of
ScanImage's layout are verified and which are assumed.

ScanImage Premium stream (one message per frame, all logged channels)::

    float64 pixels_per_line, lines_per_frame, channels, timestamp_s, frame_number
    int16   pixels[channels][lines_per_frame][pixels_per_line]     (x fastest)

cortexcast bridge, version 1 (one message per frame, one channel; written by
daq/matlab/cortexcast_frameAcquired.m)::

    0  char[4] "CCSI"        4  uint16 version = 1     6  uint16 pixel type (1 int16, 2 uint16)
    8  uint32 lines          12 uint32 pixels per line 16 uint32 ScanImage channel number
    20 uint32 flags (bit 0: last frame of the acquisition)
    24 int64  frame number (frameNumberAcqMode, 1-based)
    32 float64 timestamp (s since the acquisition mode started)
    40 pixels[lines][pixels_per_line]                  (x fastest)
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from cortexcast.daq.scanimage.frames import FrameFormatError

MAX_SIDE = 16384
MAX_CHANNELS = 64

SI_HEADER = struct.Struct("<5d")
BRIDGE_MAGIC = b"CCSI"
BRIDGE_VERSION = 1
BRIDGE_HEADER = struct.Struct("<4sHHIIIIqd")
BRIDGE_DTYPES = {1: np.dtype("<i2"), 2: np.dtype("<u2")}
FLAG_LAST = 1


@dataclass(frozen=True)
class ParsedFrame:
    """One channel of one frame: ScanImage's frame number and timestamp, (H, W) pixels."""

    number: int
    t: float
    pixels: np.ndarray
    channel: int
    last: bool = False


def _whole(value: float, name: str, lo: int, hi: int) -> int:
    if not math.isfinite(value) or value != int(value) or not lo <= value <= hi:
        raise FrameFormatError(f"header {name} = {value!r} is not a whole number in {lo}..{hi}",
                               "header")
    return int(value)


def parse_scanimage_message(data: bytes | memoryview, channel: int = 1) -> ParsedFrame:
    """Channel ``channel`` (1 = the first channel in the message) of a ScanImage stream frame."""
    buf = memoryview(data).cast("B")
    if len(buf) < SI_HEADER.size:
        raise FrameFormatError(f"message of {len(buf)} bytes is shorter than the "
                               f"{SI_HEADER.size}-byte header", "short")
    ppl, lines, chans, t, number = SI_HEADER.unpack_from(buf)
    bad = [n for n, v in zip(("pixels_per_line", "lines_per_frame", "channels", "timestamp",
                              "frame_number"), (ppl, lines, chans, t, number))
           if not math.isfinite(v)]
    if bad:
        raise FrameFormatError(f"header has NaN/inf in {', '.join(bad)}", "header")
    w = _whole(ppl, "pixels_per_line", 1, MAX_SIDE)
    h = _whole(lines, "lines_per_frame", 1, MAX_SIDE)
    c = _whole(chans, "channels", 1, MAX_CHANNELS)
    n = _whole(number, "frame_number", 0, 2**53)
    plane = h * w * 2
    got = len(buf) - SI_HEADER.size
    if got < c * plane:
        raise FrameFormatError(f"truncated: header says {c} channel(s) of {h}x{w} int16 = "
                               f"{c * plane} bytes of pixels, message has {got}", "truncated")
    if got > c * plane:
        raise FrameFormatError(f"{got - c * plane} bytes after the {c} channel(s) of {h}x{w} "
                               "pixels the header announces (more channels than it says?)", "extra")
    if not 1 <= channel <= c:
        raise FrameFormatError(f"channel {channel} requested but the message has {c} "
                               "channel(s)", "channel")
    start = SI_HEADER.size + (channel - 1) * plane
    pixels = np.frombuffer(buf, "<i2", h * w, start).reshape(h, w)
    return ParsedFrame(n, float(t), pixels, channel)


def pack_scanimage_message(number: int, t: float, channels: np.ndarray) -> bytes:
    """The bytes ScanImage publishes for ``channels`` (C, H, W) int16 (or (H, W): one)."""
    a = np.asarray(channels)
    a = a[None] if a.ndim == 2 else a
    if a.dtype != np.int16 or a.ndim != 3:
        raise ValueError("channels must be int16 (C, H, W) or (H, W)")
    c, h, w = a.shape
    return SI_HEADER.pack(w, h, c, t, number) + np.ascontiguousarray(a, "<i2").tobytes()


def parse_bridge_message(data: bytes | memoryview) -> ParsedFrame:
    """A bridge frame (layout above); FrameFormatError naming the fault."""
    buf = memoryview(data).cast("B")
    if len(buf) < BRIDGE_HEADER.size:
        raise FrameFormatError(f"message of {len(buf)} bytes is shorter than the "
                               f"{BRIDGE_HEADER.size}-byte bridge header", "short")
    magic, version, ptype, h, w, channel, flags, number, t = BRIDGE_HEADER.unpack_from(buf)
    if magic != BRIDGE_MAGIC:
        raise FrameFormatError(f"not a cortexcast bridge message (starts {bytes(magic)!r}, "
                               f"expected {BRIDGE_MAGIC!r})", "magic")
    if version != BRIDGE_VERSION:
        raise FrameFormatError(f"bridge layout version {version}; this cortexcast reads "
                               f"version {BRIDGE_VERSION} (update daq/matlab/ on the rig)",
                               "version")
    if ptype not in BRIDGE_DTYPES:
        raise FrameFormatError(f"unknown pixel type {ptype} (1: int16, 2: uint16)", "header")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise FrameFormatError(f"frame size {h}x{w} out of range 1..{MAX_SIDE}", "header")
    if not math.isfinite(t) or number < 0:
        raise FrameFormatError(f"bad frame number {number} or timestamp {t}", "header")
    got = len(buf) - BRIDGE_HEADER.size
    if got != h * w * 2:
        what = "truncated" if got < h * w * 2 else "too long"
        raise FrameFormatError(f"{what}: header says {h}x{w} 16-bit pixels = {h * w * 2} "
                               f"bytes, message has {got}", what.split()[0])
    pixels = np.frombuffer(buf, BRIDGE_DTYPES[ptype], h * w, BRIDGE_HEADER.size).reshape(h, w)
    return ParsedFrame(int(number), float(t), pixels, int(channel), bool(flags & FLAG_LAST))


def pack_bridge_message(number: int, t: float, pixels: np.ndarray, channel: int = 1,
                        last: bool = False) -> bytes:
    """The bytes cortexcast_frameAcquired.m sends for one (H, W) int16/uint16 frame."""
    a = np.asarray(pixels)
    codes = {np.dtype(np.int16): 1, np.dtype(np.uint16): 2}
    if a.ndim != 2 or a.dtype not in codes:
        raise ValueError("pixels must be a 2-D int16 or uint16 array")
    h, w = a.shape
    head = BRIDGE_HEADER.pack(BRIDGE_MAGIC, BRIDGE_VERSION, codes[a.dtype], h, w, channel,
                              FLAG_LAST if last else 0, number, t)
    return head + np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
