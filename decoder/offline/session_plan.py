"""What a recorded session showed and when: the first, cheap pass of ``cortexcast export``.

From a recording's ``sync`` and ``stimulus`` topics (never its frames) this builds:

* the sync table: per imaging frame, the global stimulus frame on screen and the behaviour
  ``[pupil, running, pupil_x, pupil_y]``. A value that is missing, not finite, or marked
  stale (``behavior_stale``, for the eye tracker's pupil and eye position) holds the last
  good value of that variable (NaN before the first); such values are counted;
* the stimulus table: per global stimulus frame, its clip, clip frame and record (pixels are
  read later, one trial at a time);
* the trials: runs of consecutive stimulus frames of one clip presentation (same clip,
  same ``frame - clip_frame``, clip frames counting from 0), and their tiers.

Tiers: a clip's tier is ``train``/``validation``/``test`` from the clip set (``--clips``, when
every clip of the recording is in it), else inferred: a clip shown once is a training clip,
one shown two or more times a test clip. Test clips -> ``final_test_main`` (every repeat);
validation clips -> ``oracle`` (the validation tier ``train`` uses); without validation clips
a seeded ``oracle_fraction`` of the training clips -> ``oracle``; the rest -> ``train``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexcast.core.behavior import BEHAVIOR_KEYS
from cortexcast.core.errors import CortexcastError
from cortexcast.core.events import StimulusFrame, SyncEvent, from_message
from cortexcast.core.message import MessageError
from cortexcast.stream.recording import RecordingError, RecordingReader

log = logging.getLogger(__name__)

EYE_KEYS = ("pupil", "pupil_x", "pupil_y")
"""Behaviour variables from the eye tracker: ``behavior_stale`` marks these stale."""


class SessionPlanError(CortexcastError, ValueError):
    """A recording cannot be turned into trials (no sync, no stimulus identity)."""


@dataclass(frozen=True)
class TrialPlan:
    start: int
    """Global stimulus frame of the trial's clip frame 0."""
    length: int
    clip: str
    tier: str = ""
    first_imaging: int = -1
    """First and last imaging frame whose sync shows one of its stimulus frames (-1: none)."""
    last_imaging: int = -1

    @property
    def stop(self) -> int:
        return self.start + self.length


@dataclass
class SessionPlan:
    recording: Path
    imaging: np.ndarray
    """(M,) imaging frames that have a sync, ascending."""
    stim: np.ndarray
    """(M,) the stimulus frame on screen during each (-1: none)."""
    behavior: np.ndarray
    """(M, 4) float32 [pupil, running, pupil_x, pupil_y], stale/missing values held."""
    sync_t: np.ndarray
    stimulus: dict[int, tuple[str, int, int]]
    """Global stimulus frame -> (clip, clip frame, record index in the recording)."""
    trials: list[TrialPlan]
    counts: dict[str, Any] = field(default_factory=dict)

    def sync_row(self, imaging_frame: int) -> int | None:
        """Row of ``imaging_frame`` in the sync table, or None if it has no sync."""
        k = int(np.searchsorted(self.imaging, imaging_frame))
        return k if k < len(self.imaging) and self.imaging[k] == imaging_frame else None

    def imaging_rate_hz(self) -> float | None:
        """The imaging rate the sync times show (median interval), if they can tell."""
        if len(self.sync_t) < 3:
            return None
        d = np.diff(self.sync_t) / np.maximum(np.diff(self.imaging), 1)
        d = d[np.isfinite(d) & (d > 0)]
        return float(1.0 / np.median(d)) if d.size else None


def _events(reader: RecordingReader, topic: str, kind: type, bad: Counter[str]
            ) -> Iterator[tuple[int, Any]]:
    for row in reader.select([topic]):
        try:
            event = from_message(reader.message(int(row)))
        except (RecordingError, MessageError) as exc:
            if not bad[topic]:
                log.error("%s: skipping an unreadable %s message (record %d): %s (further ones "
                          "counted)", reader.path, topic, row, exc)
            bad[topic] += 1
            continue
        if isinstance(event, kind):
            yield int(row), event


def read_sync(reader: RecordingReader, counts: dict[str, Any], bad: Counter[str]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(imaging frames, stimulus frames, behaviour (M, 4), times) from the ``sync`` topic."""
    # only what is needed is kept (not the events: their photodiode traces would pin the
    # message buffers of a whole session)
    table: dict[int, tuple[int, float, dict[str, float]]] = {}
    for _, ev in _events(reader, "sync", SyncEvent, bad):
        if ev.imaging_frame in table:
            counts["sync_repeated"] = counts.get("sync_repeated", 0) + 1
        table[ev.imaging_frame] = (ev.stim_frame, ev.t, ev.behavior)
    frames = np.array(sorted(table), np.int64)
    stim = np.array([table[i][0] for i in frames], np.int64)
    t = np.array([table[i][1] for i in frames], np.float64)
    beh = np.full((len(frames), len(BEHAVIOR_KEYS)), np.nan, np.float32)
    last = [math.nan] * len(BEHAVIOR_KEYS)
    held: Counter[str] = Counter()
    for k, i in enumerate(frames):
        b = table[int(i)][2]
        stale = bool(b.get("behavior_stale", 0.0))
        for c, key in enumerate(BEHAVIOR_KEYS):
            v = b.get(key)
            if v is not None and math.isfinite(v) and not (stale and key in EYE_KEYS):
                last[c] = float(v)
            else:
                held[key] += 1
            beh[k, c] = last[c]
    counts["behavior_held"] = {key: int(held[key]) for key in BEHAVIOR_KEYS}
    return frames, stim, beh, t


def read_stimulus(reader: RecordingReader, bad: Counter[str]) -> dict[int, tuple[str, int, int]]:
    """Global stimulus frame -> (clip, clip frame, record) of every named stimulus frame."""
    out: dict[int, tuple[str, int, int]] = {}
    for row, ev in _events(reader, "stimulus", StimulusFrame, bad):
        if ev.clip:
            out[ev.index] = (ev.clip, int(ev.clip_frame), row)
    return out


def find_trials(stimulus: dict[int, tuple[str, int, int]], counts: dict[str, Any]
                ) -> list[TrialPlan]:
    """Runs of one clip presentation, in order; a run that does not start at clip frame 0
    (the recording began mid-clip) is dropped and counted."""
    runs: list[list[int]] = []  # [start, clip frames seen, max clip frame]
    names: list[str] = []
    key = None
    for j in sorted(stimulus):
        clip, cf, _ = stimulus[j]
        k = (clip, j - cf)
        if k != key:
            runs.append([j - cf, 0, cf, j])
            names.append(clip)
            key = k
        runs[-1][1] += 1
        runs[-1][2] = max(runs[-1][2], cf)
    trials: list[TrialPlan] = []
    dropped = 0
    for (start, _, max_cf, first_j), clip in zip(runs, names):
        if first_j != start:
            dropped += 1
            log.warning("clip %s at stimulus frame %d starts at clip frame %d (the recording "
                        "began mid-clip): not a trial", clip, first_j, first_j - start)
            continue
        if trials and start < trials[-1].stop:  # a presentation cut short by the next one
            prev = trials[-1]
            trials[-1] = TrialPlan(prev.start, start - prev.start, prev.clip)
        trials.append(TrialPlan(start, max_cf + 1, clip))
    counts["trials_dropped_partial_start"] = dropped
    inside = trial_position(trials, np.fromiter(stimulus, np.int64, len(stimulus))) >= 0
    counts["stimulus_frames_missing"] = int(sum(t.length for t in trials) - inside.sum())
    return trials


def trial_position(trials: list[TrialPlan], stim: np.ndarray) -> np.ndarray:
    """Position in ``trials`` (sorted, not overlapping) of each stimulus frame; -1 outside."""
    starts = np.array([t.start for t in trials], np.int64)
    stops = np.array([t.stop for t in trials], np.int64)
    pos = np.searchsorted(starts, stim, side="right") - 1
    ok = (stim >= 0) & (pos >= 0)
    ok[ok] &= stim[ok] < stops[pos[ok]]
    return np.where(ok, pos, -1)


def assign_tiers(clips: list[str], clip_tiers: dict[str, str] | None, seed: int,
                 oracle_fraction: float) -> list[str]:
    """The dataset tier of each trial (its clip in ``clips``), see the module docstring."""
    shown = Counter(clips)
    if clip_tiers is not None:
        kind = {c: clip_tiers[c] for c in shown}
    else:
        kind = {c: "test" if n >= 2 else "train" for c, n in shown.items()}
    oracle = {c for c, k in kind.items() if k == "validation"}  # the clip set's own
    if not oracle:
        train = sorted(c for c, k in kind.items() if k != "test")
        n_oracle = 0
        if oracle_fraction > 0 and len(train) >= 2:
            n_oracle = min(len(train) - 1, max(1, round(oracle_fraction * len(train))))
        order = np.random.default_rng(seed).permutation(len(train))
        oracle = {train[i] for i in order[:n_oracle]}
    return ["final_test_main" if kind[c] == "test" else "oracle" if c in oracle else "train"
            for c in clips]


def plan_session(reader: RecordingReader, clip_tiers: dict[str, str] | None = None,
                 seed: int = 0, oracle_fraction: float = 0.1) -> SessionPlan:
    """Read sync and stimulus identity and plan the trials; SessionPlanError naming the file
    and the fix when the recording cannot tell which clip was shown when."""
    path = reader.path
    counts: dict[str, Any] = {}
    bad: Counter[str] = Counter()
    imaging, stim, beh, t = read_sync(reader, counts, bad)
    if not len(imaging):
        raise SessionPlanError(
            f"{path} holds no sync messages: export cannot tell which stimulus frame each "
            "imaging frame saw. Record the daq's 'sync' topic (the record process's default "
            "topics) with a sync source configured in [daq] sync")
    stimulus = read_stimulus(reader, bad)
    if not stimulus:
        raise SessionPlanError(
            f"{path} holds no stimulus identity (no 'stimulus' message names a clip): export "
            "needs to know which clip each stimulus frame showed. Record the session with the "
            "daq's stimulus-identity source ([daq] sync = [\"stimulus\", ...] with "
            "[daq.stimulus] listen = the port the stimulus computer sends {\"frame\", \"clip\", "
            "\"clip_frame\"} to) and keep 'stimulus' in the record process's topics")
    trials = find_trials(stimulus, counts)
    if not trials:
        raise SessionPlanError(f"{path}: no complete clip presentation (every named clip "
                               "started before the recording did)")
    if clip_tiers is not None:
        unknown = sorted({tr.clip for tr in trials} - set(clip_tiers))
        if unknown:
            log.warning("clips %s are not in the clip set; tiers inferred from repeats instead",
                        ", ".join(unknown[:5]))
            clip_tiers = None
    tiers = assign_tiers([tr.clip for tr in trials], clip_tiers, seed, oracle_fraction)
    pos = trial_position(trials, stim)
    ok = pos >= 0
    first = {int(p): int(i) for p, i in zip(pos[ok][::-1], imaging[ok][::-1])}
    last = {int(p): int(i) for p, i in zip(pos[ok], imaging[ok])}
    trials = [TrialPlan(tr.start, tr.length, tr.clip, tier, first.get(k, -1), last.get(k, -1))
              for k, (tr, tier) in enumerate(zip(trials, tiers))]
    counts["bad_messages"] = dict(bad)
    counts["tiers_from"] = "clip set" if clip_tiers is not None else "repeats"
    return SessionPlan(Path(path), imaging, stim, beh, t, stimulus, trials, counts)
