"""Which frames of a session ``cortexcast rois`` reads, and how it reads them.

A session is far too long to read whole (30 min at 512x512 is 28 GB). Sources with
random access (an array, a cortexcast recording: its records are read by seeking) give
short contiguous runs spread over the session; a source that can only be read in order
(``iter_frames(step)``, e.g. ScanImage TIFFs) gives every ``step``-th frame. Frames are
read ahead on a thread (:func:`cortexcast.decoder.offline.session_frames.read_ahead`) so
reading overlaps registration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cortexcast.core.errors import CortexcastError
from cortexcast.decoder.offline.roi_cells import DetectionError

log = logging.getLogger("cortexcast.decoder.offline.roi_frames")


ReadFn = Callable[[Sequence[int]], Iterator[tuple[int, np.ndarray]]]
"""Yields ``(position, frame)`` for the given increasing frame positions (0-based, in
the session's order; a frame that cannot be read is left out)."""


@dataclass(frozen=True)
class FrameAccess:
    read: ReadFn
    random: bool
    """True: any frame is read without the ones before it (contiguous runs are cheap)."""
    what: str


def frame_access(source: Any) -> FrameAccess:
    """How to read ``source``: an array ``(T, H, W)`` (a memmap too), an object with
    ``read_frames(positions)``, a :class:`~cortexcast.decoder.offline.session_frames.
    RecordingFrames` (records are read by seeking), or any session with
    ``iter_frames(step)`` (read in order, every ``step``-th frame)."""
    if isinstance(source, np.ndarray):
        return FrameAccess(lambda idx: ((int(i), np.asarray(source[i])) for i in idx), True,
                           "array")
    if hasattr(source, "read_frames"):
        return FrameAccess(source.read_frames, True, "random access")
    from cortexcast.decoder.offline.session_frames import RecordingFrames

    if isinstance(source, RecordingFrames):
        return FrameAccess(_recording_reader(source), True, "recording, by seeking")
    return FrameAccess(_strided_reader(source), False, "in order")


def _recording_reader(frames: Any) -> ReadFn:
    from cortexcast.core.events import ImagingFrame, from_message
    from cortexcast.decoder.offline.session_frames import FRAMES_TOPIC

    rows = frames.reader.select([FRAMES_TOPIC])

    def read(idx: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for i in idx:
            try:
                ev = from_message(frames.reader.message(int(rows[int(i)])))
            except CortexcastError as exc:
                log.warning("%s: frame %d unreadable (%s); left out", frames.source, i, exc)
                continue
            if isinstance(ev, ImagingFrame):
                yield int(i), ev.pixels

    return read


def _strided_reader(source: Any) -> ReadFn:
    def read(idx: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        idx = np.asarray(idx, np.int64)
        if idx.size == 0:
            return
        step = int(np.gcd.reduce(np.concatenate([idx[:1], np.diff(idx)]))) or 1
        want = set(idx.tolist())
        last = int(idx[-1])
        for k, (_, frame) in enumerate(source.iter_frames(step=step)):
            pos = k * step
            if pos in want:
                yield pos, frame
            if pos >= last:
                return

    return read


# ------------------------------------------------------------------------------ plan

@dataclass(frozen=True)
class SamplePlan:
    reference: np.ndarray
    """Frame positions that build the motion reference (0..2N-1)."""
    bins: list[np.ndarray]
    """Each bin's frame positions, in increasing order."""
    bin_frames: int
    step: int
    """1: each bin is a contiguous run; s > 1: bins of every s-th frame (a source read in
    order)."""

    @property
    def n_read(self) -> int:
        return len(np.union1d(self.reference, np.concatenate(self.bins)))

    def describe(self, frame_rate_hz: float) -> str:
        if self.step == 1:
            return (f"{len(self.bins)} bins of {self.bin_frames} contiguous frames "
                    f"({self.bin_frames / frame_rate_hz:.2f} s) spread over the session")
        return (f"one frame in {self.step}, {len(self.bins)} bins of {self.bin_frames} "
                "(the source is read in order)")


def plan_sample(n_frames: int, frame_rate_hz: float, *, max_frames: int, bin_s: float,
                reference_frames: int, max_bins: int = 1024, contiguous: bool = True
                ) -> SamplePlan:
    """The first ``2 * reference_frames`` frames, then bins of ``bin_s`` seconds spread
    evenly over the session, about ``max_frames`` frames in all; a bin is lengthened (up to
    twice) when more than ``max_bins`` would be needed.

    ``contiguous=False`` (a source read in order): every ``step``-th frame instead, with
    ``step`` such that about ``max_frames`` are read, grouped into bins of consecutive
    samples.
    """
    if n_frames < 10:
        raise DetectionError(f"the session has {n_frames} frames; detection needs at least 10")
    b0 = max(1, int(round(bin_s * frame_rate_hz)))
    n_ref = min(2 * reference_frames, n_frames)
    ref = np.arange(n_ref)
    budget = max(max_frames - n_ref, b0)
    if not contiguous and n_frames > budget + n_ref:
        step = -(-n_frames // budget)
        samples = np.arange(0, n_frames, step)
        g = max(1, int(round(b0 / step)), -(-samples.size // max_bins))
        n_bins = samples.size // g
        bins = [samples[k * g:(k + 1) * g] for k in range(n_bins)]
        return SamplePlan(ref, bins, g, step)
    b = max(b0, min(2 * b0, -(-budget // max_bins)))
    n_bins = min(budget // b, n_frames // b, max_bins)
    starts = np.unique(np.linspace(0, n_frames - b, max(n_bins, 1)).round().astype(np.int64))
    bins = [np.arange(s, s + b) for s in starts]
    return SamplePlan(ref, bins, b, 1)
