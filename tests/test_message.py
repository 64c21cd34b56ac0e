"""The wire format: round trip, zero copy, and every kind of bad message."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from cortexcast.stream.message import (
    SCHEMA_VERSION,
    BufferError_,
    DtypeError,
    HeaderError,
    Message,
    MessageError,
    SchemaVersionError,
    decode,
    encode,
)


def _msg(**kw) -> Message:
    base = dict(
        topic="frames", kind="frame", seq=7, source="daq", t_acq=1.25,
        arrays=(np.arange(12, dtype=np.uint16).reshape(3, 4), np.ones(5, np.float32)),
        stamps=(("daq.acq", 10), ("daq.pub", 20)), meta={"imaging_frame": 7},
    )
    base.update(kw)
    return Message(**base)


def test_round_trip_preserves_everything() -> None:
    msg = _msg()
    back = decode([bytes(p) for p in encode(msg)])
    assert (back.topic, back.kind, back.seq, back.source, back.t_acq) == ("frames", "frame", 7, "daq", 1.25)
    assert back.stamps == msg.stamps
    assert back.meta == {"imaging_frame": 7}
    for a, b in zip(msg.arrays, back.arrays):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_encode_does_not_copy_contiguous_arrays() -> None:
    arr = np.zeros((64, 64), np.uint16)
    parts = encode(_msg(arrays=(arr,)))
    assert isinstance(parts[2], memoryview)
    arr[0, 0] = 99  # the buffer on the wire *is* the array
    assert np.frombuffer(parts[2], np.uint16)[0] == 99


def test_decode_is_zero_copy_view() -> None:
    parts = [bytes(p) for p in encode(_msg())]
    back = decode(parts)
    assert not back.arrays[0].flags.owndata


def test_non_contiguous_array_is_sent_correctly() -> None:
    arr = np.arange(100, dtype=np.float32).reshape(10, 10)[:, ::2]
    back = decode([bytes(p) for p in encode(_msg(arrays=(arr,)))])
    np.testing.assert_array_equal(back.arrays[0], arr)


def test_stamped_appends() -> None:
    m = _msg().stamped("decoder.recv", 30)
    assert m.stamps[-1] == ("decoder.recv", 30)
    assert m.stamp("daq.pub") == 20 and m.stamp("nope") is None


def _header(**kw) -> bytes:
    h = {"v": SCHEMA_VERSION, "kind": "frame", "seq": 0, "src": "x", "t": 0.0, "stamps": [],
         "arrays": [{"dtype": "<u2", "shape": [2, 2]}], "meta": {}}
    h.update(kw)
    return msgpack.packb(h)


@pytest.mark.parametrize(
    "frames, error",
    [
        ([b"frames"], MessageError),
        ([b"frames", b"\xc1garbage"], HeaderError),
        ([b"frames", msgpack.packb([1, 2, 3])], HeaderError),
        ([b"\xff\xfe", _header(), bytes(8)], HeaderError),
        ([b"frames", _header(v=99), bytes(8)], SchemaVersionError),
        ([b"frames", _header(seq="x"), bytes(8)], MessageError),
        ([b"frames", _header(kind="bogus"), bytes(8)], MessageError),
        ([b"frames", _header(), bytes(7)], BufferError_),
        ([b"frames", _header()], BufferError_),
        ([b"frames", _header(), bytes(8), bytes(8)], BufferError_),
        ([b"frames", _header(arrays=[{"dtype": "|O", "shape": [1]}]), bytes(8)], DtypeError),
        ([b"frames", _header(arrays=[{"dtype": "nonsense", "shape": [1]}]), bytes(8)], DtypeError),
        ([b"frames", _header(arrays=[{"dtype": "<u2", "shape": [-2, -2]}]), bytes(8)], DtypeError),
    ],
)
def test_bad_messages_raise_message_error(frames, error) -> None:
    with pytest.raises(error):
        decode(frames)


def test_object_arrays_cannot_be_sent() -> None:
    with pytest.raises(DtypeError):
        _msg(arrays=(np.array([object()]),))


@pytest.mark.parametrize("patch", [
    {"stamps": [["daq.pub", float("inf")]]},
    {"t": "soon"},
    {"arrays": [{"dtype": "<u2", "shape": [float("inf")]}]},
    {"arrays": [{"dtype": "<u2", "shape": [2**32, 2**32]}]},
    {"arrays": [{"dtype": "<u2", "shape": [2**62, 2**62, 16]}]},
])
def test_hostile_headers_are_message_errors(patch) -> None:
    with pytest.raises(MessageError):
        decode([b"frames", _header(**patch), bytes(8)])


def test_big_endian_arrays_arrive_in_native_order() -> None:
    arr = np.arange(6, dtype=">u2").reshape(2, 3)
    back = decode([bytes(p) for p in encode(_msg(arrays=(arr,)))])
    assert back.arrays[0].dtype.isnative
    np.testing.assert_array_equal(back.arrays[0], arr)


def test_meta_int_rejects_non_integers() -> None:
    from cortexcast.stream.message import meta_int

    assert meta_int(_msg(), "imaging_frame") == 7
    assert meta_int(_msg(), "absent", -1) == -1
    for bad in ("x", None, 1.5, True):
        with pytest.raises(MessageError):
            meta_int(_msg(meta={"imaging_frame": bad}), "imaging_frame")
