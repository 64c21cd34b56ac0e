"""The typed events that travel between cortexcast's processes, and their one message codec.

Every source yields the first three, the daq publishes them, replay re-creates them; the
decoder publishes :class:`Activity` and :class:`Reconstruction`, the closed loop
:class:`LoopEvent`. :func:`to_message` and :func:`from_message` are the only place that knows
which topic, kind, meta fields and arrays stand for which event (the table in
docs/architecture.md), so consumers get typed, validated events and never dig in raw
``meta`` dicts. :func:`from_message` raises :class:`EventMetaError` or
:class:`EventArrayError` (both :class:`MessageError`) for a message that does not hold what
its kind needs, never anything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from cortexcast.core.message import BufferError_, HeaderError, Message


@dataclass(frozen=True)
class ImagingFrame:
    """One two-photon frame: ``pixels`` is (height, width) uint16.

    ``index`` counts imaging frames from 0 (ScanImage's frame number on a
    rig); ``t`` is the acquisition time in the rig's clock, seconds. ``meta`` holds a
    source's extras (``t_mono_ns``: when it was acquired, on this host's monotonic clock);
    they stay on this host (only ``imaging_frame`` goes on the wire).
    """

    index: int
    t: float
    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncEvent:
    """What was on the stimulus screen when imaging frame ``imaging_frame`` was taken.

    ``stim_frame`` is the global index of the stimulus frame on screen
    (-1: none / grey). ``photodiode`` is the raw photodiode trace sampled
    during the imaging frame (volts, float32), when the rig records one.
    ``behavior`` carries per-frame running speed (cm/s), pupil dilation and
    pupil centre when known.
    """

    imaging_frame: int
    t: float
    stim_frame: int
    t_flip: float | None = None
    photodiode: np.ndarray | None = None
    behavior: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StimulusFrame:
    """One stimulus frame as shown to the mouse: ``pixels`` is (36, 64) uint8."""

    index: int
    t: float
    pixels: np.ndarray
    clip: str = ""
    clip_frame: int = 0


@dataclass(frozen=True)
class Activity:
    """One imaging frame's activity vector (ΔF/F or deconvolved), float32 (neurons,)."""

    imaging_frame: int
    t: float
    values: np.ndarray


@dataclass(frozen=True)
class Reconstruction:
    """The decoder's reconstruction of stimulus frame ``stim_frame`` (-1: not known).

    ``pixels`` is float32 (36, 64) on the 0..255 scale; ``imaging_frame`` the frame it came
    from, ``lag`` the model's lag and ``model`` its name (None/"" when a producer omits them).
    """

    stim_frame: int
    t: float
    pixels: np.ndarray
    imaging_frame: int | None = None
    lag: int | None = None
    model: str = ""


@dataclass(frozen=True)
class LoopEvent:
    """One closed-loop firing as logged: rule, output, value, latency, ... (JSON-able)."""

    t: float
    record: dict[str, Any]


Event = Union[ImagingFrame, SyncEvent, StimulusFrame]
"""What an acquisition source yields."""

AnyEvent = Union[ImagingFrame, SyncEvent, StimulusFrame, Activity, Reconstruction, LoopEvent]

#: event type -> (topic, message kind)
TOPICS: dict[type, tuple[str, str]] = {
    ImagingFrame: ("frames", "frame"),
    SyncEvent: ("sync", "sync"),
    StimulusFrame: ("stimulus", "stimulus"),
    Activity: ("activity", "activity"),
    Reconstruction: ("reconstruction", "reconstruction"),
    LoopEvent: ("loop", "event"),
}


def topics_of(*event_types: type) -> tuple[str, ...]:
    """The topics these event types go out on (what a publisher of them serves)."""
    return tuple(TOPICS[t][0] for t in event_types)


class EventMetaError(HeaderError):
    """A message's meta fields do not hold what its kind needs."""

    reason = "bad_meta"


class EventArrayError(BufferError_):
    """A message's arrays are not what its kind needs (count, dimensions, size)."""

    reason = "bad_array"


@dataclass(frozen=True)
class MessageParts:
    """What :class:`~cortexcast.stream.pubsub.Publisher` needs to publish one event."""

    topic: str
    kind: str
    t_acq: float
    arrays: tuple[np.ndarray, ...]
    meta: dict[str, Any]


def to_message(event: AnyEvent) -> MessageParts:
    """The topic, kind, arrays and meta that stand for ``event`` on the wire."""
    try:
        topic, kind = TOPICS[type(event)]
    except KeyError:
        raise TypeError(f"not an event: {type(event).__name__}") from None
    arrays: tuple[np.ndarray, ...]
    if isinstance(event, ImagingFrame):
        arrays, meta = (event.pixels,), {"imaging_frame": event.index}
    elif isinstance(event, SyncEvent):
        arrays = () if event.photodiode is None else (np.asarray(event.photodiode, np.float32),)
        meta = {"imaging_frame": event.imaging_frame, "stim_frame": event.stim_frame,
                "t_flip": event.t_flip,
                "behavior": {str(k): float(v) for k, v in event.behavior.items()}}
    elif isinstance(event, StimulusFrame):
        arrays = (event.pixels,)
        meta = {"stim_frame": event.index, "clip": event.clip, "clip_frame": event.clip_frame}
    elif isinstance(event, Activity):
        arrays, meta = (event.values,), {"imaging_frame": event.imaging_frame}
    elif isinstance(event, Reconstruction):
        arrays = (event.pixels,)
        meta = {"imaging_frame": event.imaging_frame, "stim_frame": event.stim_frame,
                "lag": event.lag, "model": event.model}
    else:
        arrays, meta = (), dict(event.record)
    return MessageParts(topic, kind, float(event.t), arrays, meta)


def from_message(msg: Message) -> AnyEvent:
    """The typed event ``msg`` stands for; EventMetaError / EventArrayError if it cannot."""
    kind = msg.kind
    if kind == "frame":
        pixels = _image(msg)
        extra = {k: v for k, v in msg.meta.items() if k != "imaging_frame"}
        return ImagingFrame(_int(msg, "imaging_frame"), msg.t_acq, pixels, extra)
    if kind == "sync":
        if len(msg.arrays) > 1 or (msg.arrays and msg.arrays[0].ndim != 1):
            raise EventArrayError(f"sync message carries {len(msg.arrays)} arrays; expected "
                                  "none or one 1-D photodiode trace")
        return SyncEvent(
            imaging_frame=_int(msg, "imaging_frame"), t=msg.t_acq,
            stim_frame=_int(msg, "stim_frame", -1), t_flip=_float(msg, "t_flip"),
            photodiode=msg.arrays[0] if msg.arrays else None, behavior=_behavior(msg))
    if kind == "stimulus":
        pixels = _image(msg)
        if pixels.dtype != np.uint8:
            pixels = np.clip(np.nan_to_num(pixels), 0, 255).astype(np.uint8)
        return StimulusFrame(_int(msg, "stim_frame"), msg.t_acq, pixels,
                             _str(msg, "clip"), _int(msg, "clip_frame", 0))
    if kind == "activity":
        if len(msg.arrays) != 1 or msg.arrays[0].ndim != 1:
            raise EventArrayError("activity message must carry one 1-D array")
        return Activity(_int(msg, "imaging_frame"), msg.t_acq, msg.arrays[0])
    if kind == "reconstruction":
        pixels = _image(msg)
        return Reconstruction(_int(msg, "stim_frame"), msg.t_acq,
                              pixels if pixels.dtype == np.float32 else pixels.astype(np.float32),
                              _int(msg, "imaging_frame", None), _int(msg, "lag", None),
                              _str(msg, "model"))
    if kind == "event":
        return LoopEvent(msg.t_acq, dict(msg.meta))
    raise EventMetaError(f"a {kind!r} message stands for no event")


_MISSING = object()


def _int(msg: Message, key: str, default: Any = _MISSING) -> Any:
    value = msg.meta.get(key, _MISSING)
    if value is _MISSING or (value is None and default is None):
        if default is _MISSING:
            raise EventMetaError(f"a {msg.kind} message lacks meta field {key!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventMetaError(f"meta field {key!r} of a {msg.kind} message is {value!r}, "
                             "not an int")
    return value


def _float(msg: Message, key: str) -> float | None:
    value = msg.meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventMetaError(f"meta field {key!r} of a {msg.kind} message is {value!r}, "
                             "not a number")
    return float(value)


def _str(msg: Message, key: str) -> str:
    """A name field; an integer name (a clip numbered, not named) is taken as its digits."""
    value = msg.meta.get(key, "")
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise EventMetaError(f"meta field {key!r} of a {msg.kind} message is {value!r}, "
                             "not a name")
    return str(value)


def _behavior(msg: Message) -> dict[str, float]:
    raw = msg.meta.get("behavior") or {}
    if not isinstance(raw, dict):
        raise EventMetaError(f"meta field 'behavior' of a sync message is {raw!r}, not a map")
    out: dict[str, float] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)):
            raise EventMetaError(f"behavior entry {k!r}: {v!r} is not a name and a number")
        if math.isfinite(v):  # a NaN/inf reading is a missing one
            out[k] = float(v)
    return out


def _image(msg: Message) -> np.ndarray:
    if len(msg.arrays) != 1 or msg.arrays[0].ndim != 2 or msg.arrays[0].size == 0:
        shapes = [a.shape for a in msg.arrays]
        raise EventArrayError(f"a {msg.kind} message must carry one non-empty 2-D image, "
                              f"got arrays of shapes {shapes}")
    return msg.arrays[0]
