"""Append-only recording files for cortexcast streams, safe against a killed recorder.

Layout (little-endian). File header, 48 B: magic ``CCASTREC``, version u16, header
size u16, flags u32, file id (16 random bytes), created unix s f64, created
monotonic ns i64. Then records to the end of the file, each: magic ``CCRM``,
part count n u16, flags u16, receive ``time.monotonic_ns()`` i64, n part lengths
u32, the parts exactly as received (topic, msgpack header, raw array buffers),
CRC32 u32 of all the record's preceding bytes. Sidecar ``FILE.idx``: 32 B header
(magic ``CCASTIDX``, version u16, entry size u16, flags u32, the file id), then
one 40 B :data:`INDEX_DTYPE` entry per record.

A record goes out in one ``writev``, its index entry right after: a ``kill -9``
loses at most the message being written (``fsync_s`` bounds a power cut's loss).
The reader trusts the sidecar only as far as it agrees with the data and scans the
rest (checking CRCs). After a corrupt record the scan resynchronises on the next
position where a whole record checks out, so one flipped byte loses one record:
it reports each damaged span and the truncated tail it ignored. Records are read by
seeking; the file is never loaded.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgpack
import numpy as np

from cortexcast.stream.message import Message, MessageError, decode

log = logging.getLogger(__name__)
from cortexcast.stream.recording_format import (CRC, ENTRY, FILE_HEADER, FORMAT_VERSION, INDEX_DTYPE, INDEX_HEADER, MAGIC, MAX_PARTS, RECORD_HEAD, RECORD_MAGIC, RecordingError, index_header, index_path, topic_id)
from cortexcast.stream.recording_writer import RecordingWriter

__all__ = ["INDEX_DTYPE", "RecordingError", "RecordingReader", "RecordingWriter", "index_path",
           "topic_id"]


class RecordingReader:
    """Random and sequential access to a recording, by seeking (never loads the file).

    ``index_source`` says where the index came from: ``"sidecar"``,
    ``"sidecar+scan"`` (the sidecar was short) or ``"scan"`` (missing or
    inconsistent). A scan skips corrupt data and goes on at the next valid record:
    ``damaged_spans`` lists ``(offset, length)`` of each skipped span before a valid
    record, ``tail_bytes`` the truncated/corrupt tail, ``ignored_bytes`` both. Damage in
    records the sidecar vouches for shows when they are read (:meth:`parts` raises
    RecordingError; :meth:`check` reads them all). With ``verify`` every record read is
    CRC-checked.
    """

    def __init__(self, path: str | Path, *, verify: bool = True) -> None:
        self.path = Path(path)
        self.verify = verify
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise RecordingError(f"cannot open {self.path}: {exc}") from exc
        try:
            self._open()
        except BaseException:
            self._fh.close()
            raise
        self._names: dict[int, str] | None = None

    def _read(self, offset: int, n: int) -> bytes:
        self._fh.seek(offset)
        return self._fh.read(n)

    def _open(self) -> None:
        size = os.fstat(self._fh.fileno()).st_size
        head = self._read(0, FILE_HEADER.size)
        if len(head) < FILE_HEADER.size or head[:8] != MAGIC:
            raise RecordingError(f"{self.path} is not a cortexcast recording")
        _, version, hsize, _, self.file_id, self.created_unix, self.created_monotonic_ns = (
            FILE_HEADER.unpack(head))
        if version != FORMAT_VERSION:
            raise RecordingError(f"{self.path}: format version {version}, not {FORMAT_VERSION}")
        self._header_size = hsize
        entries = self._load_sidecar(size)
        self.index_source = "sidecar"
        if entries is None:
            entries, self.index_source = np.empty(0, INDEX_DTYPE), "scan"
        start = int(entries["offset"][-1] + entries["length"][-1]) if len(entries) else hsize
        scanned, end, self.damaged_spans = self._scan(start, size)
        if len(scanned) and self.index_source == "sidecar":
            self.index_source = "sidecar+scan"
        self._index = np.concatenate([entries, scanned])
        self._index.flags.writeable = False
        self.tail_bytes = size - end
        self.ignored_bytes = self.tail_bytes + sum(n for _, n in self.damaged_spans)
        for off, n in self.damaged_spans:
            log.warning("%s: skipping %d bytes of corrupt data at byte offset %d (before "
                        "record %d)", self.path, n, off,
                        int(np.searchsorted(self._index["offset"], off)))
        if self.tail_bytes:
            log.warning("%s: ignoring %d bytes of truncated or corrupt data after record %d",
                        self.path, self.tail_bytes, len(self._index))

    def _load_sidecar(self, size: int) -> np.ndarray | None:
        """The sidecar's entries as far as they agree with the data file, else None."""
        try:
            raw = index_path(self.path).read_bytes()
        except OSError:
            return None
        if raw[:INDEX_HEADER.size] != index_header(self.file_id):
            return None
        n = (len(raw) - INDEX_HEADER.size) // ENTRY.size
        entries = np.frombuffer(raw, INDEX_DTYPE, count=n, offset=INDEX_HEADER.size).copy()
        ends = entries["offset"] + entries["length"]
        beyond = np.flatnonzero(ends > size)
        if beyond.size:  # data lost after the index was written (power cut): trust less
            entries, ends = entries[:beyond[0]], ends[:beyond[0]]
        if not len(entries):
            return entries
        if entries["offset"][0] != self._header_size or np.any(entries["offset"][1:] != ends[:-1]):
            return None
        last = entries[-1]
        try:
            t_recv, parts = self._parse(int(last["offset"]), int(last["length"]), True)
        except RecordingError:
            return None
        if topic_id(parts[0]) != last["topic"] or t_recv != last["t_recv_ns"]:
            return None
        return entries

    def _scan(self, offset: int, size: int) -> tuple[np.ndarray, int, list[tuple[int, int]]]:
        """Index the records from ``offset`` on: ``(rows, end, damaged spans)``.

        After a record that fails its checks, search forward for the next position where
        a whole record (magic, lengths, CRC) checks out and go on from there; the bytes in
        between are a damaged span ``(offset, length)``. ``end`` is where the last valid
        record ends (what follows it, up to the file's end, is a truncated tail).
        """
        rows, spans = [], []
        while True:
            while (row := self._scan_one(offset, size)) is not None:
                rows.append(row)
                offset += row[1]
            if offset >= size:
                break
            found = self._resync(offset + 1, size)
            if found is None:
                break
            spans.append((offset, found - offset))
            offset = found
        return np.array(rows, dtype=INDEX_DTYPE), offset, spans

    def _resync(self, offset: int, size: int, chunk: int = 1 << 20) -> int | None:
        """The first offset >= ``offset`` where a valid record starts, else None."""
        keep = len(RECORD_MAGIC) - 1
        while offset < size:
            buf = self._read(offset, chunk + keep)
            pos = buf.find(RECORD_MAGIC)
            while pos >= 0:
                if self._scan_one(offset + pos, size) is not None:
                    return offset + pos
                pos = buf.find(RECORD_MAGIC, pos + 1)
            offset += chunk
        return None

    def _scan_one(self, offset: int, size: int) -> tuple | None:
        """The index row of the record at ``offset``, or None if it is truncated or corrupt."""
        head = self._read(offset, RECORD_HEAD.size) if offset < size else b""
        if len(head) < RECORD_HEAD.size or head[:4] != RECORD_MAGIC:
            return None
        n = RECORD_HEAD.unpack(head)[1]
        raw_lengths = self._read(offset + len(head), 4 * n)
        if not 2 <= n <= MAX_PARTS or len(raw_lengths) < 4 * n:
            return None
        length = len(head) + 4 * n + sum(struct.unpack(f"<{n}I", raw_lengths)) + CRC.size
        if offset + length > size:
            return None
        try:  # one record (one message) in memory at a time
            t_recv, parts = self._parse(offset, length, verify=True)
        except RecordingError:
            return None
        try:
            h = msgpack.unpackb(bytes(parts[1]), raw=False)
            seq, t_acq = int(h["seq"]), float(h["t"])
        except Exception:  # noqa: BLE001 (msgpack raises many types); indexed anyway
            seq, t_acq = -1, float("nan")
        seq = seq if 0 <= seq < 1 << 63 else -1
        return offset, length, topic_id(parts[0]), seq, t_acq, t_recv

    def _parse(self, offset: int, length: int, verify: bool) -> tuple[int, list[memoryview]]:
        buf = self._read(offset, length)
        if len(buf) != length:
            raise RecordingError(f"{self.path}: record at {offset} is truncated")
        magic, n, _, t_recv = RECORD_HEAD.unpack_from(buf)
        if magic != RECORD_MAGIC or not 2 <= n <= MAX_PARTS:
            raise RecordingError(f"{self.path}: no record at offset {offset}")
        lengths = struct.unpack_from(f"<{n}I", buf, RECORD_HEAD.size)
        body = RECORD_HEAD.size + 4 * n
        if body + sum(lengths) + CRC.size != length:
            raise RecordingError(f"{self.path}: record at {offset} has inconsistent lengths")
        view = memoryview(buf)
        if verify and zlib.crc32(view[:-CRC.size]) != CRC.unpack_from(buf, length - 4)[0]:
            raise RecordingError(f"{self.path}: CRC mismatch in record at offset {offset}")
        ends = np.cumsum((body, *lengths)).tolist()
        return t_recv, [view[a:b] for a, b in itertools.pairwise(ends)]

    # -- public access -------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    @property
    def index(self) -> np.ndarray:
        """The (read-only) index: one :data:`INDEX_DTYPE` row per record."""
        return self._index

    def parts(self, i: int) -> list[memoryview]:
        """Record ``i`` as received: ``[topic, header, buffer...]`` (views on one read)."""
        e = self._index[i]
        return self._parse(int(e["offset"]), int(e["length"]), self.verify)[1]

    def select(self, topics: Iterable[str] | None = None) -> np.ndarray:
        """Indices of the records on ``topics`` (exact names; None: all), in file order."""
        if topics is None:
            return np.arange(len(self._index))
        names = self._topic_names()  # exact: a file holds no two topics with one CRC
        ids = [topic_id(t) for t in topics if names.get(topic_id(t)) == t]
        return np.flatnonzero(np.isin(self._index["topic"], ids))

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[Message]:
        """Every message (on ``topics``), decoded, in order (raw: ``parts(i)``, ``select``)."""
        return (self.message(int(i)) for i in self.select(topics))

    def message(self, i: int) -> Message:
        """Record ``i`` decoded; raises RecordingError if it does not decode."""
        try:
            return decode(self.parts(i))
        except MessageError as exc:
            raise RecordingError(f"{self.path}: record {i} does not decode: {exc}") from exc

    def __iter__(self) -> Iterator[Message]:
        return self.messages()

    def _topic_names(self) -> dict[int, str]:
        """Topic id -> name, in order of first appearance (reads one record per topic)."""
        if self._names is None:
            ids, first = np.unique(self._index["topic"], return_index=True)
            self._names = {int(ids[k]): self._topic_name(int(ids[k]), int(first[k]))
                           for k in np.argsort(first)}
        return self._names

    def _topic_name(self, tid: int, first: int) -> str:
        """The name of topic ``tid`` from its first record that reads (one may be damaged)."""
        for i in itertools.chain((first,), np.flatnonzero(self._index["topic"] == tid)):
            try:
                return bytes(self.parts(int(i))[0]).decode(errors="replace")
            except RecordingError:
                continue
        return f"<damaged topic {tid:08x}>"

    def check(self) -> list[tuple[int, int, int, str]]:
        """Read and CRC-check every indexed record: ``(index, offset, length, error)`` of
        each one that does not read or decode (the damaged spans a scan skipped are in
        ``damaged_spans``)."""
        bad = []
        for i, e in enumerate(self._index):
            try:
                parts = self._parse(int(e["offset"]), int(e["length"]), True)[1]
                decode(parts)
            except (RecordingError, MessageError) as exc:
                bad.append((i, int(e["offset"]), int(e["length"]), str(exc)))
        return bad

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics recorded, in order of first appearance."""
        return tuple(self._topic_names().values())

    def counts(self) -> dict[str, int]:
        """Number of records per topic."""
        ids, n = np.unique(self._index["topic"], return_counts=True)
        return {self._topic_names()[int(t)]: int(k) for t, k in zip(ids, n, strict=True)}

    @property
    def duration(self) -> float:
        """Seconds between the first and the last message's receive time."""
        t = self._index["t_recv_ns"]
        return float(t[-1] - t[0]) / 1e9 if len(t) else 0.0

    def save_index(self) -> None:
        """Rewrite the sidecar from the index in memory (atomically, via rename)."""
        tmp = Path(f"{index_path(self.path)}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(index_header(self.file_id))
            fh.write(self._index.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, index_path(self.path))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
