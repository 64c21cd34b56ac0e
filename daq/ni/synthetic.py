"""Voltages like the ones a rig's DAQ records: frame clock, photodiode, vsync.

:class:`RigSignals` computes any block of samples analytically (so a simulated DAQ can
stream for hours and the tests' fake nidaqmx task can play the same thing), and
:func:`rig_trace` returns a whole trace with its ground truth for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RigSignals:
    """A frame clock (5 V pulses), a photodiode square toggling at every stimulus flip
    (0.05 V / 1.2 V) and the stimulus computer's vsync pulses (3.3 V), with noise."""

    rate_hz: float = 10000.0
    frame_rate_hz: float = 30.0
    stim_rate_hz: float = 30.0
    monitor_delay_s: float = 0.02
    frame_phase_s: float = 0.003
    stim_start_s: float = 0.05
    pulse_s: float = 0.002
    noise_v: float = 0.08

    def block(self, first_sample: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """(3, n) volts for samples first_sample .. first_sample + n - 1."""
        s = first_sample + np.arange(n)
        pulse = self.pulse_s * self.rate_hz
        fp, sp = self.rate_hz / self.frame_rate_hz, self.rate_hz / self.stim_rate_hz
        k, since = _periods(s, np.round(self.frame_phase_s * self.rate_hz), fp)
        clock = np.where((k >= 0) & (since < pulse), 5.0, 0.0)
        cmd0 = np.round(self.stim_start_s * self.rate_hz)
        j, since = _periods(s, cmd0, sp)
        vsync = np.where((j >= 0) & (since < pulse), 3.3, 0.0)
        f, _ = _periods(s, cmd0 + np.round(self.monitor_delay_s * self.rate_hz), sp)
        photodiode = np.where((f >= 0) & (f % 2 == 0), 1.2, 0.05)
        out = np.stack([clock, photodiode, vsync])
        return out + rng.normal(0.0, self.noise_v, out.shape) if self.noise_v else out

    def frame_count(self, first_sample: int, n: int) -> np.ndarray:
        """What a counter counting frame-clock rising edges reads at each sample."""
        s = first_sample + np.arange(n)
        k, _ = _periods(s, np.round(self.frame_phase_s * self.rate_hz),
                        self.rate_hz / self.frame_rate_hz)
        return np.maximum(k + 1, 0)

    def frame_starts(self, n_samples: int) -> np.ndarray:
        fp = self.rate_hz / self.frame_rate_hz
        k = np.arange(int(n_samples / fp) + 2)
        s = (np.round(self.frame_phase_s * self.rate_hz) + np.round(k * fp)).astype(np.int64)
        return s[s < n_samples - 1]

    def _stim_samples(self, n_samples: int, delay: float) -> np.ndarray:
        sp = self.rate_hz / self.stim_rate_hz
        j = np.arange(int(n_samples / sp) + 2)
        s = (np.round(self.stim_start_s * self.rate_hz) + np.round(delay * self.rate_hz)
             + np.round(j * sp)).astype(np.int64)
        return s[s < n_samples]

    def flip_samples(self, n_samples: int) -> np.ndarray:
        return self._stim_samples(n_samples, self.monitor_delay_s)

    def vsync_samples(self, n_samples: int) -> np.ndarray:
        return self._stim_samples(n_samples, 0.0)


def _periods(s: np.ndarray, first: float, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Which period each sample is in (-1 before the first) and samples since its start;
    period k starts at sample first + round(k * period)."""
    k = np.floor((s - first) / period)
    k = np.where(s < first + np.round(k * period), k - 1, k)  # rounding moved the start
    k = np.where(s >= first + np.round((k + 1) * period), k + 1, k)
    return k, s - (first + np.round(k * period))


@dataclass(frozen=True)
class RigTrace:
    samples: np.ndarray
    """(3, n) float64 volts: frame clock, photodiode, vsync."""
    frame_starts: np.ndarray
    """Sample number of each imaging frame's rising edge."""
    flip_samples: np.ndarray
    """Sample at which the photodiode changes for each stimulus frame (after the delay)."""
    vsync_samples: np.ndarray
    """Sample of each flip command (before the monitor's delay)."""
    rate_hz: float


def rig_trace(seconds: float = 2.0, *, seed: int = 0, **signals: float) -> RigTrace:
    """A whole trace (``signals``: RigSignals fields) with its ground truth."""
    sig = RigSignals(**signals)
    n = int(round(seconds * sig.rate_hz))
    samples = sig.block(0, n, np.random.default_rng(seed))
    return RigTrace(samples, sig.frame_starts(n), sig.flip_samples(n), sig.vsync_samples(n),
                    sig.rate_hz)


def expected_stim_frames(trace: RigTrace) -> list[int]:
    """Ground truth: for each closed imaging frame, the stimulus frame shown at its middle."""
    out = []
    for a, b in zip(trace.frame_starts[:-1], trace.frame_starts[1:]):
        out.append(int(np.searchsorted(trace.flip_samples, (a + b) // 2, side="right")) - 1)
    return out
