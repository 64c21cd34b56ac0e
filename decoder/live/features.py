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

What a frame must be (:func:`check_pixels`, before it touches any state): the ROIs' shape,
and either an integer dtype (what a rig sends: uint16 from ScanImage and the simulator) or a
float dtype with every pixel finite. Anything else (bool, complex, object; a float frame
with a NaN or an infinity) raises :class:`BadFrameError` and leaves the state as it was, so
the frames after it give what they would have given without it. Each stage also keeps
non-finite values out of its own state, should any get past this check.
"""

from __future__ import annotations

import numpy as np

from cortexcast.core.rois import ROIError, ROISet
from cortexcast.decoder.live.deconvolution import DeconvolutionSettings, OnlineDeconvolver
from cortexcast.decoder.live.extraction import ActivityExtractor, ExtractionSettings
from cortexcast.decoder.live.motion import MotionCorrector


class BadFrameError(ROIError):
    """A frame the features cannot take: wrong dtype, or non-finite pixels (``reason``:
    'dtype' or 'nonfinite'; a wrong shape is a plain ROIError)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_pixels(pixels: np.ndarray, frame_shape: tuple[int, ...]) -> None:
    """Raise ROIError (wrong shape) or BadFrameError (wrong dtype, non-finite pixels) unless
    ``pixels`` is a frame the features can take (see the module docstring)."""
    if tuple(pixels.shape) != tuple(frame_shape):
        raise ROIError(f"frames are {tuple(pixels.shape)} but the ROIs were drawn on "
                       f"{tuple(frame_shape)} frames; use the ROI file made for this field "
                       "of view")
    kind = pixels.dtype.kind
    if kind in "iu":
        return
    if kind != "f":
        raise BadFrameError(f"frame dtype {pixels.dtype} is not an image (integer, or float "
                            "with finite values)", "dtype")
    # A float64 sum of float16/32 pixels cannot overflow: it is finite iff every pixel is.
    total = np.add.reduce(pixels, axis=None, dtype=np.float64)
    if np.isfinite(total) or (pixels.dtype.itemsize >= 8 and np.isfinite(pixels).all()):
        return
    bad = pixels.size - int(np.count_nonzero(np.isfinite(pixels)))
    raise BadFrameError(f"frame has {bad} of {pixels.size} pixels not finite (NaN or "
                        "infinite)", "nonfinite")


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
        """One frame's activity. Raises ROIError when the frame does not have the ROIs' shape,
        BadFrameError (a ROIError) when its dtype or values are not an image's; such a frame
        changes no state."""
        pixels = np.asarray(pixels)
        self.rois.check_frame(pixels.shape)
        check_pixels(pixels, self.rois.frame_shape)
        if self.motion is not None:
            pixels = self.motion(pixels)
        activity = self.extract(pixels)
        if self.deconvolve is not None:
            activity = self.deconvolve(activity)
        return activity
