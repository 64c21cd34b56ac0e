"""Rigid online motion correction: phase correlation against a reference image.

Per frame: taper the edges, FFT, whiten (keep only the phase), multiply by the
prepared conjugate spectrum of the reference (whitened and Gaussian-smoothed),
inverse FFT, and find the peak of the correlation within ``max_shift_px``;
a three-point Gaussian fit on each axis gives the sub-pixel part. The frame is
then resampled (bilinear, edges repeated) so that it lines up with the
reference, and with the ROIs drawn on it. About 3-4 ms for a 512x512 frame on
one core (``python -m cortexcast.app.bench_frames``).

The reference comes from a file (suite2p's registered ``meanImg`` — the image the
suite2p ROIs were drawn on, from ``reg_outputs.npy`` (suite2p >= 1.0) or ``ops.npy`` —,
the ``reference`` saved in a cortexcast ROI ``.npz`` by ``cortexcast rois``, or an
image in ``.npy``/``.tif``), or is built
online: the plain mean of the first ``reference_frames`` frames (centred on their
average position; these frames pass through uncorrected), then the mean of the next
``reference_frames`` frames corrected against it. A plain object, no sockets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from cortexcast.core.config import path_field
from cortexcast.core.rois import ROIError

log = logging.getLogger("cortexcast.decoder.live.motion")


class MotionError(ROIError):
    """A motion reference is missing, unreadable, or does not fit the frames/ROIs."""


@dataclass(frozen=True)
class MotionSettings:
    enabled: bool = False
    """Correct rigid brain motion before extraction."""
    reference: str = path_field("")
    """Reference image: suite2p output (a plane/parent folder, ``ops.npy``, ``db.npy`` or
    ``reg_outputs.npy``; uses ``meanImg``), a cortexcast ROI ``.npz`` holding a
    ``reference`` (``cortexcast rois`` saves one), or a 2-D ``.npy``/``.tif`` image.
    Empty: the ROI file's own reference if it has one, else built from the first
    ``reference_frames``."""
    reference_frames: int = 60
    """N: frames averaged into the online reference, twice (the first N pass uncorrected)."""
    max_shift_px: float = 30.0
    """Largest shift searched (px, each axis)."""
    smooth_sigma_px: float = 1.15
    """Gaussian smoothing (px) of the phase correlation (suite2p's ``smooth_sigma``)."""
    taper_px: float = 20.0
    """Width (px) of the cosine edge taper applied before the FFT (at most 1/8 of the frame)."""

    def __post_init__(self) -> None:
        if self.reference_frames < 1:
            raise ValueError(f"reference_frames must be >= 1, got {self.reference_frames}")
        if not 0 < self.max_shift_px <= 200:
            raise ValueError(f"max_shift_px must be in (0, 200], got {self.max_shift_px}")
        if not 0 <= self.smooth_sigma_px <= 10:
            raise ValueError(f"smooth_sigma_px must be in 0..10, got {self.smooth_sigma_px}")
        if not 0 <= self.taper_px <= 200:
            raise ValueError(f"taper_px must be in 0..200, got {self.taper_px}")


def load_reference(path: str | Path) -> np.ndarray:
    """A float32 2-D reference image from suite2p output, a cortexcast ROI ``.npz`` with a
    saved ``reference``, or a ``.npy``/``.tif`` image."""
    from cortexcast.decoder.live.roi_loaders import SUITE2P_FILES, suite2p_mean_image

    p = Path(path)
    if not p.exists():
        raise MotionError(f"motion reference {p} does not exist")
    if p.is_dir() or p.name in SUITE2P_FILES:  # suite2p output
        return suite2p_mean_image(p).astype(np.float32)
    if p.suffix.lower() == ".npz":
        return _npz_reference(p)
    try:
        if p.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            img = tifffile.imread(p)
        else:
            img = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise MotionError(f"{p}: cannot read motion reference image: {exc}") from exc
    img = np.squeeze(np.asarray(img))
    if img.ndim == 3:  # a stack: its mean
        img = img.mean(axis=0)
    if img.ndim != 2 or not np.issubdtype(img.dtype, np.number):
        raise MotionError(f"{p}: motion reference must be a 2-D image, got shape {img.shape}")
    return img.astype(np.float32)


def _npz_reference(p: Path) -> np.ndarray:
    """``reference`` from a cortexcast ROI file (or the only array of another ``.npz``)."""
    try:
        with np.load(p, allow_pickle=False) as z:
            names = list(z.files)
            key = "reference" if "reference" in names else (
                names[0] if len(names) == 1 and "format" not in names else None)
            img = None if key is None else np.asarray(z[key])
    except (ValueError, OSError) as exc:
        raise MotionError(f"{p}: cannot read motion reference: {exc}") from exc
    if img is None and "format" in names:
        raise MotionError(f"{p}: this ROI file has no motion reference (saved without one); "
                          "set [decoder.motion] reference to an image, or remake the ROIs with "
                          "`cortexcast rois`, which saves it")
    if img is None:
        raise MotionError(f"{p}: no 'reference' array among {', '.join(names)}")
    img = np.squeeze(img)
    if img.ndim != 2 or not np.issubdtype(img.dtype, np.number):
        raise MotionError(f"{p}: motion reference must be a 2-D image, got shape {img.shape}")
    return img.astype(np.float32)


def _taper(shape: tuple[int, int], width: float) -> np.ndarray:
    def ramp(n: int) -> np.ndarray:
        if width <= 0:
            return np.ones(n, np.float32)
        d = np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5
        return (0.5 - 0.5 * np.cos(np.pi * np.clip(d / width, 0, 1))).astype(np.float32)

    return np.outer(ramp(shape[0]), ramp(shape[1]))


def _peak_offset(lo: float, mid: float, hi: float) -> float:
    """Sub-pixel offset of a peak from three samples (Gaussian fit, parabola as fallback)."""
    if lo > 0 and mid > 0 and hi > 0:
        lo, mid, hi = np.log(lo), np.log(mid), np.log(hi)
    den = lo - 2 * mid + hi
    if den >= 0:  # not a maximum: keep the integer peak
        return 0.0
    return float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))


class PhaseCorrelator:
    """Estimates the shift (dy, dx) of frames relative to one reference image."""

    def __init__(self, reference: np.ndarray, settings: MotionSettings) -> None:
        ref = np.asarray(reference, np.float32)
        h, w = ref.shape
        self.shape = (h, w)
        m = int(min(np.ceil(settings.max_shift_px), h // 2 - 1, w // 2 - 1))
        self.max_shift = m
        self._taper = _taper((h, w), min(settings.taper_px, min(h, w) / 8))
        ky = sfft.fftfreq(h)[:, None]
        kx = sfft.rfftfreq(w)[None, :]
        s = settings.smooth_sigma_px
        smooth = np.exp(-2 * np.pi ** 2 * s * s * (ky ** 2 + kx ** 2)).astype(np.float32)
        fr = sfft.rfft2(self._prepare(ref), workers=1)
        self._ref_conj = (np.conj(fr) / (np.abs(fr) + 1e-6) * smooth).astype(np.complex64)
        self._rows = np.arange(-m, m + 1) % h
        self._cols = np.arange(-m, m + 1) % w

    def _prepare(self, img: np.ndarray) -> np.ndarray:
        x = img.astype(np.float32)
        x -= x.mean(dtype=np.float64)
        x *= self._taper
        return x

    def shift_of(self, frame: np.ndarray) -> tuple[float, float, float]:
        """(dy, dx, peak): the frame shows the reference moved by (dy, dx) px.

        ``peak`` is the phase-correlation peak height (0..~1), a confidence.
        """
        f = sfft.rfft2(self._prepare(frame), workers=1)
        f /= np.abs(f) + np.float32(1e-6)
        f *= self._ref_conj
        corr = sfft.irfft2(f, s=self.shape, workers=1)
        win = corr[np.ix_(self._rows, self._cols)]
        iy, ix = np.unravel_index(int(np.argmax(win)), win.shape)
        m = self.max_shift
        dy, dx = float(iy - m), float(ix - m)
        if 0 < iy < win.shape[0] - 1:
            dy += _peak_offset(win[iy - 1, ix], win[iy, ix], win[iy + 1, ix])
        if 0 < ix < win.shape[1] - 1:
            dx += _peak_offset(win[iy, ix - 1], win[iy, ix], win[iy, ix + 1])
        return dy, dx, float(win[iy, ix])


class FrameShifter:
    """Resamples frames by a sub-pixel shift (bilinear, edge pixels repeated)."""

    def __init__(self, shape: tuple[int, int], max_shift: float) -> None:
        self.shape = shape
        self.pad = int(np.ceil(max_shift)) + 1
        h, w = shape
        self._buf = np.empty((h + 2 * self.pad, w + 2 * self.pad), np.float32)

    def __call__(self, frame: np.ndarray, dy: float, dx: float) -> np.ndarray:
        """out[y, x] = frame[y + dy, x + dx]: undoes a shift of (dy, dx). A new float32 array."""
        p, (h, w), b = self.pad, self.shape, self._buf
        b[p:p + h, p:p + w] = frame
        b[:p, p:p + w] = b[p, p:p + w]
        b[p + h:, p:p + w] = b[p + h - 1, p:p + w]
        b[:, :p] = b[:, p:p + 1]
        b[:, p + w:] = b[:, p + w - 1:p + w]
        dy = float(np.clip(dy, -p + 1, p - 1))
        dx = float(np.clip(dx, -p + 1, p - 1))
        iy, ix = int(np.floor(dy)), int(np.floor(dx))
        fy, fx = np.float32(dy - iy), np.float32(dx - ix)
        y0, x0 = p + iy, p + ix
        top = b[y0:y0 + h, x0:x0 + w]
        if fy == 0 and fx == 0:
            return top.copy()
        out = top * ((1 - fy) * (1 - fx))
        if fx:
            out += b[y0:y0 + h, x0 + 1:x0 + 1 + w] * ((1 - fy) * fx)
        if fy:
            out += b[y0 + 1:y0 + 1 + h, x0:x0 + w] * (fy * (1 - fx))
            if fx:
                out += b[y0 + 1:y0 + 1 + h, x0 + 1:x0 + 1 + w] * (fy * fx)
        return out


class MotionCorrector:
    """Frame in, motion-corrected float32 frame out (uncorrected until a reference exists).

    Online reference, without stalling the frame loop: frames ``0..N-1`` pass through and
    are averaged (a blurred reference centred on their mean position); frames ``N..2N-1``
    are corrected against it and their corrected average becomes the final reference.
    """

    def __init__(self, frame_shape: tuple[int, int], settings: MotionSettings = MotionSettings(),
                 reference: np.ndarray | None = None, source: str = "") -> None:
        self.settings = settings
        self.frame_shape = tuple(frame_shape)
        self.shifter = FrameShifter(self.frame_shape, settings.max_shift_px)
        self.shift: tuple[float, float] = (0.0, 0.0)
        """The shift found in the newest frame (0, 0 while there is no reference)."""
        self.peak = 0.0
        self._corr: PhaseCorrelator | None = None
        self.final = False
        """True once the reference is final (from a file, or after 2N frames online)."""
        self.reference: np.ndarray | None = None
        """The final reference image (float32), once there is one."""
        self._acc = np.zeros(self.frame_shape, np.float64)
        self._count = 0
        if reference is not None:
            if reference.shape != self.frame_shape:
                raise MotionError(
                    f"motion reference {source or '(array)'} is {reference.shape[0]}x"
                    f"{reference.shape[1]} but the ROIs/frames are {self.frame_shape[0]}x"
                    f"{self.frame_shape[1]}; use the reference of this field of view")
            self.set_reference(reference)

    @property
    def ready(self) -> bool:
        """Frames are being corrected (against the provisional or the final reference)."""
        return self._corr is not None

    def set_reference(self, reference: np.ndarray) -> None:
        self._corr = PhaseCorrelator(reference, self.settings)
        self.reference = np.asarray(reference, np.float32)
        self.final = True

    def reset(self) -> None:
        self._corr = None
        self.final = False
        self.reference = None
        self._acc[:] = 0
        self._count = 0
        self.shift = (0.0, 0.0)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The frame resampled onto the reference (a float32 array; the input if not ready)."""
        corr = self._corr
        out = frame
        if corr is not None:
            dy, dx, peak = corr.shift_of(frame)
            if np.isfinite(dy) and np.isfinite(dx):  # NaN pixels that got this far: no shift
                self.shift, self.peak = (dy, dx), peak
            dy, dx = self.shift
            out = self.shifter(frame, dy, dx)
        if not self.final:
            self._accumulate(out)
        return out

    def _accumulate(self, frame: np.ndarray) -> None:
        total = np.add.reduce(frame, axis=None, dtype=np.float64)
        if not np.isfinite(total):  # a frame with NaN/inf pixels never enters the reference
            return
        self._acc += frame
        self._count += 1
        if self._count < self.settings.reference_frames:
            return
        ref = (self._acc / self._count).astype(np.float32)
        self._acc[:] = 0
        self._count = 0
        if self._corr is None:
            self._corr = PhaseCorrelator(ref, self.settings)
            log.info("motion: provisional reference from %d frames", self.settings.reference_frames)
        else:
            self.set_reference(ref)
            log.info("motion: reference built from %d corrected frames",
                     self.settings.reference_frames)
