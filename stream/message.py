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

import warnings
from typing import Any, Sequence

import msgpack
import numpy as np

from cortexcast.core.message import (  # noqa: F401  (the wire's types, re-exported)
    _ALLOWED_DTYPES, BufferError_, DtypeError, HeaderError, Message, MessageError,
    SchemaVersionError, meta_int,
)

SCHEMA_VERSION = 1


def _wire_array(a: np.ndarray) -> np.ndarray:
    """C-contiguous, native byte order (copies only when the array is not already).

    Keeps the shape: ``np.ascontiguousarray`` alone would turn a 0-d array into 1-d.
    """
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a).reshape(a.shape)


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


#: Limits on what a header may describe. Nothing cortexcast sends comes near them (its
#: arrays are 1-3-d, a message carries a handful of stamps); they keep a hostile header
#: from reaching numpy with a shape it cannot represent, or from making consumers keep
#: unbounded names.
MAX_NDIM = 32  # numpy 1.x's own limit
MAX_ARRAYS = 64
MAX_STAMPS = 256
MAX_NAME = 256  # characters of a stamp name, a source name, a topic
MAX_DTYPE_NAME = 16
#: The largest array numpy can describe is under 2**63 bytes, counting every non-zero
#: dimension even when another one is 0; a spec must stay below this (Python ints).
_MAX_EXTENT = 1 << 62

_DTYPES = {s: np.dtype(s) for s in _ALLOWED_DTYPES}


def _buffer_of(part: Any) -> memoryview:
    """zmq.Frame -> its buffer; bytes/memoryview pass through. BufferError_ if neither."""
    buf = getattr(part, "buffer", part)
    try:
        return memoryview(buf)
    except TypeError as exc:
        raise BufferError_(f"a message part is a {type(part).__name__}, not a buffer") from exc


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _dtype_of(name: Any) -> np.dtype:
    """A spec's dtype string -> an allowed plain numeric/bool dtype, or DtypeError.

    The wire's own strings (``a.dtype.str``) are looked up; a few other spellings
    (``"uint16"``) go through numpy, only when short, and must land on an allowed dtype.
    """
    if not isinstance(name, str):
        raise DtypeError(f"dtype must be a string, got {type(name).__name__}")
    dtype = _DTYPES.get(name)
    if dtype is not None:
        return dtype
    if len(name) > MAX_DTYPE_NAME:
        raise DtypeError(f"dtype {name[:MAX_DTYPE_NAME]!r}... is not allowed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dtype = np.dtype(name)
    except Exception as exc:  # numpy's parser raises several types on odd strings
        raise DtypeError(f"dtype {name!r} does not parse") from exc
    if dtype.str not in _DTYPES or dtype.fields is not None or dtype.subdtype is not None:
        raise DtypeError(f"dtype {name!r} is not allowed on the wire")
    return _DTYPES[dtype.str]


def _shape_of(shape: Any, dtype: np.dtype) -> tuple[tuple[int, ...], int]:
    """A spec's shape -> (shape, its size in bytes), or DtypeError; never asks numpy."""
    if not isinstance(shape, (list, tuple)):
        raise DtypeError(f"shape must be a list, got {type(shape).__name__}")
    if len(shape) > MAX_NDIM:
        raise DtypeError(f"shape has {len(shape)} dimensions, at most {MAX_NDIM} allowed")
    if not all(_is_int(s) and s >= 0 for s in shape):
        raise DtypeError(f"shape {list(shape)[:MAX_NDIM]!r} is not a list of non-negative ints")
    nbytes = extent = dtype.itemsize
    for s in shape:  # Python ints: no overflow, whatever the shape
        nbytes *= s
        extent *= max(s, 1)
        if extent >= _MAX_EXTENT:
            raise DtypeError(f"shape {list(shape)!r} of {dtype} is too large to represent")
    return tuple(shape), nbytes


def _stamps_of(stamps: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(stamps, (list, tuple)) or len(stamps) > MAX_STAMPS:
        raise HeaderError(f"stamps must be a list of at most {MAX_STAMPS} [name, ns] pairs")
    out = []
    for item in stamps:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not isinstance(item[0], str) or not _is_int(item[1])
                or len(item[0]) > MAX_NAME):
            raise HeaderError(f"stamp {str(item)[:80]!r} is not a [name, ns] pair")
        out.append((item[0], item[1]))
    return tuple(out)


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
        t_acq = header["t"]
        stamps = header["stamps"]
        specs = header["arrays"]
    except KeyError as exc:
        raise HeaderError(f"header field missing: {exc}") from exc
    meta = header.get("meta")
    meta = {} if meta is None else meta
    if not isinstance(kind, str) or not isinstance(source, str) or not isinstance(meta, dict):
        raise HeaderError("kind/src must be strings and meta a map")
    if len(source) > MAX_NAME or len(topic) > MAX_NAME:
        raise HeaderError(f"src/topic longer than {MAX_NAME} characters")
    if not _is_int(seq) or seq < 0:
        raise HeaderError(f"seq must be a non-negative int, got {str(seq)[:40]!r}")
    if not (_is_int(t_acq) or isinstance(t_acq, float)):
        raise HeaderError(f"t must be a number, got {type(t_acq).__name__}")
    try:
        t_acq = float(t_acq)
    except OverflowError as exc:  # an int beyond float range
        raise HeaderError("t is out of range") from exc
    stamps = _stamps_of(stamps)
    if not isinstance(specs, list) or len(specs) != len(frames) - 2:
        n = len(specs) if isinstance(specs, list) else "?"
        raise BufferError_(f"header describes {n} arrays, message has {len(frames) - 2} buffers")
    if len(specs) > MAX_ARRAYS:
        raise BufferError_(f"{len(specs)} arrays in one message, at most {MAX_ARRAYS} allowed")
    arrays = []
    for spec, part in zip(specs, frames[2:]):
        if not isinstance(spec, dict) or "dtype" not in spec or "shape" not in spec:
            raise DtypeError(f"bad array spec {str(spec)[:80]!r}")
        dtype = _dtype_of(spec["dtype"])
        shape, expected = _shape_of(spec["shape"], dtype)
        buf = _buffer_of(part)
        if buf.nbytes != expected:
            raise BufferError_(
                f"buffer of {buf.nbytes} bytes, header says {shape} {dtype} = {expected} bytes"
            )
        try:  # checked above; this only guards against a numpy surprise
            arrays.append(np.frombuffer(buf, dtype=dtype).reshape(shape))
        except (ValueError, TypeError, OverflowError, MemoryError) as exc:
            raise BufferError_(f"buffer does not fit {shape} {dtype}: {exc}") from exc
    return Message(topic, kind, seq, source, t_acq, tuple(arrays), stamps, meta)
