"""Imaging frame -> one activity value per neuron: the one feature path, live and offline.

Motion correction (optional) -> soma and neuropil extraction, neuropil subtraction and
ΔF/F against a running baseline (:class:`~cortexcast.decoder.live.extraction.ActivityExtractor`)
-> optional online deconvolution
(:class:`~cortexcast.decoder.live.deconvolution.OnlineDeconvolver`).
The live decoder (:class:`cortexcast.decoder.live.process.FrameDecoder`) and ``cortexcast
export`` (a training dataset from a recorded session) both run a :class:`FeaturePipeline`
built by :func:`cortexcast.decoder.live.process.feature_pipeline` from the same
``[decoder]`` settings, so the features a model is trained on cannot drift from those it
is fed live. Every stage keeps state across frames (baseline, noise level, motion
reference), so frames must come in acquisition order, every one of them.
"""

from __future__ import annotations

import numpy as np

from cortexcast.core.rois import ROISet
from cortexcast.decoder.live.deconvolution import DeconvolutionSettings, OnlineDeconvolver
from cortexcast.decoder.live.extraction import ActivityExtractor, ExtractionSettings
from cortexcast.decoder.live.motion import MotionCorrector


class FeaturePipeline:
    """Frames in acquisition order -> activity vectors (float32, (N,)). No sockets, no clocks."""

    def __init__(self, rois: ROISet, frame_rate_hz: float,
                 extraction: ExtractionSettings = ExtractionSettings(),
                 motion: MotionCorrector | None = None,
                 deconvolution: DeconvolutionSettings | None = None) -> None:
        self.rois = rois
        self.frame_rate_hz = frame_rate_hz
        self.motion = motion
        self.extract = ActivityExtractor(rois, frame_rate_hz, extraction)
        self.deconvolve = (None if deconvolution is None else
                           OnlineDeconvolver(rois.n_neurons, frame_rate_hz, deconvolution))

    @property
    def n_neurons(self) -> int:
        return self.rois.n_neurons

    @property
    def activity_kind(self) -> str:
        """'dff' or 'deconvolved': what :meth:`__call__` returns."""
        return "dff" if self.deconvolve is None else "deconvolved"

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """One frame's activity. Raises ROIError when the frame does not have the ROIs' shape."""
        self.rois.check_frame(pixels.shape)
        if self.motion is not None:
            pixels = self.motion(pixels)
        activity = self.extract(pixels)
        if self.deconvolve is not None:
            activity = self.deconvolve(activity)
        return activity
