"""The message envelope every cortexcast stream carries, and its faults.

A :class:`Message` is what one topic carries once: kind, sequence number, publisher,
acquisition time, latency stamps, small ``meta`` fields and numpy arrays. It is plain
data; :mod:`cortexcast.stream.message` puts it on the wire and takes it off again, and
:mod:`cortexcast.core.events` maps it to and from the typed events the processes use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cortexcast.core.errors import CortexcastError

#: Message kinds and the topics they normally travel on.
KINDS = frozenset(
    {"frame", "sync", "stimulus", "activity", "reconstruction", "heartbeat", "status", "event"}
)

#: dtypes allowed on the wire (no object arrays, nothing that needs pickle).
_ALLOWED_DTYPES = frozenset(
    np.dtype(t).str
    for t in ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "?")
)


class MessageError(CortexcastError, ValueError):
    """A multipart message could not be decoded; ``reason`` names the kind of fault."""

    reason = "malformed"


class HeaderError(MessageError):
    reason = "bad_header"


class SchemaVersionError(MessageError):
    reason = "schema_version"


class BufferError_(MessageError):
    reason = "bad_buffer"


class DtypeError(MessageError):
    reason = "bad_dtype"


@dataclass(frozen=True)
class Message:
    """One message on one topic.

    ``t_acq`` is the acquisition time in the rig's clock (seconds; for the
    simulator, seconds since its start).  ``stamps`` is the list of
    ``(stage, time.monotonic_ns())`` pairs each process appends as the
    message's content moves down the pipeline, so any consumer on the same
    host can compute per-stage latency.  ``meta`` holds small extra fields
    (e.g. ``imaging_frame``, ``stim_frame``); it must be msgpack-able.
    """

    topic: str
    kind: str
    seq: int
    source: str
    t_acq: float
    arrays: tuple[np.ndarray, ...] = ()
    stamps: tuple[tuple[str, int], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MessageError(f"unknown message kind {self.kind!r}")
        if not isinstance(self.seq, int) or self.seq < 0:
            raise MessageError(f"seq must be a non-negative int, got {self.seq!r}")
        for a in self.arrays:
            if not isinstance(a, np.ndarray):
                raise MessageError(f"arrays must be numpy arrays, got {type(a).__name__}")
            if a.dtype.str not in _ALLOWED_DTYPES and a.dtype.newbyteorder("=").str not in _ALLOWED_DTYPES:
                raise DtypeError(f"dtype {a.dtype} cannot travel on the wire")

    def stamped(self, stage: str, t_ns: int | None = None) -> "Message":
        """A copy with one more ``(stage, monotonic_ns)`` stamp appended."""
        stamp = (stage, time.monotonic_ns() if t_ns is None else t_ns)
        return Message(
            self.topic, self.kind, self.seq, self.source, self.t_acq,
            self.arrays, self.stamps + (stamp,), self.meta,
        )

    def stamp(self, stage: str) -> int | None:
        """The first time stamp of ``stage``, or None."""
        for name, t in self.stamps:
            if name == stage:
                return t
        return None


def meta_int(msg: Message, key: str, default: int | None = None) -> int:
    """An integer meta field, or MessageError (a producer's bad meta must not crash us)."""
    value = msg.meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HeaderError(f"meta field {key!r} of a {msg.kind} message is {value!r}, not an int")
    return value
