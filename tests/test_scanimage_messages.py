"""The pure parts of the ScanImage sources: message layouts, int16 mapping, frame numbering."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from cortexcast.daq.scanimage.frames import FrameFormatError, FrameNumbers, to_int16, to_uint16
from cortexcast.daq.scanimage.messages import (BRIDGE_HEADER, SI_HEADER, pack_bridge_message,
                                    pack_scanimage_message, parse_bridge_message,
                                    parse_scanimage_message)


def _planes(c: int = 2, h: int = 3, w: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-100, 30000, (c, h, w)).astype(np.int16)


def test_scanimage_layout_is_float64_header_then_int16_x_fastest() -> None:
    planes = _planes()
    data = pack_scanimage_message(42, 1.25, planes)
    assert SI_HEADER.size == 40 and struct.unpack_from("<5d", data) == (5.0, 3.0, 2.0, 1.25, 42.0)
    # x fastest: the 2nd pixel in the message is row 0, column 1 of channel 1
    assert struct.unpack_from("<h", data, 40 + 2)[0] == planes[0, 0, 1]
    for ch in (1, 2):
        f = parse_scanimage_message(data, ch)
        assert (f.number, f.t, f.channel) == (42, 1.25, ch)
        np.testing.assert_array_equal(f.pixels, planes[ch - 1])


@pytest.mark.parametrize("mutate, kind, words", [
    (lambda d: d[:20], "short", "shorter than the 40-byte header"),
    (lambda d: d[:-2], "truncated", "truncated"),
    (lambda d: d + b"\0" * 30, "extra", "30 bytes after"),
    (lambda d: struct.pack("<5d", 5, float("nan"), 2, 0, 1) + d[40:], "header", "NaN/inf in lines"),
    (lambda d: struct.pack("<5d", 5.5, 3, 2, 0, 1) + d[40:], "header", "pixels_per_line = 5.5"),
    (lambda d: struct.pack("<5d", 5, 3, 0, 0, 1) + d[40:], "header", "channels = 0.0"),
    (lambda d: struct.pack("<5d", 5, 3, 2, 0, -1) + d[40:], "header", "frame_number = -1"),
    (lambda d: struct.pack("<5d", 5, 3, 3, 0, 1) + d[40:], "truncated", "3 channel(s)"),
])
def test_bad_scanimage_messages_are_named(mutate, kind: str, words: str) -> None:
    good = pack_scanimage_message(1, 0.0, _planes())
    with pytest.raises(FrameFormatError, match=words.replace("(", r"\(").replace(")", r"\)")) \
            as err:
        parse_scanimage_message(mutate(good), 1)
    assert err.value.kind == kind


def test_a_channel_the_message_lacks_is_an_error() -> None:
    with pytest.raises(FrameFormatError, match="channel 3 requested but the message has 2"):
        parse_scanimage_message(pack_scanimage_message(1, 0.0, _planes()), 3)


def test_bridge_layout_round_trips_and_is_documented_bytes() -> None:
    px = _planes()[0]
    data = pack_bridge_message(7, 0.5, px, channel=2, last=True)
    assert len(data) == BRIDGE_HEADER.size + px.size * 2 == 40 + px.size * 2
    assert data[:4] == b"CCSI" and struct.unpack_from("<HHIIIIqd", data, 4) == (
        1, 1, 3, 5, 2, 1, 7, 0.5)
    f = parse_bridge_message(data)
    assert (f.number, f.t, f.channel, f.last) == (7, 0.5, 2, True)
    np.testing.assert_array_equal(f.pixels, px)
    u = parse_bridge_message(pack_bridge_message(1, 0.0, px.view(np.uint16)))
    assert u.pixels.dtype == np.uint16


@pytest.mark.parametrize("mutate, words", [
    (lambda d: b"XXXX" + d[4:], "not a cortexcast bridge message"),
    (lambda d: d[:4] + struct.pack("<H", 9) + d[6:], "bridge layout version 9"),
    (lambda d: d[:6] + struct.pack("<H", 7) + d[8:], "unknown pixel type 7"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d + b"\0\0", "too long"),
    (lambda d: d[:10], "shorter than the 40-byte"),
    (lambda d: d[:32] + struct.pack("<d", float("inf")) + d[40:], "timestamp inf"),
])
def test_bad_bridge_messages_are_named(mutate, words: str) -> None:
    with pytest.raises(FrameFormatError, match=words):
        parse_bridge_message(mutate(pack_bridge_message(1, 0.0, _planes()[0])))


def test_int16_mapping_is_lossless_for_the_non_negative_range() -> None:
    a = np.array([[-32768, -1, 0, 1, 32767]], np.int16)
    np.testing.assert_array_equal(to_uint16(a), [[0, 0, 0, 1, 32767]])
    np.testing.assert_array_equal(to_uint16(a, "offset"), [[0, 32767, 32768, 32769, 65535]])
    u = np.arange(0, 32768, 7, dtype=np.uint16)
    back, over = to_int16(u)
    assert over == 0 and np.array_equal(to_uint16(back), u)
    clipped, over = to_int16(np.array([40000, 5], np.uint16))
    assert over == 1 and clipped.tolist() == [32767, 5]
    with pytest.raises(FrameFormatError):
        to_uint16(np.zeros(3, np.float32))


def test_frame_numbers_never_republish_and_count_gaps(caplog) -> None:
    n = FrameNumbers("test")
    got = [n.accept(k) for k in (1, 2, 2, 3, 6, 5, 7, 1, 2, 4)]
    # 2 again and 5 after 6 are dropped; 1 after 7 is a new acquisition: indices go on
    assert got == [0, 1, None, 2, 5, None, 6, 7, 8, 10]
    assert n.counts == {"gaps": 2, "missing": 3, "duplicates": 2, "restarts": 1}
    assert "FRAME GAP: 2 frame(s) missing between ScanImage frames 3 and 6" in caplog.text


def test_joining_mid_acquisition_keeps_scanimage_numbering() -> None:
    n = FrameNumbers("test")
    assert [n.accept(k) for k in (500, 501)] == [499, 500]
    assert n.counts["gaps"] == 0
