"""Online activity extraction: frame -> one ΔF/F value per neuron.

``F  = masks @ frame`` (soma mean), ``Fnp = interp @ (blocks @ frame)``
(neuropil), ``Fc = F - r * Fnp``, and a running baseline ``F0`` that follows
the lower envelope of ``Fc`` (it falls quickly, rises slowly, so transients
do not lift it but slow drift does). Output ``(Fc - F0) / F0``.

A plain object: call it with frames in order; no sockets, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cortexcast.core.rois import ROISet


@dataclass(frozen=True)
class ExtractionSettings:
    neuropil_coef: float = 0.7
    """r in Fc = F - r * Fnp (suite2p's default)."""
    baseline_rise_s: float = 30.0
    """Time constant (s) with which the baseline follows Fc upwards."""
    baseline_fall_s: float = 1.0
    """Time constant (s) with which the baseline follows Fc downwards."""
    min_baseline: float = 1.0
    """Floor for F0 (raw counts), so dim ROIs do not divide by ~0."""

    def __post_init__(self) -> None:
        if not 0 <= self.neuropil_coef <= 1.5:
            raise ValueError(f"neuropil_coef must be in 0..1.5, got {self.neuropil_coef}")
        if self.baseline_rise_s <= 0 or self.baseline_fall_s <= 0:
            raise ValueError("baseline time constants must be positive")


class ActivityExtractor:
    """Turns consecutive imaging frames into ΔF/F vectors (float32, shape (N,))."""

    def __init__(self, rois: ROISet, frame_rate_hz: float,
                 settings: ExtractionSettings = ExtractionSettings()) -> None:
        self.rois = rois
        self.settings = settings
        self.frame_rate_hz = frame_rate_hz
        self._a_up = 1.0 - np.exp(-1.0 / (settings.baseline_rise_s * frame_rate_hz))
        self._a_down = 1.0 - np.exp(-1.0 / (settings.baseline_fall_s * frame_rate_hz))
        self._f0: np.ndarray | None = None

    @property
    def n_neurons(self) -> int:
        return self.rois.n_neurons

    def reset(self) -> None:
        self._f0 = None

    def fluorescence(self, frame: np.ndarray) -> np.ndarray:
        """Neuropil-corrected fluorescence Fc of one frame."""
        self.rois.check_frame(frame.shape)
        x = frame.reshape(-1).astype(np.float32, copy=False)  # motion-corrected: no copy
        f = self.rois.masks @ x
        fnp = self.rois.interp @ (self.rois.blocks @ x)
        return f - self.settings.neuropil_coef * fnp

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """ΔF/F of one frame. Non-finite values never reach the baseline: a neuron whose Fc is
        not finite (NaN/inf pixels that got this far) keeps its baseline and gives 0, and a
        baseline entry that is not finite anyway starts again from this frame (or the floor)."""
        fc = self.fluorescence(frame)
        ok = np.isfinite(fc)
        all_ok = bool(ok.all())
        floor = self.settings.min_baseline
        if self._f0 is None:
            self._f0 = np.maximum(fc if all_ok else np.where(ok, fc, floor), floor)
        else:
            if not all_ok:
                fc = np.where(ok, fc, self._f0)  # held: d = 0, output 0
            with np.errstate(invalid="ignore", over="ignore"):  # a bad F0: restarted below
                d = fc - self._f0
                self._f0 += np.where(d > 0, self._a_up, self._a_down) * d
            np.maximum(self._f0, floor, out=self._f0)
        f0_ok = np.isfinite(self._f0)
        if not f0_ok.all():  # reached some other way: restart those neurons' baseline
            restart = np.where(np.isfinite(fc), np.maximum(fc, floor), floor)
            self._f0 = np.where(f0_ok, self._f0, restart).astype(self._f0.dtype)
            fc = np.where(np.isfinite(fc), fc, self._f0)
        return ((fc - self._f0) / self._f0).astype(np.float32)
