"""``cortexcast export --nwb F.nwb``: a recorded session as one Neurodata Without Borders file.

What the file holds (see docs/rig-day.md):

* session and subject metadata from ``[export.nwb]`` (:mod:`.nwb_metadata`); the session
  start is the absolute time of the session's first sample (frame, sync or stimulus):
  its ``t_acq`` when that is wall-clock time, else the recording's creation time plus the
  first record's receive offset (a simulated rig's clock starts at 0). Every time in the
  file counts seconds from it;
* ``/acquisition/TwoPhotonSeries``: the imaging frames (gzip, chunked), or with
  ``link_tiffs`` an external link to ScanImage's TIFF files, on an ImagingPlane;
* ``processing/ophys``: ImageSegmentation/PlaneSegmentation (pixel masks of the ROI set),
  Fluorescence (neuropil-corrected F) and DfOverF (or ``Deconvolved``), both taken from the
  one feature pass the dataset export runs (:func:`.export.feature_frames`: the live
  decoder's :class:`FeaturePipeline`); a rejected frame is NaN;
* stimulus frames, clip presentations, behaviour, reconstructions and closed-loop events
  (:mod:`.nwb_content`).

``pynwb`` is the ``nwb`` extra's: without it, :class:`~.export.ExportError` says so.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from cortexcast.core.config import path_field
from cortexcast.core.rois import ROISet
from cortexcast.decoder.live.process import DecoderSettings, feature_pipeline
from cortexcast.decoder.live.roi_loaders import load_roi_set
from cortexcast.decoder.offline.export import ExportError, SessionInput, feature_frames
from cortexcast.decoder.offline.nwb_metadata import NwbMetadata
from cortexcast.decoder.offline.session_frames import SessionFrames, TiffFrames
from cortexcast.decoder.offline.session_plan import SessionPlan, plan_session
from cortexcast.stream.recording import RecordingError, RecordingReader

log = logging.getLogger("export")

WALL_CLOCK_AFTER = 1e9
"""A ``t_acq`` above this (2001-09-09 as unix time) is wall-clock time."""


@dataclass(frozen=True)
class NwbSettings(SessionInput):
    """What to write where; features from a :class:`DecoderSettings`, metadata from
    :class:`NwbMetadata`."""

    out: str = path_field("")
    """The .nwb file to write."""
    link_tiffs: bool = False
    """TwoPhotonSeries as an external link to the TIFFs (needs ``tiff_folder``)."""
    force: bool = False
    progress: bool = True
    prefetch: int = 8

    def __post_init__(self) -> None:
        if not self.recording or not self.out:
            raise ValueError("an NWB export needs a recording (.ccr) and an output file (.nwb)")
        if self.link_tiffs and not self.tiff_folder:
            raise ValueError("link_tiffs needs the TIFF folder (--tiff-folder, or [daq.tiff] "
                             "folder with [daq] source = \"tiff\")")


def require_pynwb() -> None:
    """ExportError naming the extra when pynwb is not installed."""
    try:
        import pynwb  # noqa: F401
    except ImportError as exc:
        raise ExportError("writing NWB needs pynwb, which is not installed: pip install "
                          "'cortexcast[nwb]' (pynwb, nwbinspector)") from exc


def session_clock(reader: RecordingReader) -> tuple[float, datetime]:
    """(t0, session start): ``t0`` the first sample's ``t_acq`` (session time 0) and the
    absolute time it stands for (UTC)."""
    idx = reader.index
    rows = reader.select(["frames", "sync", "stimulus"])
    if not len(rows):
        raise ExportError(f"{reader.path} holds no frames, sync or stimulus records")
    t = idx["t_acq"][rows]
    first = int(rows[int(np.argmin(t))])
    t0 = float(t.min())
    if t0 > WALL_CLOCK_AFTER:
        unix = t0
    else:  # a clock that starts at 0 (the simulator): when the recorder received it
        unix = reader.created_unix + (int(idx["t_recv_ns"][first])
                                      - reader.created_monotonic_ns) / 1e9
    return t0, datetime.fromtimestamp(unix, timezone.utc)


def frame_times(plan: SessionPlan, index: np.ndarray) -> np.ndarray:
    """Acquisition time of imaging frames: their sync time, between syncs a line through
    the sync times (frames without sync, TIFF pages around the session)."""
    if len(plan.imaging) >= 2:
        slope, icept = np.polyfit(plan.imaging.astype(np.float64), plan.sync_t, 1)
    else:
        slope, icept = 1.0 / 30.0, float(plan.sync_t[0]) - plan.imaging[0] / 30.0
    t = icept + slope * index.astype(np.float64)
    pos = np.searchsorted(plan.imaging, index)
    ok = pos < len(plan.imaging)
    ok[ok] &= plan.imaging[pos[ok]] == index[ok]
    t[ok] = plan.sync_t[pos[ok]]
    return t


class _FluorescenceTap:
    """Keeps the neuropil-corrected F the pipeline's extractor computes on its way to dF/F,
    so Fluorescence and DfOverF come from one extraction."""

    def __init__(self, extractor: Any) -> None:
        self._fluorescence = extractor.fluorescence
        self.last: np.ndarray | None = None
        extractor.fluorescence = self  # an instance attribute: only this pipeline's

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self.last = self._fluorescence(frame)
        return self.last


@dataclass
class Traces:
    """The feature pass's output: per kept imaging frame, F and the pipeline's activity."""

    index: np.ndarray
    fluorescence: np.ndarray
    activity: np.ndarray
    kind: str
    counts: dict[str, Any]


def run_features(plan: SessionPlan, frames: SessionFrames, decoder: DecoderSettings,
                 rois: ROISet, settings: NwbSettings) -> Traces:
    """Every session frame through the live features (the dataset export's pass)."""
    features = feature_pipeline(decoder, rois)
    tap = _FluorescenceTap(features.extract)
    n, k = len(frames), 0
    index = np.zeros(n, np.int64)
    f = np.full((n, rois.n_neurons), np.nan, np.float32)
    a = np.full((n, rois.n_neurons), np.nan, np.float32)
    counts: dict[str, Any] = {}
    for i, activity in feature_frames(plan, frames, features, counts, settings.prefetch,
                                      settings.progress):
        if k == n:  # more frames than the index said: grow
            index, f, a = (np.concatenate([x, np.full_like(x, fill)]) for x, fill in
                           ((index, 0), (f, np.nan), (a, np.nan)))
            n *= 2
        index[k] = i
        if activity is not None and tap.last is not None:
            f[k], a[k] = tap.last, activity
        k += 1
    counts["frames_skipped_unreadable"] = frames.skipped
    return Traces(index[:k], f[:k], a[:k], features.activity_kind, counts)


def _frames_of(settings: NwbSettings, keep: np.ndarray) -> Iterator[np.ndarray]:
    """The kept frames' pixels again (a second read: memory never holds the movie)."""
    want = iter(keep.tolist())
    nxt = next(want, None)
    with settings.open_frames() as frames:
        for i, px in frames.iter_frames():
            if nxt is None:
                return
            if i == nxt:
                yield px
                nxt = next(want, None)


def export_nwb(settings: NwbSettings, decoder: DecoderSettings, meta: NwbMetadata,
               say: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the NWB file (via ``OUT.partial``); returns what it holds (counts)."""
    require_pynwb()
    from pynwb import NWBHDF5IO

    from cortexcast.decoder.offline import nwb_content as content
    from cortexcast.decoder.offline.nwb_ophys import add_ophys, new_file

    out = Path(settings.out)
    if out.exists() and not settings.force:
        raise ExportError(f"{out} already exists; choose another --nwb file or pass --force "
                          "to replace it")
    rois = load_roi_set(decoder.rois, decoder.rois_format, cells_only=decoder.rois_cells_only)
    try:
        reader = RecordingReader(settings.recording)
    except RecordingError as exc:
        raise ExportError(f"{exc}; pass the .ccr file `cortexcast record` wrote") from exc
    partial = out.with_name(out.stem + ".partial.nwb")  # pynwb warns on another suffix
    with reader:
        plan = plan_session(reader)
        with settings.open_frames() as frames:
            if tuple(frames.frame_shape) != tuple(rois.frame_shape):
                raise ExportError(f"the ROI file {decoder.rois} was drawn on "
                                  f"{rois.frame_shape} frames but {frames.source}'s are "
                                  f"{frames.frame_shape}: use the ROIs of this session")
            say(f"export: NWB of {len(frames)} frames of {frames.source}, "
                f"{rois.n_neurons} neurons")
            traces = run_features(plan, frames, decoder, rois, settings)
            tiffs = frames if isinstance(frames, TiffFrames) and settings.link_tiffs else None
            t0, start = session_clock(reader)
            nwb = new_file(meta, start, reader)
            rate = plan.imaging_rate_hz() or decoder.frame_rate_hz
            t_frames = frame_times(plan, traces.index) - t0
            link = None
            if tiffs is not None:
                every = np.arange(tiffs.first_frame, tiffs.first_frame + len(tiffs))
                link = (tiffs, frame_times(plan, every) - t0, out.resolve().parent)
            pixels = None if link else _frames_of(settings, traces.index)
            add_ophys(nwb, meta, rois, traces, t_frames, rate, pixels, frames.frame_shape,
                      link)
        bad: Counter[str] = Counter()
        counts = {"imaging_frames": len(traces.index), "neurons": rois.n_neurons,
                  **content.add_stimulus(nwb, reader, plan, t0, bad),
                  **content.add_behavior(nwb, reader, t0, bad),
                  "reconstructions": content.add_reconstructions(nwb, reader, t0, bad),
                  "loop_events": content.add_loop_events(nwb, reader, t0, bad)}
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            with NWBHDF5IO(str(partial), "w") as io:
                io.write(nwb)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, out)
    counts.update(traces.counts, bad_messages=dict(bad), activity=traces.kind,
                  session_start=start.isoformat())
    say(f"export: wrote {out} ({counts['imaging_frames']} frames, {counts['neurons']} ROIs, "
        f"{counts['clip_presentations']} clip presentations, {counts['reconstructions']} "
        f"reconstructions, {counts['loop_events']} closed-loop events)")
    return counts

