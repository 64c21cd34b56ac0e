"""``cortexcast export``: a training dataset from a recorded session, with the live features.

Two passes over the session:

1. :func:`~cortexcast.decoder.offline.session_plan.plan_session` reads the recording's
   ``sync`` and ``stimulus`` topics (small messages) and plans the trials and tiers;
2. every imaging frame, in acquisition order, from the recording's ``frames`` or from
   ScanImage's TIFFs (:mod:`~cortexcast.decoder.offline.session_frames`, read ahead on a
   second thread), goes through the :class:`~cortexcast.decoder.live.features.FeaturePipeline`
   that :func:`cortexcast.decoder.live.process.feature_pipeline` builds from the same
   ``[decoder]`` settings the live decoder takes (motion correction, extraction, neuropil,
   ΔF/F, optional deconvolution); :class:`~cortexcast.decoder.offline.trials.SessionAssembler`
   (the code ``simulate`` uses) turns the activity into per-stimulus-frame rows and hands out
   one trial at a time, written at once with its video (the stimulus stream's pixels).

Memory holds the sync table, one trial's rows and a few frames, never the session. The
dataset is built in ``DIR.partial`` and moved into ``DIR`` when complete, so a failed export
leaves an earlier dataset untouched. Outputs are sinks (:class:`SensoriumSink` writes the
Sensorium 2023 layout), so other formats can receive the same trials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from cortexcast.core.config import path_field
from cortexcast.core.errors import CortexcastError
from cortexcast.core.roi_fingerprint import write_dataset_roi_meta
from cortexcast.core.rois import ROISet, save_rois
from cortexcast.decoder.live.mask_file import read_mask
from cortexcast.decoder.live.motion import load_reference
from cortexcast.decoder.live.process import DecoderSettings, feature_pipeline
from cortexcast.decoder.live.features import BadFrameError
from cortexcast.decoder.live.roi_loaders import detect_format, load_roi_set
from cortexcast.decoder.offline.export_io import Progress, TrialVideos, uncovered_trials
from cortexcast.decoder.offline.session_frames import (SessionFrames, TiffFrames,
                                                       open_session_frames, read_ahead)
from cortexcast.decoder.offline.session_plan import SessionPlan, plan_session
from cortexcast.decoder.offline.trials import (DatasetOutput, FrameValues, SessionAssembler,
                                               TrialRows)
from cortexcast.stream.recording import RecordingError, RecordingReader

log = logging.getLogger("export")

WRITTEN = ("data", "meta", "rois.npz", "eval_mask.npy", "export.json")
"""What an export writes into its folder (and ``--force`` replaces)."""
STIM_SHAPE = (36, 64)


class ExportError(CortexcastError, ValueError):
    """An export cannot run as asked (the message names the file and the fix)."""


@dataclass(frozen=True)
class SessionInput:
    """Where a recorded session's events and frames come from (every export reads these)."""

    recording: str = path_field("")
    """The session's recording (.ccr): sync, stimulus identity and (unless TIFFs) frames."""
    tiff_folder: str = path_field("")
    """Frames from ScanImage's TIFFs in this folder instead of the recording."""
    first_frame: int = 0
    """Imaging frame of the first TIFF page (the daq's index of ScanImage's first frame)."""
    tiff_stem: str = ""
    tiff_channel: int = 1

    def open_frames(self) -> SessionFrames:
        """The session's frames: from the TIFFs when given, else from the recording."""
        return open_session_frames(self.recording if not self.tiff_folder else None,
                                   self.tiff_folder or None, first_frame=self.first_frame,
                                   stem=self.tiff_stem, channel=self.tiff_channel)


@dataclass(frozen=True)
class ExportSettings(SessionInput):
    """What to export where; the features come from a :class:`DecoderSettings`."""

    out: str = path_field("")
    """Dataset folder to write (Sensorium 2023 layout)."""
    clips: str = path_field("")
    """The clip set the session showed: tiers from its manifest, missing pixels from it."""
    eval_mask: str = path_field("")
    """(36, 64) bool .npy written as the dataset's eval_mask.npy."""
    seed: int = 0
    """Seed of the choice of oracle (validation) clips."""
    oracle_fraction: float = 0.1
    """Share of the training clips held out as the oracle tier, when the clip set has no
    validation clips of its own (``cortexcast clips --validation-clips``)."""
    force: bool = False
    """Replace a dataset already in ``out``."""
    allow_partial: bool = False
    """TIFFs that miss some trials' frames: export the covered trials (else an error)."""
    progress: bool = True
    prefetch: int = 8
    """Frames read ahead on a second thread (0: read in line)."""

    def __post_init__(self) -> None:
        if not self.recording:
            raise ValueError("a recording (.ccr) is required: it holds sync and stimulus")
        if not self.out:
            raise ValueError("an output folder is required (--out DIR)")
        if not 0 <= self.oracle_fraction < 1:
            raise ValueError(f"oracle_fraction must be in [0, 1), got {self.oracle_fraction}")
        if self.tiff_channel < 1 or self.prefetch < 0:
            raise ValueError("tiff_channel must be >= 1 and prefetch >= 0")


def check_out(out: Path, force: bool) -> list[str]:
    """What of an earlier export is in ``out`` (to replace with ``force``); ExportError if
    ``out`` holds anything and ``force`` is not set."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; choose another --out")
    existing = sorted(p.name for p in out.iterdir())
    if existing and not force:
        raise ExportError(f"{out} already exists and holds {', '.join(existing[:5])}"
                          f"{', ...' if len(existing) > 5 else ''}; choose another --out or "
                          "pass --force to replace the dataset in it")
    return [name for name in WRITTEN if (out / name).exists()]


class SensoriumSink:
    """Receives the exported trials and writes the Sensorium 2023 layout into ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.output = DatasetOutput(root)

    def trial(self, tid: int, tier: str, video: np.ndarray, rows: TrialRows) -> None:
        self.output.trial(tid, tier, video, rows)

    def finish(self, plan: SessionPlan, rois: ROISet, rois_path: str, rois_format: str,
               reference: np.ndarray | None, eval_mask: np.ndarray | None,
               summary: dict[str, Any]) -> None:
        trials = plan.trials
        yx = np.asarray(rois.centroids, np.float32)
        coords = np.stack([yx[:, 1], yx[:, 0], np.zeros(len(yx), np.float32)], 1)
        self.output.finish(np.array([t.tier for t in trials], "<U16"), coords,
                           clip_ids=np.array([t.clip for t in trials], "<U64"),
                           first_stim_frame=np.array([t.start for t in trials], np.int64))
        if rois_format == "cortexcast":  # the file as given (with its reference, if any)
            shutil.copyfile(rois_path, self.root / "rois.npz")
        elif reference is not None:
            save_rois(self.root / "rois.npz", rois, reference=reference)
        else:
            save_rois(self.root / "rois.npz", rois)
        write_dataset_roi_meta(self.root, rois, rois_file=str(Path(rois_path).resolve()),
                               reference=reference)
        if eval_mask is not None:
            self.output.writer.eval_mask(eval_mask)
        (self.root / "export.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


def _reference_used(decoder: DecoderSettings, motion: Any) -> np.ndarray | None:
    """The motion reference image the features are corrected against, when it comes from a
    file (None: no motion correction, or a reference to be built online from the frames).
    Call before any frame: an online reference is final only after its frames."""
    if motion is None or not motion.final:
        return None
    return load_reference(decoder.motion.reference or decoder.rois)


def _clip_set(settings: ExportSettings) -> Any:
    if not settings.clips:
        return None
    from cortexcast.daq.playlist import load_clip_set

    return load_clip_set(settings.clips)


def _check_inputs(settings: ExportSettings, decoder: DecoderSettings, plan: SessionPlan,
                  frames: SessionFrames, rois: ROISet) -> list[int]:
    """Frame size, imaging rate and TIFF coverage; returns the trials to drop."""
    if tuple(frames.frame_shape) != tuple(rois.frame_shape):
        raise ExportError(
            f"the ROI file {decoder.rois} was drawn on {rois.frame_shape[0]}x"
            f"{rois.frame_shape[1]} frames but {frames.source}'s frames are "
            f"{frames.frame_shape[0]}x{frames.frame_shape[1]}: another field of view; use the "
            "ROIs made for this session (`cortexcast rois --recording ...`)")
    rate = plan.imaging_rate_hz()
    if rate is not None and abs(rate / decoder.frame_rate_hz - 1) > 0.1:
        log.warning("the recording's sync shows imaging at %.3g Hz but frame_rate_hz = %g "
                    "(the baseline time constants follow it); set [decoder] frame_rate_hz "
                    "(or --frame-rate-hz) to the rig's rate, the same for export and decoder",
                    rate, decoder.frame_rate_hz)
    if not isinstance(frames, TiffFrames):
        return []
    drop = uncovered_trials(plan, frames)
    if not drop:
        return []
    a, b = frames.span()
    need = [t for t in plan.trials if t.first_imaging >= 0]
    what = (f"the TIFFs in {frames.folder} ({frames.files[0].name} .. {frames.files[-1].name}) "
            f"hold imaging frames {a}..{b} (--first-frame {frames.first_frame}) but the "
            f"recording {settings.recording}'s trials need frames {need[0].first_imaging}.."
            f"{need[-1].last_imaging}; {len(drop)} of {len(plan.trials)} trials are not "
            "covered")
    fix = ("put every file of the acquisition into the folder and set --first-frame to the "
           "imaging frame of the first page")
    if len(drop) == len(plan.trials) or not settings.allow_partial:
        raise ExportError(f"{what}; {fix}" + ("" if len(drop) == len(plan.trials) else
                                              ", or pass --allow-partial to export the "
                                              "covered trials only"))
    log.warning("%s: exporting the %d covered trials only", what, len(plan.trials) - len(drop))
    return drop


@dataclass(frozen=True)
class _Inputs:
    """What an export reads besides the session: ROIs, clip set, evaluation mask."""

    rois: ROISet
    rois_format: str
    clip_set: Any
    clip_tiers: dict[str, str] | None
    eval_mask: np.ndarray | None

    @classmethod
    def load(cls, settings: ExportSettings, decoder: DecoderSettings) -> _Inputs:
        rois = load_roi_set(decoder.rois, decoder.rois_format,
                            cells_only=decoder.rois_cells_only)
        fmt = detect_format(decoder.rois) if decoder.rois_format == "auto" else decoder.rois_format
        clip_set = _clip_set(settings)
        tiers = None if clip_set is None else {
            **{n: str(c.get("tier")) for n, c in clip_set.manifest.get("clips", {}).items()},
            **{n: clip_set.tier_of(n) for n in clip_set.clip_names}}
        mask = (read_mask(settings.eval_mask, STIM_SHAPE, ExportError)
                if settings.eval_mask else None)
        return cls(rois, fmt, clip_set, tiers, mask)


def export_session(settings: ExportSettings, decoder: DecoderSettings,
                   say: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the dataset; returns the summary (also saved as ``export.json``)."""
    started = time.perf_counter()
    out = Path(settings.out)
    replace = check_out(out, settings.force)
    inputs = _Inputs.load(settings, decoder)
    try:
        reader = RecordingReader(settings.recording)
    except RecordingError as exc:
        raise ExportError(f"{exc}; pass the .ccr file `cortexcast record` wrote") from exc
    partial = out.with_name(out.name + ".partial")
    try:
        with reader:
            plan = plan_session(reader, inputs.clip_tiers, settings.seed,
                                settings.oracle_fraction)
            with settings.open_frames() as frames:
                drop = set(_check_inputs(settings, decoder, plan, frames, inputs.rois))
                plan.trials = [t for k, t in enumerate(plan.trials) if k not in drop]
                summary = _write(partial, settings, decoder, inputs, plan, frames, reader,
                                 say, started)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # an earlier dataset in out stays as it was
        raise
    for name in replace:  # the new dataset is complete: replace the old one
        p = out / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if out.exists():
        for p in partial.iterdir():
            p.rename(out / p.name)
        partial.rmdir()
    else:
        partial.rename(out)
    say(f"export: wrote {summary['trials']} trials to {out} in {summary['elapsed_s']:.1f} s "
        f"({summary['frames_per_s']:.0f} frames/s, {summary['x_real_time']:.1f}x real time)")
    return summary


def _write(partial: Path, settings: ExportSettings, decoder: DecoderSettings, inputs: _Inputs,
           plan: SessionPlan, frames: SessionFrames, reader: RecordingReader,
           say: Callable[[str], None], started: float) -> dict[str, Any]:
    """Run the frames through the features and write the dataset into ``partial``."""
    features = feature_pipeline(decoder, inputs.rois)
    reference = _reference_used(decoder, features.motion)  # before frames finalise one
    say(f"export: {len(plan.trials)} trials "
        f"({', '.join(f'{k} {v}' for k, v in _tier_counts(plan).items())}) of "
        f"{inputs.rois.n_neurons} neurons from {len(frames)} frames of {frames.source}")
    if partial.exists():
        shutil.rmtree(partial)
    sink = SensoriumSink(partial)
    videos = TrialVideos(reader, plan, inputs.clip_set)
    counts = _run(plan, frames, features, sink, videos, settings)
    summary = _summary(settings, decoder, plan, frames, features, counts, videos,
                       time.perf_counter() - started)
    sink.finish(plan, inputs.rois, decoder.rois, inputs.rois_format, reference,
                inputs.eval_mask, summary)
    return summary


def _tier_counts(plan: SessionPlan) -> dict[str, int]:
    tiers = [t.tier for t in plan.trials]
    return {k: tiers.count(k) for k in ("train", "oracle", "final_test_main") if k in tiers}


def feature_frames(plan: SessionPlan, frames: SessionFrames, features: Any,
                   counts: dict[str, Any], prefetch: int = 8, progress: bool = True
                   ) -> Iterator[tuple[int, np.ndarray | None]]:
    """The live features of every session frame, in acquisition order: ``(imaging frame,
    activity)``, activity None for a frame the features reject (as live: no state changes).

    The one offline path through the :class:`FeaturePipeline` (the dataset export and the NWB
    export both read it). Frames before the first sync (TIFF pages logged before the daq
    started: never seen live) and out-of-order frames are skipped; ``counts`` gets
    ``frames_before_session``, ``frames_out_of_order`` and ``frames_rejected``.
    """
    for key in ("frames_before_session", "frames_out_of_order", "frames_rejected"):
        counts.setdefault(key, 0)
    first = int(plan.imaging[0])
    bar = Progress(len(frames), progress, plan.imaging_rate_hz())
    previous = None
    for index, pixels in read_ahead(frames.iter_frames(), prefetch):
        bar.step()
        if index < first:
            counts["frames_before_session"] += 1
            continue
        if previous is not None and index <= previous:
            counts["frames_out_of_order"] += 1
            continue
        previous = index
        try:
            activity = features(pixels)
        except BadFrameError as exc:  # rejected as the live decoder rejects it: no features
            counts["frames_rejected"] += 1
            if counts["frames_rejected"] == 1:
                log.warning("export: frame %d rejected (%s); its stimulus frames hold the "
                            "previous frame's values, as live", index, exc)
            yield index, None
            continue
        yield index, activity
    bar.close()


def _run(plan: SessionPlan, frames: SessionFrames, features: Any, sink: SensoriumSink,
         videos: TrialVideos, settings: ExportSettings) -> dict[str, Any]:
    """Pass 2: every frame through the features, trials written as they complete."""
    def write(pos: int, rows: TrialRows) -> None:
        trial = plan.trials[pos]
        sink.trial(pos, trial.tier, videos.video(trial), rows)

    assembler = SessionAssembler([t.start for t in plan.trials],
                                 [t.length for t in plan.trials], features.n_neurons, write)
    counts = {"frames": 0, "frames_without_sync": 0, "frames_out_of_order": 0,
              "frames_before_session": 0, "frames_rejected": 0}
    for index, activity in feature_frames(plan, frames, features, counts, settings.prefetch,
                                          settings.progress):
        if activity is None:
            continue
        counts["frames"] += 1
        row = plan.sync_row(index)
        if row is None:
            counts["frames_without_sync"] += 1
            continue
        beh = plan.behavior[row]
        assembler.feed(int(plan.stim[row]), FrameValues(activity, beh[:2], beh[2:]))
    assembler.close()
    counts.update(dataclasses.asdict(assembler.counts))
    counts["frames_skipped_unreadable"] = frames.skipped
    return counts


def _summary(settings: ExportSettings, decoder: DecoderSettings, plan: SessionPlan,
             frames: SessionFrames, features: Any, counts: dict[str, Any],
             videos: TrialVideos, elapsed: float) -> dict[str, Any]:
    rate = plan.imaging_rate_hz() or decoder.frame_rate_hz
    n = counts["frames"]
    return {
        "format": "cortexcast-export-1",
        "recording": str(Path(settings.recording).resolve()),
        "frames_from": frames.source,
        "rois": str(Path(decoder.rois).resolve()),
        "features": {"frame_rate_hz": decoder.frame_rate_hz, "activity": features.activity_kind,
                     "extraction": dataclasses.asdict(decoder.extraction),
                     "motion": dataclasses.asdict(decoder.motion),
                     "deconvolution": (dataclasses.asdict(decoder.deconvolution)
                                       if decoder.activity == "deconvolved" else None)},
        "trials": len(plan.trials), "tiers": _tier_counts(plan),
        "tiers_from": plan.counts.get("tiers_from"),
        "neurons": features.n_neurons,
        "counts": {**counts, **{k: v for k, v in plan.counts.items() if k != "tiers_from"},
                   **videos.counts},
        "elapsed_s": elapsed, "frames_per_s": n / elapsed if elapsed > 0 else 0.0,
        "x_real_time": n / rate / elapsed if elapsed > 0 else 0.0,
    }
