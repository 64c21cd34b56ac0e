"""Built-in ROI detection for one field of view (``cortexcast rois``).

Stages, each timed:

1. **Reference**: frames ``0..2N-1`` go through the live decoder's own
   :class:`~cortexcast.decoder.live.motion.MotionCorrector` (``N`` =
   ``[decoder.motion] reference_frames``), so the reference is exactly the one the
   online correction would build; it is saved with the ROIs and the decoder then
   aligns every frame to it.
2. **Sample**: a session is far too long to read whole (30 min at 512x512 is 28 GB),
   and detection needs only how pixels co-vary. A few thousand frames are read, in
   short contiguous runs spread evenly over the session; each run is one *bin* of
   ``bin_s`` seconds (a source that can only be read in order, such as ScanImage
   TIFFs, gives every ``s``-th frame instead, a few consecutive samples per bin). Every
   frame is registered to the reference (the same :class:`PhaseCorrelator` /
   :class:`FrameShifter`, frames read ahead on a thread) and averaged into its bin: a
   calcium transient lasts ~1 s, so a bin keeps it while averaging the shot noise
   down.
3. **Images**: the mean image, and the local correlation image (each pixel's
   correlation over bins with its 8 neighbours) of the bins after a spatial
   high-pass, which removes the neuropil and global brightness changes.
4. **Cells** (:mod:`cortexcast.decoder.offline.roi_cells`): seeds at local maxima of
   local correlation plus sharpened mean brightness, each grown into the connected
   pixels that follow the seed's time course, within a soma-sized disk; overlapping
   duplicates dropped, and nothing seeded in the edge strips registration filled by
   repeating edge pixels. The neuropil model comes from
   :func:`cortexcast.core.rois.from_pixel_lists`.

Measured (simulated rig, 7800 neurons at 512x512, brain motion up to ~9 px, 2 shared
cores): a 30-min session at 30 Hz recorded to a 28 GB ``.ccr`` (cold page cache) takes
21 s and 0.85 GB; precision 0.985 / recall 0.823 against the true footprints at
IoU >= 0.5 (animal seed 11); at 8 Hz with the ``realistic`` preset 0.976 / 0.801
(seed 7). Most misses are somata touching a brighter neighbour (median neighbour
distance is one soma diameter there).

Memory: the bins are held as float32 (``n_bins x H x W``), at most ~1 GiB
(:data:`MAX_BIN_BYTES`); at 512x512 that is 1024 bins.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from cortexcast.core.rois import ROISet
from cortexcast.decoder.live.motion import (FrameShifter, MotionCorrector, MotionSettings,
                                            PhaseCorrelator)
from cortexcast.decoder.offline.roi_cells import (DetectionError, estimate_diameter, find_cells,
                                                  inner_region, local_correlation,
                                                  normalise_bins)
from cortexcast.decoder.offline.roi_frames import ReadFn, SamplePlan, frame_access, plan_sample
from cortexcast.decoder.offline.session_frames import read_ahead

__all__ = ["DetectionError", "DetectionSettings", "Detection", "detect"]

log = logging.getLogger("cortexcast.decoder.offline.roi_detection")

MAX_BIN_BYTES = 1 << 30
"""Memory for the binned movie (float32)."""


@dataclass(frozen=True)
class DetectionSettings:
    diameter_px: float | None = None
    """Expected soma diameter (px). None: ``soma_um / um_per_px`` if the pixel size is
    known, else estimated from the mean image."""
    soma_um: float = 10.0
    """Expected soma diameter (µm), used with ``um_per_px``."""
    um_per_px: float | None = None
    """Pixel size (µm), if known."""
    max_frames: int = 4000
    """Frames read for detection, at most (reading dominates the time)."""
    bin_s: float = 0.3
    """Length of one bin (s): frames averaged into one sample of each pixel's time course
    (made up to twice as long when ``max_frames`` would give more bins than fit in
    memory)."""
    highpass_cells: float = 3.0
    """Spatial high-pass scale (in soma diameters) removed before correlating pixels."""
    seed_threshold: float = 2.0
    """A seed's score (robust z of the correlation image + that of the sharpened mean
    image) must exceed this."""
    active_threshold: float = 1.0
    """Also a seed: a local maximum of the correlation image alone above this robust z,
    where the sharpened mean image's robust z is above ``seed_threshold``."""
    pixel_threshold: float = 0.7
    """A pixel joins a footprint when its correlation with the seed's time course is at
    least this fraction of the best neighbour's."""
    max_overlap: float = 0.5
    """A candidate sharing more than this fraction of its pixels with a kept ROI is a
    duplicate."""
    block_px: int = 32
    """Neuropil block size of the ROI set (as the decoder's ``block_px``)."""

    def __post_init__(self) -> None:
        if self.diameter_px is not None and not 1.0 <= self.diameter_px <= 100.0:
            raise ValueError(f"diameter must be in 1..100 px, got {self.diameter_px}")
        if self.um_per_px is not None and not 0 < self.um_per_px <= 100:
            raise ValueError(f"um_per_px must be in (0, 100], got {self.um_per_px}")
        if not 1 <= self.soma_um <= 100:
            raise ValueError(f"soma_um must be in 1..100, got {self.soma_um}")
        if self.max_frames < 100:
            raise ValueError(f"max_frames must be >= 100, got {self.max_frames}")
        if not 0 < self.bin_s <= 10:
            raise ValueError(f"bin_s must be in (0, 10], got {self.bin_s}")
        if not 0 < self.pixel_threshold < 1:
            raise ValueError(f"pixel_threshold must be in (0, 1), got {self.pixel_threshold}")
        if not 0 < self.max_overlap <= 1:
            raise ValueError(f"max_overlap must be in (0, 1], got {self.max_overlap}")


# ------------------------------------------------------------------ reference, binning

@dataclass
class BinnedMovie:
    """The registered, binned sample of a session and its per-stage timing."""

    reference: np.ndarray
    mean: np.ndarray
    """Mean of all registered sampled frames."""
    bins: np.ndarray
    """(n_bins, H, W) float32: each bin's registered mean (empty bins dropped)."""
    shifts: np.ndarray
    """(frames registered, 2) shifts found."""
    frames_read: int
    timings: dict[str, float] = field(default_factory=dict)


def build_reference(frames: Iterator[tuple[int, np.ndarray]], frame_shape: tuple[int, int],
                    motion: MotionSettings) -> np.ndarray:
    """The reference the online :class:`MotionCorrector` builds from these frames."""
    mc = MotionCorrector(frame_shape, motion)
    n = 0
    acc = np.zeros(frame_shape, np.float64)
    for _, frame in frames:
        acc += frame
        n += 1
        mc(frame)
        if mc.final:
            break
    if mc.reference is None:  # a session shorter than 2N frames: the mean of what there is
        if n == 0:
            raise DetectionError("no frames could be read to build the motion reference")
        log.warning("only %d frames for the motion reference (the decoder uses %d)", n,
                    2 * motion.reference_frames)
        return (acc / n).astype(np.float32)
    return mc.reference


def register_bins(read: ReadFn, plan: SamplePlan, frame_shape: tuple[int, int],
                  motion: MotionSettings, progress: Callable[[str], None] = log.info
                  ) -> BinnedMovie:
    """Build the reference, then register every sampled frame and average it into its bin."""
    t0 = time.perf_counter()
    reference = build_reference(read(plan.reference), frame_shape, motion)
    t_ref = time.perf_counter() - t0
    corr = PhaseCorrelator(reference, motion)
    shifter = FrameShifter(frame_shape, motion.max_shift_px)
    index = np.concatenate(plan.bins)
    bin_of = dict(zip(index.tolist(), np.repeat(np.arange(len(plan.bins)),
                                                 [len(b) for b in plan.bins]).tolist()))
    counts = np.zeros(len(plan.bins), np.int64)
    stack = np.zeros((len(plan.bins), *frame_shape), np.float32)
    shifts = []
    mean = np.zeros(frame_shape, np.float64)
    t_read = t_reg = 0.0
    t1 = last = time.perf_counter()
    it = read_ahead(read(index))
    done = 0
    while True:
        a = time.perf_counter()
        item = next(it, None)
        b = time.perf_counter()
        t_read += b - a
        if item is None:
            break
        i, frame = item
        k = bin_of.get(int(i))
        if k is None:
            raise DetectionError(f"frame reader gave frame {i}, which was not asked for")
        dy, dx, _ = corr.shift_of(frame)
        out = shifter(frame, dy, dx)
        stack[k] += out
        counts[k] += 1
        mean += out
        shifts.append((dy, dx))
        done += 1
        t_reg += time.perf_counter() - b
        if time.perf_counter() - last > 10.0:
            last = time.perf_counter()
            progress(f"registered {done}/{index.size} frames ({last - t1:.0f} s, "
                     f"~{(last - t1) / done * (index.size - done):.0f} s left)")
    if done == 0:
        raise DetectionError("none of the sampled frames could be read")
    full = counts > 0
    if not full.all():  # compact in place: no second copy of the stack
        keep = np.flatnonzero(full)
        for j, k in enumerate(keep):
            stack[j] = stack[k]
        stack = stack[:keep.size]
        counts = counts[keep]
    stack /= counts[:, None, None].astype(np.float32)
    n_read = done + len(np.setdiff1d(plan.reference, index))
    return BinnedMovie(reference, (mean / done).astype(np.float32), stack,
                       np.asarray(shifts, np.float32), n_read,
                       {"reference": t_ref, "read": t_read, "register": t_reg})


# ------------------------------------------------------------------------------ images

def diameter_px(settings: DetectionSettings, mean: np.ndarray) -> tuple[float, str]:
    """(diameter, where it came from)."""
    if settings.diameter_px is not None:
        return settings.diameter_px, "--diameter"
    if settings.um_per_px is not None:
        return max(2.0, settings.soma_um / settings.um_per_px), (
            f"{settings.soma_um:g} µm at {settings.um_per_px:g} µm/px")
    return estimate_diameter(mean), "estimated from the mean image"


@dataclass
class Detection:
    rois: ROISet
    reference: np.ndarray
    mean: np.ndarray
    correlation: np.ndarray
    """8-neighbour local correlation image."""
    diameter: float
    diameter_source: str
    frames_read: int
    timings: dict[str, float]


def detect(source: Any, frame_rate_hz: float, settings: DetectionSettings = DetectionSettings(),
           motion: MotionSettings = MotionSettings(),
           progress: Callable[[str], None] = log.info) -> Detection:
    """Find the ROIs of a session (``source``: see
    :func:`~cortexcast.decoder.offline.roi_frames.frame_access`)."""
    shape = tuple(int(v) for v in source.frame_shape) if hasattr(source, "frame_shape") \
        else tuple(int(v) for v in source.shape[1:])
    n = len(source)
    max_bins = max(100, MAX_BIN_BYTES // (4 * shape[0] * shape[1]))
    access = frame_access(source)
    plan = plan_sample(n, frame_rate_hz, max_frames=settings.max_frames, bin_s=settings.bin_s,
                       reference_frames=motion.reference_frames, max_bins=max_bins,
                       contiguous=access.random)
    progress(f"sampling {plan.n_read} of {n} frames ({access.what}): the first "
             f"{plan.reference.size} for the motion reference, {plan.describe(frame_rate_hz)}")
    movie = register_bins(access.read, plan, shape, motion, progress)  # type: ignore[arg-type]
    timings = dict(movie.timings)
    sh = np.hypot(movie.shifts[:, 0], movie.shifts[:, 1])
    progress(f"registered: reference {timings['reference']:.1f} s, waiting for frames "
             f"{timings['read']:.1f} s, registering {timings['register']:.1f} s "
             f"(shifts up to {sh.max():.1f} px, median {np.median(sh):.1f})")
    t0 = time.perf_counter()
    diam, where = diameter_px(settings, movie.mean)
    z = normalise_bins(movie.bins, settings.highpass_cells * diam)
    corr, corr4 = local_correlation(z)
    timings["images"] = time.perf_counter() - t0
    progress(f"images: mean and correlation of {z.shape[0]} bins, soma diameter {diam:.1f} px "
             f"({where}), {timings['images']:.1f} s")
    t0 = time.perf_counter()
    rois = find_cells(z, movie.mean, corr4, diam, settings,
                      inner_region(shape, movie.shifts))  # type: ignore[arg-type]
    timings["cells"] = time.perf_counter() - t0
    progress(f"cells: {rois.n_neurons} ROIs, {timings['cells']:.1f} s")
    return Detection(rois, movie.reference, movie.mean, corr, diam, where, movie.frames_read,
                     timings)
