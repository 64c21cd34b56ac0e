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
The reader trusts the sidecar only as far as it agrees with the data, scans the
rest (checking CRCs), stops at the first truncated or corrupt record and reports
the bytes it ignored. Records are read by seeking; the file is never loaded.
"""

from __future__ import annotations

from cortexcast.core.errors import CortexcastError
import contextlib
import itertools
import logging
import os
import struct
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from cortexcast.stream.message import Message, MessageError, decode, encode

log = logging.getLogger(__name__)

MAGIC = b"CCASTREC"
INDEX_MAGIC = b"CCASTIDX"
RECORD_MAGIC = b"CCRM"
FORMAT_VERSION = 1
MAX_PARTS = 4096

_FILE_HEADER = struct.Struct("<8sHHI16sdq")
_INDEX_HEADER = struct.Struct("<8sHHI16s")
_RECORD_HEAD = struct.Struct("<4sHHq")
_ENTRY = struct.Struct("<QIIqdq")
_CRC = struct.Struct("<I")

#: One sidecar index entry (also the in-memory index of a reader).
INDEX_DTYPE = np.dtype([
    ("offset", "<u8"), ("length", "<u4"), ("topic", "<u4"),
    ("seq", "<i8"), ("t_acq", "<f8"), ("t_recv_ns", "<i8"),
])


class RecordingError(CortexcastError, RuntimeError):
    """A recording cannot be written or read (exists, not a recording, corrupt record)."""


def topic_id(topic: str | bytes | memoryview) -> int:
    """The CRC32 of a topic's UTF-8 bytes, as stored in the index."""
    return zlib.crc32(topic.encode() if isinstance(topic, str) else topic)


def index_path(path: str | Path) -> Path:
    """Where the sidecar index of recording ``path`` lives."""
    return Path(f"{os.fspath(path)}.idx")


def _index_header(file_id: bytes) -> bytes:
    return _INDEX_HEADER.pack(INDEX_MAGIC, FORMAT_VERSION, _ENTRY.size, 0, file_id)


def _write_all(fd: int, bufs: Sequence[Any]) -> None:
    """Write every buffer, in order, handling short writes (one syscall when possible)."""
    views = [v for v in (memoryview(b).cast("B") for b in bufs) if v.nbytes]
    while views:
        n = os.writev(fd, views[:1024]) if hasattr(os, "writev") else os.write(fd, views[0])
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if n:
            views[0] = views[0][n:]


class RecordingWriter:
    """Appends messages to a new recording and its sidecar index.

    ``fsync_s`` is the longest time (s) between fsyncs (0: after every
    message; None: only on close). Refuses to replace an existing file unless
    ``overwrite``. A context manager; ``close`` fsyncs.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False,
                 fsync_s: float | None = 1.0) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0)
        flags |= os.O_TRUNC if overwrite else os.O_EXCL
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except FileExistsError as exc:
            raise RecordingError(f"{self.path} exists; pass overwrite to replace it") from exc
        except OSError as exc:
            raise RecordingError(f"cannot create {self.path}: {exc}") from exc
        self.file_id = uuid.uuid4().bytes
        self.fsync_s = fsync_s
        head = _FILE_HEADER.pack(MAGIC, FORMAT_VERSION, _FILE_HEADER.size, 0, self.file_id,
                                 time.time(), time.monotonic_ns())
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        try:
            _write_all(self._fd, [head])
            self._ifd = os.open(index_path(self.path), flags, 0o644)
            _write_all(self._ifd, [_index_header(self.file_id)])
        except OSError as exc:
            os.close(self._fd)
            raise RecordingError(f"cannot write {self.path}: {exc}") from exc
        self.bytes_written = len(head)  # size of the data file so far
        self._last_sync = time.monotonic()
        self._topics: dict[int, bytes] = {}
        self.count = 0
        self.per_topic: Counter[str] = Counter()
        self.closed = False

    def write(self, msg: Message, parts: Sequence[Any] | None = None,
              t_recv_ns: int | None = None) -> int:
        """Append ``msg`` as its received ``parts`` (default ``encode(msg)``); return its index.

        ``t_recv_ns``: when it was received (``time.monotonic_ns()``; default: now).
        """
        if self.closed:
            raise RecordingError(f"{self.path} is closed")
        bufs = [memoryview(getattr(p, "buffer", p)).cast("B")
                for p in (encode(msg) if parts is None else parts)]
        if not 2 <= len(bufs) <= MAX_PARTS:
            raise RecordingError(f"a record holds 2..{MAX_PARTS} parts, got {len(bufs)}")
        t_recv = time.monotonic_ns() if t_recv_ns is None else int(t_recv_ns)
        lengths = [b.nbytes for b in bufs]
        head = _RECORD_HEAD.pack(RECORD_MAGIC, len(bufs), 0, t_recv) + struct.pack(
            f"<{len(bufs)}I", *lengths)
        length = len(head) + sum(lengths) + _CRC.size
        if length >= 1 << 32:
            raise RecordingError(f"message of {length} bytes is too large for one record")
        crc = zlib.crc32(head)
        for b in bufs:
            crc = zlib.crc32(b, crc)
        topic = bytes(bufs[0])
        tid = topic_id(topic)
        if self._topics.setdefault(tid, topic) != topic:
            raise RecordingError(f"topics {topic!r} and {self._topics[tid]!r} share a CRC32")
        try:
            _write_all(self._fd, [head, *bufs, _CRC.pack(crc)])
            _write_all(self._ifd, [_ENTRY.pack(self.bytes_written, length, tid,
                                               msg.seq if msg.seq < 1 << 63 else -1, msg.t_acq,
                                               t_recv)])
        except OSError as exc:  # e.g. disk full: stop here; readers ignore a partial tail
            with contextlib.suppress(OSError):
                self.close()
            raise RecordingError(f"cannot write {self.path}: {exc}") from exc
        self.bytes_written += length
        self.count += 1
        self.per_topic[topic.decode(errors="replace")] += 1
        if self.fsync_s is not None and time.monotonic() - self._last_sync >= self.fsync_s:
            self.sync()
        return self.count - 1

    def sync(self) -> None:
        """fsync the data file and the index."""
        os.fsync(self._fd)
        os.fsync(self._ifd)
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """fsync and close (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sync()
        finally:
            os.close(self._fd)
            os.close(self._ifd)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingReader:
    """Random and sequential access to a recording, by seeking (never loads the file).

    ``index_source`` says where the index came from: ``"sidecar"``,
    ``"sidecar+scan"`` (the sidecar was short) or ``"scan"`` (missing or
    inconsistent). ``ignored_bytes`` counts the truncated/corrupt tail that was
    skipped. With ``verify`` every record read is CRC-checked.
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
        head = self._read(0, _FILE_HEADER.size)
        if len(head) < _FILE_HEADER.size or head[:8] != MAGIC:
            raise RecordingError(f"{self.path} is not a cortexcast recording")
        _, version, hsize, _, self.file_id, self.created_unix, self.created_monotonic_ns = (
            _FILE_HEADER.unpack(head))
        if version != FORMAT_VERSION:
            raise RecordingError(f"{self.path}: format version {version}, not {FORMAT_VERSION}")
        self._header_size = hsize
        entries = self._load_sidecar(size)
        self.index_source = "sidecar"
        if entries is None:
            entries, self.index_source = np.empty(0, INDEX_DTYPE), "scan"
        start = int(entries["offset"][-1] + entries["length"][-1]) if len(entries) else hsize
        scanned, end = self._scan(start, size)
        if len(scanned) and self.index_source == "sidecar":
            self.index_source = "sidecar+scan"
        self._index = np.concatenate([entries, scanned])
        self._index.flags.writeable = False
        self.ignored_bytes = size - end
        if self.ignored_bytes:
            log.warning("%s: ignoring %d bytes of truncated or corrupt data after record %d",
                        self.path, self.ignored_bytes, len(self._index))

    def _load_sidecar(self, size: int) -> np.ndarray | None:
        """The sidecar's entries as far as they agree with the data file, else None."""
        try:
            raw = index_path(self.path).read_bytes()
        except OSError:
            return None
        if raw[:_INDEX_HEADER.size] != _index_header(self.file_id):
            return None
        n = (len(raw) - _INDEX_HEADER.size) // _ENTRY.size
        entries = np.frombuffer(raw, INDEX_DTYPE, count=n, offset=_INDEX_HEADER.size).copy()
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

    def _scan(self, offset: int, size: int) -> tuple[np.ndarray, int]:
        """Index the records from ``offset`` on; stop at the first bad one."""
        rows = []
        while (row := self._scan_one(offset, size)) is not None:
            rows.append(row)
            offset += row[1]
        return np.array(rows, dtype=INDEX_DTYPE), offset

    def _scan_one(self, offset: int, size: int) -> tuple | None:
        """The index row of the record at ``offset``, or None if it is truncated or corrupt."""
        head = self._read(offset, _RECORD_HEAD.size) if offset < size else b""
        if len(head) < _RECORD_HEAD.size or head[:4] != RECORD_MAGIC:
            return None
        n = _RECORD_HEAD.unpack(head)[1]
        raw_lengths = self._read(offset + len(head), 4 * n)
        if not 2 <= n <= MAX_PARTS or len(raw_lengths) < 4 * n:
            return None
        length = len(head) + 4 * n + sum(struct.unpack(f"<{n}I", raw_lengths)) + _CRC.size
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
        magic, n, _, t_recv = _RECORD_HEAD.unpack_from(buf)
        if magic != RECORD_MAGIC or not 2 <= n <= MAX_PARTS:
            raise RecordingError(f"{self.path}: no record at offset {offset}")
        lengths = struct.unpack_from(f"<{n}I", buf, _RECORD_HEAD.size)
        body = _RECORD_HEAD.size + 4 * n
        if body + sum(lengths) + _CRC.size != length:
            raise RecordingError(f"{self.path}: record at {offset} has inconsistent lengths")
        view = memoryview(buf)
        if verify and zlib.crc32(view[:-_CRC.size]) != _CRC.unpack_from(buf, length - 4)[0]:
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
            self._names = {int(ids[k]): bytes(self.parts(int(first[k]))[0]).decode(errors="replace")
                           for k in np.argsort(first)}
        return self._names

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
            fh.write(_index_header(self.file_id))
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
