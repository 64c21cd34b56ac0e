"""The typed events that travel between cortexcast's processes.

Every source yields them, the daq publishes them, replay re-creates them and every consumer
receives them: the one vocabulary of the pipeline, free of any transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np


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
