"""Hostile input at the wire format (issue 10, item 1).

``decode`` raises nothing but :class:`MessageError` whatever the bytes; a recording
holding such a record fails with a RecordingError/AcquisitionError, not a traceback
from numpy; a live Subscriber counts such messages and goes on.
"""

from __future__ import annotations

import random
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortexcast.daq.source import AcquisitionError
from cortexcast.daq.replay_source import ReplaySource
from cortexcast.stream.message import (
    SCHEMA_VERSION, Message, MessageError, decode, encode,
)
from cortexcast.stream.pubsub import Subscriber
from cortexcast.stream.recording import RecordingError, RecordingReader, RecordingWriter
from cortexcast.stream.replay import Replayer, ReplaySettings

HOSTILE_SHAPES = [[0, 2**64 - 1], [0, 2**63 - 1], [0] + [2**62] * 31]


def _header(arrays=(), **kw) -> bytes:
    h = {"v": SCHEMA_VERSION, "kind": "frame", "seq": 1, "src": "daq", "t": 0.5,
         "stamps": [["daq.acq", 1]], "arrays": list(arrays) if isinstance(arrays, (list, tuple)) else arrays,
         "meta": {}}
    h.update(kw)
    return msgpack.packb(h, use_bin_type=True)


def _hostile_parts(shape, dtype="<u2", buf=b"", src="daq") -> list[bytes]:
    return [b"frames", _header([{"dtype": dtype, "shape": shape}], src=src), buf]


def _only_message_error(parts) -> None:
    """decode ``parts``: a Message or a MessageError; anything else fails the test."""
    try:
        msg = decode(parts)
    except MessageError:
        return
    # what decode lets through is sane
    assert isinstance(msg, Message)
    for a in msg.arrays:
        assert isinstance(a, np.ndarray) and a.dtype.kind in "biuf"


# --------------------------------------------------------------------- the reported shapes

@pytest.mark.parametrize("shape", HOSTILE_SHAPES, ids=["2^64-1", "2^63-1", "31x2^62"])
@pytest.mark.parametrize("dtype", ["<u2", "|u1", "<f8"])
def test_reported_hostile_shapes_raise_message_error(shape, dtype):
    with pytest.raises(MessageError):
        decode(_hostile_parts(shape, dtype))


@pytest.mark.parametrize("spec", [
    {"dtype": "<u2", "shape": [-1]},
    {"dtype": "<u2", "shape": [True, 2]},
    {"dtype": "<u2", "shape": [1.5]},
    {"dtype": "<u2", "shape": "ab"},
    {"dtype": "<u2", "shape": {"a": 1}},
    {"dtype": "<u2", "shape": None},
    {"dtype": "<u2", "shape": [[1]]},
    {"dtype": "<u2", "shape": [1] * 33},
    {"dtype": "<u2", "shape": [0] * 64},
    {"dtype": "<u2", "shape": [2**64 - 1]},
    {"dtype": "<u2", "shape": [2**62, 2**62, 0]},
    {"dtype": "O", "shape": [1]},
    {"dtype": "|V2", "shape": [1]},
    {"dtype": "(2,)<u1", "shape": [1]},
    {"dtype": "<U1", "shape": [0]},
    {"dtype": "M8[s]", "shape": [0]},
    {"dtype": ">u2", "shape": [1]},
    {"dtype": "u2" * 5000, "shape": [1]},
    {"dtype": "(", "shape": [1]},
    {"dtype": "i4,i4", "shape": [0]},
    {"dtype": [["a", "<u2"]], "shape": [1]},
    {"dtype": {"names": ["a"], "formats": ["<u2"]}, "shape": [1]},
    {"dtype": None, "shape": [1]},
    {"dtype": 7, "shape": [1]},
    {"dtype": b"<u2", "shape": [1]},
    {"shape": [1]},
    {"dtype": "<u2"},
    "not a map",
    None,
    [1, 2],
])
def test_hostile_array_specs_raise_message_error(spec):
    parts = [b"frames", _header([spec]), b"\x00\x00"]
    with pytest.raises(MessageError):
        decode(parts)


@pytest.mark.parametrize("field, value", [
    ("seq", -1), ("seq", True), ("seq", "1"), ("seq", 1.5), ("seq", None),
    ("src", 5), ("src", None), ("src", "x" * 100_000),
    ("kind", 5), ("kind", "nope"),
    ("t", "1.0"), ("t", b"1.0"), ("t", None), ("t", [1]), ("t", True),
    ("stamps", "ab"), ("stamps", {"a": 1}), ("stamps", [["a"]]), ("stamps", [[1, 2]]),
    ("stamps", [["a", "b"]]), ("stamps", [["a", 1.5]]), ("stamps", [["a", True]]),
    ("stamps", [[b"ab", 1]]), ("stamps", [["a", 1, 2]]), ("stamps", None),
    ("stamps", [["s%d" % i, i] for i in range(10_000)]),
    ("stamps", [["x" * 100_000, 1]]),
    ("meta", [1]), ("meta", "x"), ("meta", 5),
    ("arrays", {"a": 1}), ("arrays", "x"), ("arrays", None),
])
def test_hostile_header_fields_raise_message_error(field, value):
    with pytest.raises(MessageError):
        decode([b"frames", _header(**{field: value})])


@pytest.mark.parametrize("parts", [
    [], [b"frames"], [b"\xff\xfe", _header()], [b"frames", b""], [b"frames", b"\xc1"],
    [b"frames", msgpack.packb([1, 2])], [b"frames", _header(), b"extra"],
    [b"frames", b"\x91" * 5000],  # deeply nested arrays
    [5, _header()], [b"frames", 5], [b"frames", None], [None, None],
])
def test_hostile_part_lists_raise_message_error(parts):
    with pytest.raises(MessageError):
        decode(parts)


def test_legitimate_messages_still_decode():
    msg = Message("frames", "frame", 3, "daq", 1.0,
                  (np.zeros((0, 5), np.uint16), np.ones((2, 3, 4), np.float32),
                   np.array(True), np.zeros(0, np.int8)),
                  (("daq.acq", 1),), {"imaging_frame": 3, "nested": {"a": [1, 2]}})
    back = decode([bytes(p) for p in encode(msg)])
    assert [a.shape for a in back.arrays] == [(0, 5), (2, 3, 4), (), (0,)]
    assert back.meta == msg.meta and back.stamps == msg.stamps


# --------------------------------------------------------------------- recordings

def _write_with_hostile_record(path, shape):
    good = Message("frames", "frame", 0, "daq", 0.0, (np.zeros((2, 2), np.uint16),),
                   (("daq.acq", 1),), {"imaging_frame": 0})
    with RecordingWriter(path) as w:
        w.write(good)
        w.write(Message("frames", "frame", 1, "daq", 0.1), parts=_hostile_parts(shape))
        w.write(Message("frames", "frame", 2, "daq", 0.2, good.arrays, good.stamps,
                        {"imaging_frame": 2}))


@pytest.mark.parametrize("shape", HOSTILE_SHAPES, ids=["2^64-1", "2^63-1", "31x2^62"])
def test_recording_with_hostile_record_fails_cleanly(tmp_path, shape):
    path = tmp_path / "hostile.ccr"
    _write_with_hostile_record(path, shape)
    with RecordingReader(path) as reader:  # CRC is valid: the file itself is fine
        assert len(reader) == 3
        assert reader.message(0).seq == 0 and reader.message(2).seq == 2
        with pytest.raises(RecordingError, match="record 1 does not decode"):
            reader.message(1)
        with pytest.raises(RecordingError):
            list(reader.messages())
        sent: list[Message] = []  # replay skips it, or fails when strict
        stats = Replayer(ReplaySettings(fast=True), sent.append).run(reader)
        assert [m.seq for m in sent] == [0, 2] and stats.damaged_records == [1]
        with pytest.raises(RecordingError):
            Replayer(ReplaySettings(fast=True, strict=True), sent.append).run(reader)


@pytest.mark.parametrize("shape", HOSTILE_SHAPES, ids=["2^64-1", "2^63-1", "31x2^62"])
def test_daq_replay_source_reports_hostile_record(tmp_path, shape):
    path = tmp_path / "hostile.ccr"
    _write_with_hostile_record(path, shape)
    with ReplaySource(path, paced=False) as source:  # skipped and counted
        assert [e.index for e in source.events()] == [0, 2] and source.damaged == 1
    with ReplaySource(path, paced=False, strict=True) as source:
        with pytest.raises(AcquisitionError, match="does not decode"):
            list(source.events())


# --------------------------------------------------------------------- fuzz (hypothesis)
#
# Each hypothesis example expands into MUTATIONS messages (seeded byte flips,
# truncations and field swaps of what it drew), so the total is
# sum(max_examples) * (1 + MUTATIONS) >= 10**5 while hypothesis's own cost stays small.

MUTATIONS = 100
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

_ints = st.one_of(
    st.integers(-2**63, 2**64 - 1),
    st.sampled_from([0, 1, -1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(0, 16),
)
_scalars = st.one_of(st.none(), st.booleans(), _ints, st.floats(), st.text(max_size=8),
                     st.binary(max_size=8))
_any = st.recursive(_scalars, lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(st.text(max_size=4), c, max_size=4), max_leaves=12)
_dtypes = st.one_of(
    st.sampled_from(["<u2", "|u1", "<f4", "<f8", "|b1", "<i8", "|i1", "<f2", "O", "|O", "V", "|V8",
                     "<U4", "S3", "M8", "m8[ns]", "c16", ">u2", "(2,)u1", "i4,i4", "u2,", "",
                     "f", "float32", "uint16", "?", "b", "e", "g", "a", "(", "[", "(0,)u1"]),
    st.text(max_size=10), _any,
)
_shapes = st.one_of(
    st.sampled_from(HOSTILE_SHAPES),
    st.lists(_ints, max_size=40),
    st.lists(st.sampled_from([0, 1, 2, 2**31, 2**62, 2**63 - 1, 2**64 - 1]), max_size=40),
    _any,
)
_spec = st.one_of(st.fixed_dictionaries({"dtype": _dtypes, "shape": _shapes}), _any)
_stamps = st.one_of(st.lists(st.tuples(st.text(max_size=6), _ints).map(list), max_size=6),
                    st.lists(st.lists(_scalars, max_size=3), max_size=4), _any)


@st.composite
def _headers(draw):
    h = {"v": draw(st.sampled_from([SCHEMA_VERSION, SCHEMA_VERSION, 0, 2, None, "1"])),
         "kind": draw(st.sampled_from(["frame", "sync", "heartbeat", "activity", "x"]) | _any),
         "seq": draw(_ints | _any), "src": draw(st.text(max_size=12) | _any),
         "t": draw(st.floats() | _ints | _any), "stamps": draw(_stamps),
         "arrays": draw(st.lists(_spec, max_size=4) | _any), "meta": draw(_any)}
    for key in draw(st.lists(st.sampled_from(sorted(h)), max_size=2)):
        h.pop(key, None)
    return h


@st.composite
def _valid_header_messages(draw):
    """A header from _headers and 0..5 buffers, often exactly as long as the spec says."""
    h = draw(_headers())
    try:
        header = msgpack.packb(h, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):  # not packable (e.g. an int too big)
        header = msgpack.packb({"v": SCHEMA_VERSION}, use_bin_type=True)
    n = len(h["arrays"]) if isinstance(h.get("arrays"), list) else draw(st.integers(0, 3))
    n = max(0, n + draw(st.sampled_from([0, 0, 0, 1, -1])))
    bufs = [draw(st.sampled_from([b"", b"\x00", b"\x00" * 2, b"\x00" * 8, b"\x00" * 24]))
            for _ in range(min(n, 5))]
    topic = draw(st.sampled_from([b"frames", b"", b"\xff", b"sync"]))
    return [topic, header, *bufs]


def _mutations(parts, seed):
    """MUTATIONS variants of ``parts``: flipped bytes, cuts, dropped/added parts."""
    rng = random.Random(seed)
    for _ in range(MUTATIONS):
        out = [bytearray(p) for p in parts]
        op = rng.randrange(5)
        if out and op == 0:  # flip bytes anywhere
            i = rng.randrange(len(out))
            for _ in range(rng.randint(1, 4)):
                if out[i]:
                    out[i][rng.randrange(len(out[i]))] = rng.randrange(256)
        elif out and op == 1:  # cut a part
            i = rng.randrange(len(out))
            del out[i][rng.randrange(len(out[i]) + 1):]
        elif out and op == 2:  # drop a part
            del out[rng.randrange(len(out))]
        elif op == 3:  # add a part
            out.insert(rng.randrange(len(out) + 1), bytearray(rng.randbytes(rng.randrange(9))))
        elif len(out) > 1:  # flip a byte of the header only
            if out[1]:
                out[1][rng.randrange(len(out[1]))] ^= 1 << rng.randrange(8)
        yield [bytes(p) for p in out]


FUZZED = {"n": 0}


def _fuzz(parts, seed):
    _only_message_error(parts)
    FUZZED["n"] += 1
    for variant in _mutations(parts, seed):
        _only_message_error(variant)
        FUZZED["n"] += 1


@pytest.mark.slow
@FUZZ
@given(parts=st.lists(st.binary(max_size=64), max_size=6), seed=st.integers(0, 2**32))
def test_fuzz_random_bytes(parts, seed):
    _fuzz(parts, seed)


@pytest.mark.slow
@FUZZ
@given(parts=_valid_header_messages(), seed=st.integers(0, 2**32))
def test_fuzz_headers(parts, seed):
    _fuzz(parts, seed)


@pytest.mark.slow
@settings(FUZZ, max_examples=400)
@given(shape=_shapes, dtype=_dtypes, nbuf=st.sampled_from([0, 1, 2, 8, 16, 64]),
       seed=st.integers(0, 2**32))
def test_fuzz_array_specs(shape, dtype, nbuf, seed):
    try:
        header = _header([{"dtype": dtype, "shape": shape}])
    except (TypeError, ValueError, OverflowError):
        return
    _fuzz([b"frames", header, b"\x00" * nbuf], seed)


@pytest.mark.slow
@FUZZ
@given(stamps=_stamps, src=st.text(max_size=40) | _any, meta=_any,
       nparts=st.integers(0, 40), seed=st.integers(0, 2**32))
def test_fuzz_stamps_src_meta_and_part_counts(stamps, src, meta, nparts, seed):
    try:
        header = _header([{"dtype": "|u1", "shape": [1]}] * (nparts % 7),
                         stamps=stamps, src=src, meta=meta)
    except (TypeError, ValueError, OverflowError):
        return
    _fuzz([b"frames", header] + [b"\x00"] * nparts, seed)


@pytest.mark.slow
def test_fuzz_total_is_at_least_1e5():
    """Runs after the four fuzz tests above (file order): they generated >= 10**5."""
    if FUZZED["n"] == 0:
        pytest.skip("run with the fuzz tests above")
    assert FUZZED["n"] >= 10**5, FUZZED["n"]


# --------------------------------------------------------------------- a live Subscriber

def _stream_of_hostile_messages(n, seed):
    rng = random.Random(seed)
    for k in range(n):
        choice = k % 4
        if choice == 0:
            yield _hostile_parts(rng.choice(HOSTILE_SHAPES), rng.choice(["<u2", "|u1", "<f4"]),
                                 src="evil")
        elif choice == 1:
            yield [b"frames", rng.randbytes(rng.randrange(40))] + \
                [rng.randbytes(rng.randrange(8)) for _ in range(rng.randrange(3))]
        elif choice == 2:
            shape = [rng.choice([0, 1, -1, 2**62, 2**63 - 1, 2**64 - 1])
                     for _ in range(rng.randrange(40))]
            yield [b"frames", _header([{"dtype": rng.choice(["<u2", "O", "|V4", "(2,)u1"]),
                                        "shape": shape}], src="evil"), b""]
        else:
            parts = [bytearray(p) for p in encode(Message(
                "frames", "frame", k, "evil", 0.0, (np.zeros((2, 3), np.uint16),)))]
            parts[1][rng.randrange(len(parts[1]))] = rng.randrange(256)
            yield [bytes(p) for p in parts]


def test_live_subscriber_survives_hostile_messages():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("inproc://hostile")
    sub = Subscriber("inproc://hostile", ["frames"], context=ctx, hwm=0, name="fuzzed")
    try:
        seq = 0

        def good():
            nonlocal seq
            seq += 1
            return encode(Message("frames", "frame", seq, "daq", float(seq),
                                  (np.full((2, 2), seq, np.uint16),)))

        deadline = time.monotonic() + 5  # the subscription reaches the PUB socket
        while sub.recv(timeout_s=0.02) is None:
            assert time.monotonic() < deadline, "subscriber never connected"
            pub.send_multipart(good())
        sub.recv_all()
        received = []
        n_hostile = 0
        for batch in range(20):
            for parts in _stream_of_hostile_messages(250, seed=batch):
                pub.send_multipart(parts)
                n_hostile += 1
            pub.send_multipart(good())
            msg = sub.recv(timeout_s=5)
            while msg is not None and msg.source != "daq":  # a flip that still decodes
                msg = sub.recv(timeout_s=5)
            assert msg is not None
            received.append(msg.seq)
        assert received == sorted(received) and len(received) == 20
        # each hostile message was counted as bad, or (a flipped byte that still decodes)
        # received from its own source; nothing else happened to it
        bad = sum(sub.stats.bad.values())
        other = sum(v for (src, _), v in sub.stats.received.items() if src != "daq")
        assert bad >= n_hostile * 3 // 4
        assert bad + other == n_hostile
    finally:
        sub.close()
        pub.close(0)
        ctx.term()


def test_live_subscriber_memory_is_bounded_whatever_names_arrive():
    """20,000 well-formed messages, each from a new source, on a new topic under the
    subscribed prefix, with new stamp names: the subscriber's memory stays flat."""
    import tracemalloc

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind("inproc://names")
    sub = Subscriber("inproc://names", ["frames"], context=ctx, hwm=0, name="named",
                     max_streams=64, max_sources=32)

    def send(k: int) -> None:
        msg = Message(f"frames-{k}", "frame", k % 7, f"src-{k}", 0.0,
                      (np.zeros(2, np.uint16),), ((f"stage-{k}", k),))
        pub.send_multipart(encode(msg))

    try:
        deadline = time.monotonic() + 5
        while sub.recv(timeout_s=0.02) is None:
            assert time.monotonic() < deadline, "subscriber never connected"
            send(0)
        tracemalloc.start()
        sizes = []
        for block in range(10):
            for k in range(1 + block * 2000, 1 + (block + 1) * 2000):
                send(k)
            got = 0
            while got < 2000:
                assert sub.recv(timeout_s=5) is not None
                got += 1
            if block in (1, 9):
                sizes.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
        assert len(sub._last_seq) <= 64 and len(sub.last_heartbeat) <= 32
        assert len(sub.stats.received) <= 65 and len(sub.stats.restarted) <= 64
        assert sizes[1] - sizes[0] < 256 * 1024, sizes  # 16,000 more names: no growth
    finally:
        sub.close()
        pub.close(0)
        ctx.term()
