"""Helpers of ``cortexcast export``: trial videos, TIFF coverage, read-ahead, progress."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import numpy as np

from cortexcast.core.events import StimulusFrame, from_message
from cortexcast.core.message import MessageError
from cortexcast.decoder.offline.session_frames import TiffFrames
from cortexcast.decoder.offline.session_plan import SessionPlan, TrialPlan
from cortexcast.stream.recording import RecordingError, RecordingReader

log = logging.getLogger("export")

STIM_SHAPE = (36, 64)
PLACEHOLDER_LEVEL = 128
"""The stimulus-identity source's grey placeholder when it has no clip library."""



class TrialVideos:
    """A trial's video, (36, 64, T) float32, from the recording's stimulus pixels.

    A stimulus frame missing from the recording, or a grey placeholder (the daq had no clip
    library), comes from the clip set when one is given; else the frame before is held.
    """

    def __init__(self, reader: RecordingReader, plan: SessionPlan, clip_set: Any = None) -> None:
        self.reader, self.plan, self.clip_set = reader, plan, clip_set
        self.counts = {"video_frames_from_clip_set": 0, "video_frames_held": 0,
                       "video_placeholder_frames": 0}
        self._warned = False

    def _clip(self, name: str) -> np.ndarray | None:
        if self.clip_set is None or name not in self.clip_set.clip_names:
            return None
        return self.clip_set.clip(name)

    def _stream_pixels(self, row: int) -> np.ndarray | None:
        try:
            event = from_message(self.reader.message(row))
        except (RecordingError, MessageError):
            return None
        return event.pixels if isinstance(event, StimulusFrame) else None

    def video(self, trial: TrialPlan) -> np.ndarray:
        clip = self._clip(trial.clip)
        out = np.empty((*STIM_SHAPE, trial.length), np.float32)
        prev = np.full(STIM_SHAPE, PLACEHOLDER_LEVEL, np.uint8)
        for f in range(trial.length):
            entry = self.plan.stimulus.get(trial.start + f)
            px = None
            if entry is not None and entry[0] == trial.clip:
                px = self._stream_pixels(entry[2])
                if px is not None and _placeholder(px):
                    self.counts["video_placeholder_frames"] += 1
                    if clip is not None:
                        px = None
                    elif not self._warned:
                        self._warned = True
                        log.warning("the recording's stimulus frames are grey placeholders "
                                    "(the daq had no [daq.stimulus] clip_library): pass the "
                                    "clip set with --clips DIR for the real pixels")
            if px is None and clip is not None and f < len(clip):
                px = clip[f]
                self.counts["video_frames_from_clip_set"] += 1
            elif px is None:
                px = prev
                self.counts["video_frames_held"] += 1
            if px.shape != STIM_SHAPE:
                raise ValueError(f"stimulus frame {trial.start + f} is {px.shape}, not "
                                 f"{STIM_SHAPE}")
            out[:, :, f] = px
            prev = px
        return out


def _placeholder(px: np.ndarray) -> bool:
    return bool(px.flat[0] == PLACEHOLDER_LEVEL and (px == PLACEHOLDER_LEVEL).all())


def uncovered_trials(plan: SessionPlan, frames: TiffFrames) -> list[int]:
    """Positions of the trials whose imaging frames the TIFFs do not all hold."""
    a, b = frames.span()
    return [k for k, t in enumerate(plan.trials)
            if t.first_imaging >= 0 and (t.first_imaging < a or t.last_imaging > b)]


class Progress:
    """A progress bar on stderr: tqdm when it is installed, else one line every 2 s."""

    def __init__(self, total: int, enabled: bool = True, rate_hz: float | None = None) -> None:
        self.total, self.enabled, self.rate_hz = total, enabled, rate_hz
        self.done = 0
        self.started = self._last = time.monotonic()
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="frame", desc="export", file=sys.stderr,
                                 mininterval=1.0)
            except ImportError:  # tqdm is the train extra's; a line of our own instead
                self._bar = None

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            return
        now = time.monotonic()
        if now - self._last >= 2.0:
            self._last = now
            print("\r" + self.line(now), end="", file=sys.stderr, flush=True)

    def line(self, now: float) -> str:
        el = max(now - self.started, 1e-9)
        fps = self.done / el
        left = (self.total - self.done) / fps if fps > 0 else 0.0
        real = f", {fps / self.rate_hz:.1f}x real time" if self.rate_hz else ""
        share = 100 * self.done / max(self.total, 1)
        return (f"export: {self.done}/{self.total} frames ({share:.0f} %), {fps:.0f} frames/s"
                f"{real}, {left / 60:.1f} min left")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            print("\r" + self.line(time.monotonic()), file=sys.stderr, flush=True)
