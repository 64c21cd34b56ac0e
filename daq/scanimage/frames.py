"""What every ScanImage frame source shares: settings, pixel mapping, frame numbering, idling.

ScanImage delivers signed 16-bit pixels (int16); cortexcast frames are uint16.
:func:`to_uint16` maps one to the other (see docs/scanimage.md):

* ``"clip"`` (default): negative values -> 0, everything else unchanged. Lossless for
  the non-negative range 0..32767, which is where a PMT signal with ScanImage's
  channel offset subtracted lives; the few negative noise samples become 0.
* ``"offset"``: value + 32768. Lossless for every int16, but the baseline moves by
  32768 counts, so ΔF/F computed on it is wrong unless the decoder's ROI
  extraction subtracts the offset again. Use it only to inspect raw data.

:class:`FrameNumbers` turns ScanImage's frame numbers (1-based, per acquisition
mode) into our 0-based, strictly increasing ``ImagingFrame.index``: a frame number
seen before is never published twice, a jump is logged loudly and counted, and a
restart at the first number (a new GRAB / LOOP) continues the index where it was.
"""

from __future__ import annotations

from cortexcast.core.errors import CortexcastError
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from cortexcast.daq.source import AcquisitionError

log = logging.getLogger(__name__)

Int16Mode = Literal["clip", "offset"]


class FrameFormatError(CortexcastError, ValueError):
    """A frame message or page does not have the layout it should; the text says how.

    ``kind`` names the fault in one word (counted per kind by the sources).
    """

    def __init__(self, text: str, kind: str = "format") -> None:
        super().__init__(text)
        self.kind = kind


def to_uint16(pixels: np.ndarray, mode: Int16Mode = "clip") -> np.ndarray:
    """A new uint16 (H, W) array from ScanImage int16 (or already uint16) pixels."""
    if pixels.dtype == np.uint16:
        return np.array(pixels, copy=True)
    if pixels.dtype != np.int16:
        raise FrameFormatError(f"pixels must be int16 or uint16, got {pixels.dtype}")
    if mode == "offset":
        return (pixels.astype(np.int32) + 32768).astype(np.uint16)
    return np.clip(pixels, 0, None).astype(np.uint16)


def to_int16(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """uint16 frame -> int16 as ScanImage stores it (stand-ins); values > 32767 are clipped.

    Returns the array and how many pixels were clipped.
    """
    a = np.asarray(pixels)
    over = int(np.count_nonzero(a > 32767))
    return np.minimum(a, 32767).astype(np.int16), over


@dataclass
class FrameNumbers:
    """ScanImage frame number -> our imaging-frame index, with gap and duplicate counts.

    ``first`` is the number ScanImage gives the first frame (1). ``accept``
    returns the index to publish, or None for a number already published.
    """

    source: str
    first: int = 1
    counts: dict[str, int] = field(default_factory=lambda: {
        "gaps": 0, "missing": 0, "duplicates": 0, "restarts": 0})
    _last: int | None = None
    _offset: int = 0
    _next_index: int = 0

    def status(self, prefix: str) -> dict[str, int]:
        """The counters as flat ``<prefix>_<name>`` entries (for the daq's heartbeat/stats)."""
        return {f"{prefix}_frame_gaps": self.counts["gaps"],
                f"{prefix}_frames_missing": self.counts["missing"],
                f"{prefix}_frames_repeated": self.counts["duplicates"],
                f"{prefix}_restarts": self.counts["restarts"]}

    def accept(self, number: int) -> int | None:
        if self._last is not None:
            if number == self.first and self._last >= self.first:
                self.counts["restarts"] += 1
                self._offset = self._next_index
                log.info("%s: frame numbers restarted at %d (new acquisition); indices go on "
                         "from %d", self.source, number, self._offset)
            elif number <= self._last:
                if not self.counts["duplicates"]:
                    log.warning("%s: frame %d arrived again after %d; not published again "
                                "(further ones only counted)", self.source, number, self._last)
                self.counts["duplicates"] += 1
                return None
            elif number > self._last + 1:
                missing = number - self._last - 1
                self.counts["gaps"] += 1
                self.counts["missing"] += missing
                log.error("%s: FRAME GAP: %d frame(s) missing between ScanImage frames %d and "
                          "%d (%d gaps, %d frames missing so far)", self.source, missing,
                          self._last, number, self.counts["gaps"], self.counts["missing"])
        index = self._offset + number - self.first
        if index < self._next_index:  # numbers below `first` after a restart
            self.counts["duplicates"] += 1
            return None
        self._last = number
        self._next_index = index + 1
        return index


@dataclass(frozen=True)
class FrameSourceSettings:
    """What every ScanImage frame source shares."""

    channel: int = 1
    """ScanImage channel to publish. Stream: position among the channels in each message
    (1 = first logged channel). Bridge: the channel number the MATLAB function sends.
    TIFF: position among the saved channels (1 = first)."""
    int16: Int16Mode = "clip"
    """int16 -> uint16: "clip" (negatives -> 0, lossless for 0..32767) or "offset" (+32768)."""
    first_frame_number: int = 1
    """The number ScanImage gives the first frame (ScanImage counts from 1)."""
    timeout_s: float | None = None
    """No frame for this long (also before the first) -> error naming the source. None: wait."""
    end_after_idle_s: float | None = None
    """After the first frame, no new one for this long ends the source (tests, stand-ins).
    None: a live rig waits for the next acquisition."""

    def __post_init__(self) -> None:
        if self.channel < 1:
            raise ValueError(f"channel must be >= 1, got {self.channel}")
        for name in ("timeout_s", "end_after_idle_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")


class IdleClock:
    """Decides when a source that has seen no frame for a while must fail or end."""

    def __init__(self, what: str, timeout_s: float | None, end_after_idle_s: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.timeout_s, self.end_after_idle_s = what, timeout_s, end_after_idle_s
        self.clock = clock
        self.last = clock()
        self.seen = False

    def frame(self) -> None:
        self.last, self.seen = self.clock(), True

    def should_end(self) -> bool:
        """True when the source should end; raises AcquisitionError on a timeout."""
        idle = self.clock() - self.last
        if self.seen and self.end_after_idle_s is not None and idle >= self.end_after_idle_s:
            log.info("%s: no frame for %.1f s: source ends", self.what, idle)
            return True
        if self.timeout_s is not None and idle >= self.timeout_s:
            state = "since the last one" if self.seen else "since the source started"
            raise AcquisitionError(f"{self.what}: no frame for {idle:.1f} s {state} "
                                   f"(timeout_s = {self.timeout_s}); is ScanImage acquiring "
                                   "and the endpoint/folder right?")
        return False
