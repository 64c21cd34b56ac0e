"""The one message format every cortexcast stream uses.

On the wire a message is a ZeroMQ multipart ``[topic, header, buffer, ...]``:

* ``topic``  – UTF-8 bytes, used by SUB sockets for prefix filtering;
* ``header`` – msgpack map (see :func:`encode`), never pickle;
* ``buffer`` – one raw, C-contiguous numpy buffer per array, described in the
  header by dtype string and shape, sent with ``copy=False``.

``encode`` and ``decode`` are an explicit pair with a round-trip test; all
validation of untrusted bytes happens in ``decode`` and raises
:class:`MessageError` subclasses, never anything else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import msgpack
import numpy as np

SCHEMA_VERSION = 1

#: Message kinds and the topics they normally travel on.
KINDS = frozenset(
    {"frame", "sync", "stimulus", "activity", "reconstruction", "heartbeat", "status", "event"}
)

#: dtypes allowed on the wire (no object arrays, nothing that needs pickle).
_ALLOWED_DTYPES = frozenset(
    np.dtype(t).str
    for t in ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "?")
)


class MessageError(ValueError):
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


def _wire_array(a: np.ndarray) -> np.ndarray:
    """C-contiguous, native byte order (copies only when the array is not already)."""
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


def meta_int(msg: Message, key: str, default: int | None = None) -> int:
    """An integer meta field, or MessageError (a producer's bad meta must not crash us)."""
    value = msg.meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HeaderError(f"meta field {key!r} of a {msg.kind} message is {value!r}, not an int")
    return value


def encode(msg: Message) -> list[Any]:
    """Message -> multipart frames. Contiguous native arrays are not copied."""
    arrays = [_wire_array(a) for a in msg.arrays]
    header = {
        "v": SCHEMA_VERSION,
        "kind": msg.kind,
        "seq": msg.seq,
        "src": msg.source,
        "t": float(msg.t_acq),
        "stamps": [[s, int(t)] for s, t in msg.stamps],
        "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays],
        "meta": msg.meta,
    }
    frames: list[Any] = [msg.topic.encode(), msgpack.packb(header, use_bin_type=True)]
    frames.extend(memoryview(a).cast("B") if a.size else b"" for a in arrays)
    return frames


def _buffer_of(part: Any) -> memoryview:
    """zmq.Frame -> its buffer; bytes/memoryview pass through."""
    buf = getattr(part, "buffer", part)
    return memoryview(buf)


def decode(frames: Sequence[Any]) -> Message:
    """Multipart frames -> Message. Raises a MessageError subclass on any fault.

    Arrays are zero-copy, read-only views on the received buffers.
    """
    if len(frames) < 2:
        raise MessageError(f"expected at least 2 parts (topic, header), got {len(frames)}")
    try:
        topic = bytes(_buffer_of(frames[0])).decode()
    except UnicodeDecodeError as exc:
        raise HeaderError("topic is not UTF-8") from exc
    try:
        header = msgpack.unpackb(bytes(_buffer_of(frames[1])), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise HeaderError(f"header is not msgpack: {exc}") from exc
    if not isinstance(header, dict):
        raise HeaderError("header is not a map")
    version = header.get("v")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(f"schema version {version!r}, this build reads {SCHEMA_VERSION}")
    try:
        kind = header["kind"]
        seq = header["seq"]
        source = header["src"]
        t_acq = float(header["t"])
        stamps = tuple((str(s), int(t)) for s, t in header["stamps"])
        specs = header["arrays"]
        meta = header.get("meta") or {}
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise HeaderError(f"header field missing or wrong type: {exc}") from exc
    if not isinstance(kind, str) or not isinstance(source, str) or not isinstance(meta, dict):
        raise HeaderError("kind/src must be strings and meta a map")
    if not isinstance(specs, list) or len(specs) != len(frames) - 2:
        n = len(specs) if isinstance(specs, list) else "?"
        raise BufferError_(f"header describes {n} arrays, message has {len(frames) - 2} buffers")
    arrays = []
    for spec, part in zip(specs, frames[2:]):
        try:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(s) for s in spec["shape"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise DtypeError(f"bad array spec {spec!r}") from exc
        if dtype.str not in _ALLOWED_DTYPES or any(s < 0 for s in shape) or len(shape) > 32:
            raise DtypeError(f"dtype {spec.get('dtype')!r} / shape {shape} not allowed")
        buf = _buffer_of(part)
        expected = dtype.itemsize
        for s in shape:  # Python ints: no silent overflow of a hostile shape
            expected *= s
        if buf.nbytes != expected:
            raise BufferError_(
                f"buffer of {buf.nbytes} bytes, header says {shape} {dtype} = {expected} bytes"
            )
        arrays.append(np.frombuffer(buf, dtype=dtype).reshape(shape))
    return Message(topic, kind, seq, source, t_acq, tuple(arrays), stamps, meta)
