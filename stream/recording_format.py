"""The recording file format: constants, the index entry, and the helpers the writer and
the reader share (layout: :mod:`cortexcast.stream.recording`)."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cortexcast.core.errors import CortexcastError

MAGIC = b"CCASTREC"
INDEX_MAGIC = b"CCASTIDX"
RECORD_MAGIC = b"CCRM"
FORMAT_VERSION = 1
MAX_PARTS = 4096

FILE_HEADER = struct.Struct("<8sHHI16sdq")
INDEX_HEADER = struct.Struct("<8sHHI16s")
RECORD_HEAD = struct.Struct("<4sHHq")
ENTRY = struct.Struct("<QIIqdq")
CRC = struct.Struct("<I")

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


def index_header(file_id: bytes) -> bytes:
    return INDEX_HEADER.pack(INDEX_MAGIC, FORMAT_VERSION, ENTRY.size, 0, file_id)


def write_all(fd: int, bufs: Sequence[Any]) -> None:
    """Write every buffer, in order, handling short writes (one syscall when possible)."""
    views = [v for v in (memoryview(b).cast("B") for b in bufs) if v.nbytes]
    while views:
        n = os.writev(fd, views[:1024]) if hasattr(os, "writev") else os.write(fd, views[0])
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if n:
            views[0] = views[0][n:]
