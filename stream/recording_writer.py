"""Writing a recording: append-only, one ``writev`` per record, its index entry right
after (layout and crash safety: :mod:`cortexcast.stream.recording`)."""

from __future__ import annotations

import contextlib
import os
import struct
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cortexcast.stream.message import Message, encode
from cortexcast.stream.recording_format import (MAGIC, RECORD_MAGIC, FORMAT_VERSION, MAX_PARTS, FILE_HEADER, RECORD_HEAD, ENTRY, CRC, RecordingError, topic_id, index_path, index_header, write_all)


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
        head = FILE_HEADER.pack(MAGIC, FORMAT_VERSION, FILE_HEADER.size, 0, self.file_id,
                                 time.time(), time.monotonic_ns())
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        try:
            write_all(self._fd, [head])
            self._ifd = os.open(index_path(self.path), flags, 0o644)
            write_all(self._ifd, [index_header(self.file_id)])
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
        head = RECORD_HEAD.pack(RECORD_MAGIC, len(bufs), 0, t_recv) + struct.pack(
            f"<{len(bufs)}I", *lengths)
        length = len(head) + sum(lengths) + CRC.size
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
            write_all(self._fd, [head, *bufs, CRC.pack(crc)])
            write_all(self._ifd, [ENTRY.pack(self.bytes_written, length, tid,
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
