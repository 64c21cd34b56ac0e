"""Imaging frames -> per-stimulus-frame trial rows: the assembly ``simulate`` and ``export`` share.

A trial is a run of consecutive global stimulus frames ``start .. start + length - 1``
(one clip shown once). Each imaging frame arrives with the stimulus frame that was on screen
during it (its `sync`) and its values: the activity vector, behaviour ``[pupil, running]``
and pupil centre ``[x, y]``. Row ``f`` of a trial is then, as in the Sensorium data and as
the live decoder's :class:`~cortexcast.decoder.live.stimulus_clock.StimulusClock` feeds
the model:

* the mean over the imaging frames during which stimulus frame ``f`` was on screen;
* if there was none (imaging slower than the stimulus), the row before it; for the trial's
  first frame, the values of the imaging frame just before the trial's first one.

:class:`SessionAssembler` takes imaging frames in acquisition order and hands each trial
out as soon as a later stimulus frame shows up, so one trial's rows are held at a time.
:class:`DatasetOutput` writes the trials in the Sensorium layout with the train tier's
statistics.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from cortexcast.decoder.offline.sensorium_writer import SensoriumWriter


class FrameValues(NamedTuple):
    """One imaging frame's values: activity (N,), behaviour (2,) [pupil, running], pupil
    centre (2,) [x, y] (float32; NaN where unknown)."""

    activity: np.ndarray
    behavior: np.ndarray
    pupil_center: np.ndarray


class TrialRows(NamedTuple):
    """A finished trial: responses (N, T), behaviour (2, T), pupil centre (2, T), and how many
    of its T stimulus frames no imaging frame saw (held from the frame before)."""

    responses: np.ndarray
    behavior: np.ndarray
    pupil_center: np.ndarray
    held: int


def zero_values(n_neurons: int) -> FrameValues:
    """What a trial holds when no imaging frame came before it."""
    return FrameValues(np.zeros(n_neurons, np.float32), np.full(2, np.nan, np.float32),
                       np.full(2, np.nan, np.float32))


class TrialAssembler:
    """Sums the imaging frames of one trial per stimulus frame; :meth:`finish` averages."""

    def __init__(self, n_neurons: int, length: int, before: FrameValues) -> None:
        self.resp = np.zeros((n_neurons, length), np.float32)
        self.beh = np.zeros((2, length), np.float32)
        self.eye = np.zeros((2, length), np.float32)
        self.count = np.zeros(length, np.int64)
        self.before = before

    @property
    def length(self) -> int:
        return self.count.size

    def add(self, f: int, values: FrameValues) -> None:
        """Imaging frame seen while trial frame ``f`` was on screen."""
        self.resp[:, f] += values.activity
        self.beh[:, f] += values.behavior
        self.eye[:, f] += values.pupil_center
        self.count[f] += 1

    def finish(self) -> TrialRows:
        prev = self.before
        held = 0
        for f in range(self.length):
            if self.count[f]:
                if self.count[f] > 1:
                    self.resp[:, f] /= self.count[f]
                    self.beh[:, f] /= self.count[f]
                    self.eye[:, f] /= self.count[f]
                prev = FrameValues(self.resp[:, f], self.beh[:, f], self.eye[:, f])
            else:
                self.resp[:, f], self.beh[:, f], self.eye[:, f] = prev
                held += 1
        return TrialRows(self.resp, self.beh, self.eye, held)


@dataclass
class AssemblyCounts:
    imaging_frames: int = 0
    """Imaging frames fed."""
    in_trials: int = 0
    """Imaging frames that fell on a trial's stimulus frame."""
    late: int = 0
    """Imaging frames whose stimulus frame belongs to a trial already handed out (sync went
    backwards); not used."""
    held_frames: int = 0
    """Stimulus frames of finished trials that no imaging frame saw (held)."""
    trials: int = 0


@dataclass
class SessionAssembler:
    """Imaging frames in acquisition order -> finished trials, one open at a time.

    ``starts``/``lengths``: the trials' first global stimulus frame and frame count, sorted
    by start, not overlapping. ``on_trial(position, rows)`` gets each trial (its position in
    ``starts``) once no later imaging frame can add to it; trials no imaging frame saw are
    handed out with held values too. Call :meth:`close` after the last frame.
    """

    starts: Sequence[int]
    lengths: Sequence[int]
    n_neurons: int
    on_trial: Callable[[int, TrialRows], None]
    counts: AssemblyCounts = field(default_factory=AssemblyCounts)

    def __post_init__(self) -> None:
        self.starts = [int(s) for s in self.starts]
        self.lengths = [int(n) for n in self.lengths]
        for k in range(1, len(self.starts)):
            if self.starts[k] < self.starts[k - 1] + self.lengths[k - 1]:
                raise ValueError(f"trials {k - 1} and {k} overlap or are not in order")
        self.last = zero_values(self.n_neurons)
        """The newest imaging frame's values (held into a trial that starts after it)."""
        self.next_pos = 0
        """The first trial not yet handed out."""
        self.open: TrialAssembler | None = None

    def _trial_of(self, stim: int) -> int | None:
        k = bisect.bisect_right(self.starts, stim) - 1
        if k >= 0 and stim < self.starts[k] + self.lengths[k]:
            return k
        return None

    def _hand_out_before(self, pos: int) -> None:
        """Finish every trial before position ``pos`` (the open one, and unseen ones held)."""
        while self.next_pos < pos:
            asm = self.open or TrialAssembler(self.n_neurons, self.lengths[self.next_pos],
                                              self.last)
            self.open = None
            rows = asm.finish()
            self.counts.held_frames += rows.held
            self.counts.trials += 1
            self.on_trial(self.next_pos, rows)
            self.next_pos += 1

    def feed(self, stim_frame: int, values: FrameValues) -> None:
        """One imaging frame, during which global stimulus frame ``stim_frame`` (-1: none) was
        on screen."""
        self.counts.imaging_frames += 1
        pos = self._trial_of(stim_frame) if stim_frame >= 0 else None
        if pos is not None and pos < self.next_pos:
            self.counts.late += 1
            pos = None
        elif pos is None and stim_frame >= 0:
            # between trials: everything that ended before this frame is complete
            self._hand_out_before(bisect.bisect_right(self.starts, stim_frame))
        if pos is not None:
            self._hand_out_before(pos)
            if self.open is None:
                self.open = TrialAssembler(self.n_neurons, self.lengths[pos], self.last)
            self.open.add(stim_frame - self.starts[pos], values)
            self.counts.in_trials += 1
        self.last = FrameValues(np.array(values.activity, np.float32, copy=True),
                                np.array(values.behavior, np.float32, copy=True),
                                np.array(values.pupil_center, np.float32, copy=True))

    def close(self) -> None:
        """Hand out every trial not handed out yet."""
        self._hand_out_before(len(self.starts))


class TrainStatistics:
    """Running mean/std of the train tier (float64 sums, NaN skipped), written to
    ``meta/statistics``."""

    def __init__(self) -> None:
        self.n: dict[str, np.ndarray] = {}
        self.s: dict[str, np.ndarray] = {}
        self.ss: dict[str, np.ndarray] = {}

    def add(self, key: str, x: np.ndarray, axis: tuple[int, ...] | int | None) -> None:
        x = np.asarray(x, np.float64)
        finite = np.isfinite(x)
        x = np.where(finite, x, 0.0)
        self.n[key] = self.n.get(key, 0.0) + finite.sum(axis=axis)
        self.s[key] = self.s.get(key, 0.0) + x.sum(axis=axis)
        self.ss[key] = self.ss.get(key, 0.0) + (x * x).sum(axis=axis)

    def write(self, writer: SensoriumWriter) -> None:
        for key in self.n:
            n = np.asarray(self.n[key], np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(n > 0, self.s[key] / np.maximum(n, 1), np.nan)
                var = np.where(n > 0, self.ss[key] / np.maximum(n, 1), np.nan) - mean * mean
            writer.statistics(key, mean, np.sqrt(np.maximum(var, 0.0)))


class DatasetOutput:
    """A Sensorium-layout folder written one trial at a time, with train-tier statistics."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.writer = SensoriumWriter(self.root)
        self.stats = TrainStatistics()

    def trial(self, tid: int, tier: str, video: np.ndarray, rows: TrialRows) -> None:
        """Trial ``tid``: video (H, W, T) float32 and its rows; train trials feed the stats."""
        self.writer.trial(tid, video, rows.responses, rows.behavior, rows.pupil_center)
        if tier == "train":
            self.stats.add("responses", rows.responses, axis=1)
            self.stats.add("videos", video, axis=None)
            self.stats.add("behavior", rows.behavior, axis=1)
            self.stats.add("pupil_center", rows.pupil_center, axis=1)

    def finish(self, tiers: np.ndarray, coordinates: np.ndarray | None,
               **trial_meta: np.ndarray) -> None:
        """``meta/trials`` (tiers, ``trial_meta``), ``meta/neurons`` and the statistics."""
        self.writer.trials_meta(tiers, **trial_meta)
        n = None if coordinates is None else len(coordinates)
        if n is not None:
            self.writer.neurons(np.arange(n, dtype=np.int64), coordinates)
        self.stats.write(self.writer)
