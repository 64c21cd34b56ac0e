"""The recording file format: round trip, index recovery, truncated and corrupt tails."""

from __future__ import annotations

import os
import random
import shutil

import numpy as np
import pytest

from cortexcast.stream.message import Message, encode
from cortexcast.stream.recording import (
    INDEX_DTYPE,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    index_path,
)

T0_NS = 5_000_000_000


def _messages(n: int = 12) -> list[Message]:
    """Frames, sync (with and without photodiode) and stimulus messages, interleaved."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        stamps = (("daq.acq", 1000 + i), ("daq.pub", 2000 + i))
        out.append(Message("frames", "frame", i, "daq", i / 30,
                           (rng.integers(0, 65535, (16, 24), dtype=np.uint16),), stamps,
                           {"imaging_frame": i}))
        photodiode = (rng.random(5, dtype=np.float32),) if i % 2 else ()
        out.append(Message("sync", "sync", i, "daq", i / 30, photodiode, stamps,
                           {"imaging_frame": i, "stim_frame": i - 1, "t_flip": i / 30 - 0.01,
                            "behavior": {"running": 1.5, "pupil": 0.2}}))
        if i % 3 == 0:
            out.append(Message("stimulus", "stimulus", i // 3, "daq", i / 30,
                               (rng.integers(0, 255, (36, 64), dtype=np.uint8),), stamps,
                               {"stim_frame": i // 3, "clip": "c1", "clip_frame": i}))
    out.append(Message("frames", "frame", n, "daq", n / 30, (np.zeros((0, 4), np.uint16),)))
    return out


def _write(path, msgs: list[Message]) -> list[int]:
    """Write ``msgs`` with synthetic receive times 10 ms apart; return them."""
    times = [T0_NS + k * 10_000_000 for k in range(len(msgs))]
    with RecordingWriter(path) as w:
        for msg, t in zip(msgs, times):
            w.write(msg, t_recv_ns=t)
    return times


def _parts_bytes(parts) -> list[bytes]:
    return [bytes(p) for p in parts]


def _assert_same(got: Message, want: Message) -> None:
    assert (got.topic, got.kind, got.seq, got.source, got.t_acq, got.stamps, got.meta) == (
        want.topic, want.kind, want.seq, want.source, want.t_acq, want.stamps, want.meta)
    assert len(got.arrays) == len(want.arrays)
    for a, b in zip(got.arrays, want.arrays):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.fixture()
def recording(tmp_path):
    path = tmp_path / "rec.ccrec"
    msgs = _messages()
    times = _write(path, msgs)
    return path, msgs, times


def test_round_trip_is_byte_exact(recording):
    path, msgs, times = recording
    with RecordingReader(path) as r:
        assert len(r) == len(msgs)
        assert r.index_source == "sidecar" and r.ignored_bytes == 0
        for k, msg in enumerate(msgs):
            assert _parts_bytes(r.parts(k)) == _parts_bytes(encode(msg))
        for got, want in zip(r, msgs):
            _assert_same(got, want)
        assert r.topics == ("frames", "sync", "stimulus")
        assert r.counts() == {t: sum(m.topic == t for m in msgs) for t in r.topics}
        assert r.duration == pytest.approx((times[-1] - times[0]) / 1e9)
        assert r.index["seq"].tolist() == [m.seq for m in msgs]
        assert r.index["t_acq"].tolist() == [m.t_acq for m in msgs]
        assert r.index["t_recv_ns"].tolist() == times
        sync = [m for m in msgs if m.topic == "sync"]
        assert [m.seq for m in r.messages(["sync"])] == [m.seq for m in sync]
        assert len(r.select(["stimulus", "sync"])) == len(sync) + r.counts()["stimulus"]
        assert len(r.select(["nothing"])) == 0


def test_raw_parts_are_kept_exactly_as_received(tmp_path):
    msg = _messages(1)[0]
    parts = [bytes(p) for p in encode(msg)]
    with RecordingWriter(tmp_path / "raw.ccrec") as w:
        w.write(msg, parts)
        w.write(msg, [memoryview(p) for p in parts])
    with RecordingReader(tmp_path / "raw.ccrec") as r:
        assert [_parts_bytes(r.parts(k)) for k in range(2)] == [parts, parts]


def test_writer_refuses_to_overwrite_unless_asked(recording):
    path, msgs, _ = recording
    with pytest.raises(RecordingError, match="exists"):
        RecordingWriter(path)
    with RecordingWriter(path, overwrite=True, fsync_s=0) as w:
        w.write(msgs[0])
    with RecordingReader(path) as r:
        assert len(r) == 1 and r.index_source == "sidecar"
    with pytest.raises(RecordingError, match="closed"):
        w.write(msgs[0])


def test_not_a_recording(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "junk").write_bytes(b"x" * 100)
    for name in ("empty", "junk", "missing"):
        with pytest.raises(RecordingError):
            RecordingReader(tmp_path / name)


def test_index_rebuilt_when_sidecar_missing_or_stale(recording, tmp_path):
    path, msgs, _ = recording
    with RecordingReader(path) as r:
        want = r.index.copy()
    idx = index_path(path)
    saved = idx.read_bytes()
    idx.unlink()
    with RecordingReader(path) as r:
        assert r.index_source == "scan"
        np.testing.assert_array_equal(r.index, want)
        r.save_index()
    assert idx.read_bytes() == saved
    # A sidecar of another recording (other file id) is not trusted.
    _write(tmp_path / "other.ccrec", msgs[:3])
    shutil.copy(index_path(tmp_path / "other.ccrec"), idx)
    with RecordingReader(path) as r:
        assert r.index_source == "scan"
        np.testing.assert_array_equal(r.index, want)


@pytest.mark.parametrize("keep_entries", [0, 1, 5, 17, 0.5, 3.3])
def test_index_completed_when_sidecar_short(recording, keep_entries):
    path, _, _ = recording
    with RecordingReader(path) as r:
        want = r.index.copy()
    idx = index_path(path)
    data = idx.read_bytes()
    idx.write_bytes(data[:32 + int(keep_entries * INDEX_DTYPE.itemsize)])
    with RecordingReader(path) as r:
        assert r.index_source == "sidecar+scan"
        np.testing.assert_array_equal(r.index, want)
    idx.write_bytes(data[:20])  # shorter than its header
    with RecordingReader(path) as r:
        assert r.index_source == "scan"
        np.testing.assert_array_equal(r.index, want)


def test_inconsistent_sidecar_is_rebuilt(recording):
    path, _, _ = recording
    with RecordingReader(path) as r:
        want = r.index.copy()
    idx = index_path(path)
    entries = want.copy()
    entries["offset"][3] += 7
    idx.write_bytes(idx.read_bytes()[:32] + entries.tobytes())
    with RecordingReader(path) as r:
        assert r.index_source == "scan"
        np.testing.assert_array_equal(r.index, want)
    entries = want.copy()
    entries["t_recv_ns"][-1] += 1  # the last entry disagrees with its record
    idx.write_bytes(idx.read_bytes()[:32] + entries.tobytes())
    with RecordingReader(path) as r:
        assert r.index_source == "scan"


@pytest.mark.parametrize("with_sidecar", [True, False])
def test_cut_anywhere_in_the_last_record(recording, tmp_path, with_sidecar):
    path, msgs, _ = recording
    with RecordingReader(path) as r:
        last = int(r.index["offset"][-1])
    full = path.read_bytes()
    sidecar = index_path(path).read_bytes()
    cut_path = tmp_path / "cut.ccrec"
    for cut in range(last, len(full)):
        cut_path.write_bytes(full[:cut])
        if with_sidecar:
            index_path(cut_path).write_bytes(sidecar)
        with RecordingReader(cut_path) as r:
            assert len(r) == len(msgs) - 1, cut
            assert r.index_source == ("sidecar" if with_sidecar else "scan")
            assert r.ignored_bytes == cut - last
            assert _parts_bytes(r.parts(len(r) - 1)) == _parts_bytes(encode(msgs[-2]))
    assert cut_path.stat().st_size == len(full) - 1


def test_random_cuts_keep_exactly_the_complete_records(recording, tmp_path):
    path, msgs, _ = recording
    with RecordingReader(path) as r:
        ends = (r.index["offset"] + r.index["length"]).tolist()
    full = path.read_bytes()
    sidecar = index_path(path).read_bytes()
    rnd = random.Random(1)
    cut_path = tmp_path / "cut.ccrec"
    for cut in [48, *rnd.sample(range(48, len(full) + 1), 60)]:
        cut_path.write_bytes(full[:cut])
        side_cut = rnd.randrange(len(sidecar) + 1)  # the sidecar may be short too
        index_path(cut_path).write_bytes(sidecar[:side_cut])
        complete = sum(e <= cut for e in ends)
        with RecordingReader(cut_path) as r:
            assert len(r) == complete, (cut, side_cut)
            assert r.ignored_bytes == cut - (ends[complete - 1] if complete else 48)
            got = list(r)
            assert len(got) == complete
            for g, want in zip(got, msgs):
                _assert_same(g, want)


def test_corrupt_record_is_skipped_by_the_scan_and_fails_a_read(recording):
    path, msgs, _ = recording
    with RecordingReader(path) as r:
        off, length = int(r.index["offset"][5]), int(r.index["length"][5])
    data = bytearray(path.read_bytes())
    data[off + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with RecordingReader(path) as r:  # the sidecar vouches for record 5, the CRC does not
        assert len(r) == len(msgs)
        _assert_same(r.message(4), msgs[4])
        with pytest.raises(RecordingError, match="CRC"):
            r.message(5)
    os.remove(index_path(path))
    with RecordingReader(path) as r:  # the scan resynchronises on record 6
        assert len(r) == len(msgs) - 1
        assert r.damaged_spans == [(off, length)] and r.tail_bytes == 0
        assert r.ignored_bytes == length
        for got, want in zip(r, msgs[:5] + msgs[6:], strict=True):
            _assert_same(got, want)
