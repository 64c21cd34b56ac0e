"""Frame clock + photodiode (+ vsync) voltages -> one SyncEvent per imaging frame. Pure numpy.

Rules (documented for operators in docs/rig.md):

* imaging frame ``k`` starts at the k-th rising edge of the frame clock (or, with
  ``frame_counter``, at the sample where the counter's edge count goes up) and ends at the next
  one; its event is emitted when that next edge arrives (so the photodiode trace during the
  whole frame can go with it), i.e. one frame after the frame starts;
* every photodiode transition (up or down) is a stimulus flip: the stimulus program toggles
  its sync square every ``stim_frames_per_transition`` stimulus frames, the first transition
  seen is stimulus frame 0;
* the stimulus frame "on screen" for an imaging frame is the one shown at the frame's middle;
  ``t_flip`` is when the photodiode saw it appear (so the monitor's delay is already in it);
* the monitor's delay is photodiode transition minus the latest vsync/flip-command edge before
  it (when a vsync line is wired), a running median;
* after a gap in the samples (a DAQ buffer overflow) the frames and flips that fell into it are
  estimated from the measured periods, counted as lost and listed in ``gaps``.

Times are in the DAQ's clock: sample 0 of the acquisition is t = 0.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from cortexcast.daq.ni.edges import EdgeDetector
from cortexcast.daq.ni.settings import NiSettings
from cortexcast.core.events import SyncEvent


class NiSyncBuilder:
    """Feed blocks of (channels, samples) in order; get SyncEvents out. No hardware, no threads."""

    def __init__(self, settings: NiSettings) -> None:
        s = settings
        self.s = s
        self.rate = s.rate_hz
        self._frame = EdgeDetector(s.frame_threshold_v, s.frame_hysteresis_v)
        self._last_count: float | None = None  # frame_counter mode: the count before a block
        self._pd = EdgeDetector(s.photodiode_threshold_v, s.photodiode_hysteresis_v)
        self._vsync = EdgeDetector(s.vsync_threshold_v, s.vsync_hysteresis_v) if s.vsync else None
        self._start: int | None = None  # sample where the pending (not yet closed) frame began
        self._next_index = s.first_frame  # index the pending frame gets
        self._periods: deque[int] = deque(maxlen=64)  # recent frame periods (samples)
        self._flips: list[int] = []  # recent flip samples (global), oldest first
        self._flips_before = 0  # flips counted that were trimmed from _flips
        self._flip_periods: deque[int] = deque(maxlen=64)
        self._vsyncs: deque[int] = deque(maxlen=16)
        self._delays: deque[float] = deque(maxlen=101)
        self._pd_samples = np.zeros(0, np.float32)
        self._pd_first = 0  # global sample number of _pd_samples[0]
        self._expect: int | None = None  # the next sample number, to detect gaps
        self._gap_at: int | None = None  # sample where samples resumed after a gap
        self._gap_from: int | None = None  # start of the last frame before the gap
        self._gap_index = 0
        self.frames = 0
        self.flips = 0
        self.lost_frames = 0
        self.lost_flips = 0
        self.gaps: list[dict[str, int]] = []

    # -- public -------------------------------------------------------------------------

    @property
    def monitor_delay_s(self) -> float | None:
        """Median photodiode-minus-vsync delay over the recent flips (None without vsync)."""
        return float(np.median(self._delays)) if self._delays else None

    @property
    def frame_period_s(self) -> float | None:
        return float(np.median(self._periods)) / self.rate if self._periods else None

    def status(self) -> dict[str, Any]:
        return {"ni_frames": self.frames, "ni_flips": self.flips,
                "ni_lost_frames": self.lost_frames, "ni_gaps": len(self.gaps),
                "ni_monitor_delay_ms": None if self.monitor_delay_s is None
                else round(self.monitor_delay_s * 1e3, 3)}

    def feed(self, block: np.ndarray, first_sample: int) -> list[SyncEvent]:
        """Process samples ``first_sample ..`` of each channel (rows: frame clock, photodiode,
        [vsync]); return the events of the imaging frames that ended in this block."""
        block = np.asarray(block)
        n_ch = self.s.rows
        if block.ndim != 2 or block.shape[0] != n_ch:
            raise ValueError(f"expected a ({n_ch}, n) block, got shape {block.shape}")
        if self._expect is not None and first_sample != self._expect:
            if first_sample < self._expect:
                raise ValueError(f"samples out of order: got {first_sample}, "
                                 f"expected {self._expect}")
            self._gap(first_sample)
        self._expect = first_sample + block.shape[1]
        self._append_pd(block[1], first_sample)
        if self._vsync is not None:
            self._vsyncs.extend(int(v) for v in self._vsync(block[2], first_sample)[0])
        up, down = self._pd(block[1], first_sample)
        for f in np.sort(np.concatenate((up, down))):
            self._add_flip(int(f))
        events = []
        for start in self._frame_starts(block[0], first_sample):
            events.extend(self._frame_edge(int(start)))
        self._trim()
        return events

    def flush(self) -> list[SyncEvent]:
        """At the end of acquisition: close the pending frame at the last sample seen."""
        if self._start is None or self._expect is None or self._expect <= self._start:
            return []
        event = self._event(self._start, self._expect)
        self._start = None
        return [event]

    # -- internals ----------------------------------------------------------------------

    def _frame_starts(self, row: np.ndarray, first_sample: int) -> np.ndarray:
        """Samples where a frame starts: rising edges of the clock voltage, or (with a
        counter) samples where the edge count went up."""
        if not self.s.frame_counter:
            return self._frame(row, first_sample)[0]
        prev = row[0] if self._last_count is None else self._last_count
        self._last_count = float(row[-1])
        steps = np.diff(row, prepend=prev)
        return np.flatnonzero(steps != 0) + first_sample  # != 0: the count may wrap

    def _gap(self, resume: int) -> None:
        """Samples before ``resume`` were lost: estimate what fell into the gap later."""
        self._frame.reset()
        self._last_count = None
        self._pd.reset()
        if self._vsync is not None:
            self._vsync.reset()
        self._gap_from = self._start
        self._gap_index = self._next_index
        self._gap_at = resume
        self._start = None
        gap = resume - (self._expect or resume)
        self._flips_before += len(self._flips)
        self._flips.clear()
        if self._flip_periods:
            n = int(round(gap / float(np.median(self._flip_periods))))
            self._flips_before += n
            self.lost_flips += n
            self.flips += n
        self._pd_samples = np.zeros(0, np.float32)
        self._pd_first = resume

    def _frame_edge(self, start: int) -> list[SyncEvent]:
        events = []
        if self._gap_at is not None:  # first frame after a gap: how many frames were lost?
            index = self._gap_index  # the index the frame pending at the gap had
            if self._gap_from is not None and self._periods:
                index += int(round((start - self._gap_from) / float(np.median(self._periods))))
            lost, first_lost = index - self._gap_index, self._gap_index
            self.gaps.append({"first_frame": first_lost, "frames": lost,
                              "resumed_at_sample": self._gap_at})
            self.lost_frames += lost
            self._next_index = index
            self._gap_at = None
        elif self._start is not None:
            self._periods.append(start - self._start)
            events.append(self._event(self._start, start))
        self._start = start
        return events

    def _event(self, s0: int, s1: int) -> SyncEvent:
        index = self._next_index
        self._next_index += 1
        self.frames += 1
        stim, t_flip = self._stim_at((s0 + s1) // 2)
        a, b = max(s0 - self._pd_first, 0), max(s1 - self._pd_first, 0)
        trace = np.ascontiguousarray(self._pd_samples[a:b], dtype=np.float32)
        return SyncEvent(imaging_frame=index, t=s0 / self.rate, stim_frame=stim, t_flip=t_flip,
                         photodiode=trace)

    def _stim_at(self, sample: int) -> tuple[int, float | None]:
        k = int(np.searchsorted(self._flips, sample, side="right"))  # flips at or before
        if k == 0:
            if self._flips_before == 0:
                return -1, None
            return (self._flips_before - 1) * self.s.stim_frames_per_transition, None
        last = self._flips[k - 1]
        n = self.s.stim_frames_per_transition
        within = min(n - 1, int((sample - last) / self.rate * self.s.stim_rate_hz))
        stim = (self._flips_before + k - 1) * n + within
        return stim, last / self.rate + within / self.s.stim_rate_hz

    def _add_flip(self, f: int) -> None:
        if self._flips:
            self._flip_periods.append(f - self._flips[-1])
        self._flips.append(f)
        self.flips += 1
        if self._vsyncs:
            before = [v for v in self._vsyncs if v <= f]
            if before and (f - before[-1]) / self.rate <= self.s.max_monitor_delay_s:
                self._delays.append((f - before[-1]) / self.rate)

    def _append_pd(self, x: np.ndarray, first_sample: int) -> None:
        if not self._pd_samples.size:
            self._pd_first = first_sample
        self._pd_samples = np.concatenate((self._pd_samples, x.astype(np.float32)))

    def _trim(self) -> None:
        """Drop photodiode samples and flips older than the pending frame needs."""
        keep_from = self._start if self._start is not None else (self._expect or 0)
        cut = keep_from - self._pd_first
        if cut > 0:
            self._pd_samples = self._pd_samples[cut:]
            self._pd_first = keep_from
        k = int(np.searchsorted(self._flips, keep_from, side="right")) - 1  # keep one before
        if k > 0:
            del self._flips[:k]
            self._flips_before += k
