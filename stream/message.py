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

from typing import Any, Sequence

import msgpack
import numpy as np

from cortexcast.core.message import (  # noqa: F401  (the wire's types, re-exported)
    _ALLOWED_DTYPES, BufferError_, DtypeError, HeaderError, Message, MessageError,
    SchemaVersionError, meta_int,
)

SCHEMA_VERSION = 1


def _wire_array(a: np.ndarray) -> np.ndarray:
    """C-contiguous, native byte order (copies only when the array is not already)."""
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


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
