"""The acquisition-source interface every daq backend implements.

A source is a context manager whose :meth:`AcquisitionSource.events` yields
a time-ordered stream of three event types — the same ones whether they come
from the simulated rig, a replayed recording, ScanImage + an NI DAQ, or a
serial sync box — so backends are interchangeable and the daq process that
publishes them stays a few lines long.

A live source paces itself (it yields an imaging frame when the frame
exists); a dataset/benchmark source may run as fast as possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Union, runtime_checkable

import numpy as np


class AcquisitionError(RuntimeError):
    """A source failed (device vanished, file unreadable, ...). Vendor errors are chained."""


@dataclass(frozen=True)
class ImagingFrame:
    """One two-photon frame: ``pixels`` is (height, width) uint16.

    ``index`` counts imaging frames from 0 (ScanImage's frame number on a
    rig); ``t`` is the acquisition time in the rig's clock, seconds.
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


Event = Union[ImagingFrame, SyncEvent, StimulusFrame]


@runtime_checkable
class AcquisitionSource(Protocol):
    """What the daq process needs from a backend."""

    def __enter__(self) -> "AcquisitionSource": ...

    def __exit__(self, *exc: object) -> None: ...

    def events(self) -> Iterator[Event]:
        """Yield events in time order until the acquisition ends or the source is closed."""
        ...
