"""The decoder process: frames in, `activity` and `reconstruction` out.

The math lives in :class:`FrameDecoder` (the shared feature pipeline,
:func:`feature_pipeline`, + ONNX pixel decoder + sync bookkeeping), a plain object;
:func:`run_decoder` is the socket loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cortexcast.core.config import path_field
from cortexcast.core.events import (Activity, ImagingFrame, Reconstruction, SyncEvent,
                                    from_message, topics_of)
from cortexcast.core.runtime import ProcessRun, StopSignals
from cortexcast.decoder.live.extraction import ExtractionSettings
from cortexcast.decoder.live.features import BadFrameError, FeaturePipeline
from cortexcast.decoder.live.model_card import check_model_rois
from cortexcast.decoder.live.deconvolution import DeconvolutionSettings
from cortexcast.decoder.live.motion import MotionCorrector, MotionSettings, load_reference
from cortexcast.decoder.live.stimulus_clock import StimulusClock, SyncTracker
from cortexcast.decoder.live.roi_loaders import FORMATS as ROI_FORMATS, detect_format, load_roi_set
from cortexcast.core.rois import ROIError, ROISet
from cortexcast.core.message import Message, MessageError
from cortexcast.stream.endpoints import parse_wait_for
from cortexcast.stream.pubsub import Publisher, Sockets, Subscriber
from cortexcast.decoder.live.loop_stats import BusyTimes, count_bad, forwarded_stamps

log = logging.getLogger("decoder")

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"  # decoder/models
BUNDLED_MODEL = MODELS_DIR / "cortexcast_sim.onnx"


def resolve_model(model: str) -> Path:
    """'bundled' -> the model shipped in the package; anything else is a path."""
    return BUNDLED_MODEL if model == "bundled" else Path(model)


@dataclass(frozen=True)
class DecoderSettings:
    frames_from: str = "tcp://127.0.0.1:5555"
    """The daq endpoint (topics `frames` and `sync`)."""
    publish: str = "tcp://127.0.0.1:5556"
    """Endpoint the decoder binds for `activity` and `reconstruction`."""
    rois: str = path_field("")
    """ROIs: cortexcast .npz (the simulator writes the ground-truth footprints), a suite2p
    folder (plane, combined or parent) or its stat.npy, or a CaImAn .hdf5 (cnm.save)."""
    rois_format: str = "auto"
    """'auto' (from the path), 'cortexcast', 'suite2p' or 'caiman'."""
    rois_cells_only: bool = True
    """Keep only suite2p ROIs with iscell = 1 / CaImAn's accepted components (idx_components)."""
    model: str = path_field("bundled")
    """ONNX model with its JSON card beside it, or 'bundled'."""
    session_stats: str = path_field("")
    """This session's per-neuron response mean/std, to re-standardise activity onto the scale
    the model was trained on (needs the model's .norm.npz): an .npz with resp_mean and
    resp_std, or a dataset folder (its meta/statistics). Empty: feed activity as it is."""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    """onnxruntime execution providers, in order of preference."""
    threads: int = 1
    """onnxruntime intra-op threads."""
    frame_rate_hz: float = 30.0
    """Imaging rate (Hz); sets the baseline time constants of the extraction."""
    stim_rate_hz: float = 30.0
    """Stimulus (output) frame rate (Hz): the clock reconstructions are named on."""
    extraction: ExtractionSettings = field(default_factory=ExtractionSettings)
    motion: MotionSettings = field(default_factory=MotionSettings)
    """Rigid motion correction before extraction (sub-table [decoder.motion])."""
    activity: str = "dff"
    """What the model is fed: 'dff' (ΔF/F) or 'deconvolved' (online AR(1) deconvolution)."""
    deconvolution: DeconvolutionSettings = field(default_factory=DeconvolutionSettings)
    """AR(1) decay and spike threshold when activity = 'deconvolved' ([decoder.deconvolution])."""
    publish_activity: bool = True
    """Also publish the ΔF/F vector of every frame on `activity`."""
    hwm: int = 200
    """Receive/send queue length (messages)."""
    wait_for: tuple[str, ...] = ()
    """Own topics that must have a subscriber before the decoder subscribes to the daq."""
    wait_timeout_s: float = 30.0
    sync_wait_s: float = 0.02
    """How long a frame waits for its `sync` message (stimulus frame, behaviour) before it is
    decoded with extrapolated values; 0 decodes at once. A source that sends no sync at all is
    noticed at the first frame and then not waited for."""
    use_behavior: bool = True
    """Feed pupil, running and eye position from `sync` to models that take behaviour; false:
    always the model's training mean (a rig that does not measure them)."""
    stats_out: str | None = path_field(None)

    def __post_init__(self) -> None:
        if not self.rois:
            raise ValueError("'rois' is required: the ROI file that matches the imaging frames")
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.rois_format not in ROI_FORMATS:
            raise ValueError(f"rois_format must be one of {', '.join(ROI_FORMATS)}, "
                             f"got {self.rois_format!r}")
        if self.activity not in ("dff", "deconvolved"):
            raise ValueError(f"activity must be 'dff' or 'deconvolved', got {self.activity!r}")
        if not 0 < self.frame_rate_hz <= 1000:
            raise ValueError(f"frame_rate_hz must be in (0, 1000], got {self.frame_rate_hz}")
        if not 0 < self.stim_rate_hz <= 1000:
            raise ValueError(f"stim_rate_hz must be in (0, 1000], got {self.stim_rate_hz}")
        if not 0 <= self.sync_wait_s <= 1:
            raise ValueError(f"sync_wait_s must be in [0, 1], got {self.sync_wait_s}")


class FrameDecoder:
    """Frame -> (activity, reconstruction, stimulus frame reconstructed). No sockets."""

    def __init__(self, settings: DecoderSettings) -> None:
        from cortexcast.decoder.live.pixel_decoder import PixelDecoder
        from cortexcast.decoder.live.session_stats import read_session_stats

        self.rois = load_roi_set(settings.rois, settings.rois_format,
                                 cells_only=settings.rois_cells_only)
        self.pixels = PixelDecoder(resolve_model(settings.model), providers=settings.providers,
                                   threads=settings.threads,
                                   session_stats=read_session_stats(settings.session_stats))
        check_model_rois(self.pixels.card, self.rois, settings.model, settings.rois)
        self.features = feature_pipeline(settings, self.rois)
        self.motion = self.features.motion
        trained_on = self.pixels.card.extra.get("activity_kind")
        if trained_on is not None and trained_on != settings.activity:
            log.warning("model %s was trained on %r activity but the decoder feeds it %r "
                        "(set activity = %r in [decoder])", settings.model, trained_on,
                        settings.activity, trained_on)
        self.sync = SyncTracker(settings.stim_rate_hz / settings.frame_rate_hz)
        self.lag = self.pixels.card.lag
        self.use_behavior = settings.use_behavior
        self.clock = StimulusClock(settings.stim_rate_hz / settings.frame_rate_hz,
                                   max_pushes=self.pixels.window + self.lag)
        if self.clock.resampling:
            log.info("imaging at %g Hz, stimulus at %g Hz: each imaging frame's activity is fed "
                     "once per stimulus frame it covers (as in the 30 Hz-resampled training "
                     "data), one reconstruction per stimulus frame",
                     settings.frame_rate_hz, settings.stim_rate_hz)

    def __call__(self, imaging_frame: int, pixels: np.ndarray) -> Decoded:
        """Extract, decode, and name the stimulus frame reconstructed (-1 if unknown).

        Raises ROIError when the frame does not have the ROIs' shape.
        """
        activity = self.features(pixels)
        t_ext = time.monotonic_ns()
        return self.decode(imaging_frame, activity, t_ext)

    def decode(self, imaging_frame: int, activity: np.ndarray, t_extract_ns: int = 0) -> Decoded:
        """Feed one imaging frame's activity (and its behaviour, from `sync`) to the model,
        once per stimulus frame it covers; one reconstruction per push."""
        stim = self.sync.stim_at(imaging_frame)
        behavior = self.pixels.behavior_vector(
            self.sync.behavior_at(imaging_frame) if self.use_behavior else None)
        rows, hold = self.clock.rows(stim)
        outputs = []
        for k, row in enumerate(rows):
            if k < hold and self.clock.held is not None:
                frame = self.pixels.push(*self.clock.held)
            else:
                frame = self.pixels.push(activity, behavior)
            outputs.append((row - self.lag if row >= 0 else -1, frame))
        if self.clock.resampling:
            self.clock.held = (activity.copy(), behavior)
        t_inf = time.monotonic_ns()
        return Decoded(activity, outputs[-1][1], outputs[-1][0], t_extract_ns, t_inf,
                       tuple(outputs))


def feature_pipeline(settings: DecoderSettings, rois: ROISet) -> FeaturePipeline:
    """The frame -> activity pipeline ``settings`` describe, on ``rois``: what the live
    decoder runs, and what ``cortexcast export`` runs over a recorded session."""
    return FeaturePipeline(
        rois, settings.frame_rate_hz, settings.extraction,
        _motion_corrector(settings, rois.frame_shape),
        settings.deconvolution if settings.activity == "deconvolved" else None)


def _motion_corrector(settings: DecoderSettings,
                      frame_shape: tuple[int, int]) -> MotionCorrector | None:
    """The motion corrector, with its reference from the settings or else the ROIs' own: the
    suite2p ROIs' ``meanImg``, or the ``reference`` a cortexcast ROI file was saved with
    (``cortexcast rois``): the image the ROIs were drawn on."""
    m = settings.motion
    if not m.enabled:
        return None
    ref_path = m.reference
    kind = settings.rois_format if settings.rois_format != "auto" else (
        detect_format(settings.rois) if settings.rois else "")
    if not ref_path and kind == "suite2p":
        ref_path = settings.rois  # the mean image the suite2p ROIs were drawn on
    if not ref_path and kind == "cortexcast":
        from cortexcast.core.rois import load_reference_of

        if load_reference_of(settings.rois) is not None:
            ref_path = settings.rois  # the reference `cortexcast rois` drew the ROIs on
    if not ref_path:
        log.info("motion reference: the mean of the first %d frames", m.reference_frames)
        return MotionCorrector(frame_shape, m)
    return MotionCorrector(frame_shape, m, load_reference(ref_path), source=ref_path)


@dataclass(frozen=True)
class Decoded:
    activity: np.ndarray
    frame: np.ndarray
    """The newest reconstruction (of ``stim_frame``)."""
    stim_frame: int
    t_extract_ns: int
    t_infer_ns: int
    outputs: tuple[tuple[int, np.ndarray], ...] = ()
    """Every (stimulus frame, reconstruction) of this imaging frame, oldest first."""


def run_decoder(settings: DecoderSettings, *, sockets: Sockets = Sockets(),
                stop: StopSignals | None = None) -> int:
    """Decode frames from the daq until stopped (see :class:`ProcessRun`)."""
    busy_ns = BusyTimes()
    with ProcessRun("decoder", settings.stats_out, stop=stop) as run:
        run.counts.update(frames_in=0, reconstructions_out=0, bad_frames=0,
                          nonfinite_frames=0, bad_sync=0)
        sub: Subscriber | None = None
        run.stats_fn = lambda: {**run.counts,
                                "stream": sub.stats.as_dict() if sub is not None else {},
                                "busy_ms": busy_ns.percentiles_ms()}
        dec = FrameDecoder(settings)
        pub = run.own(sockets.publisher(settings.publish, "decoder", hwm=settings.hwm,
                                        what="[decoder] publish", background=True,
                                        topics=topics_of(Reconstruction, Activity)))
        if settings.wait_for:
            ok = pub.wait_for_subscribers(parse_wait_for(settings.wait_for), settings.wait_timeout_s)
            log.info("downstream %s", "ready" if ok else "NOT ready (timeout), starting anyway")
        sub = run.own(sockets.subscriber(settings.frames_from, ["frames", "sync"],
                                         hwm=settings.hwm, name="decoder"))
        log.info("decoding %s -> %s (model %s, %d neurons, window %d, lag %d)",
                 settings.frames_from, pub.address, settings.model, dec.rois.n_neurons,
                 dec.pixels.card.window, dec.lag)
        loop = DecoderLoop(dec, pub, settings, run.counts, busy_ns)
        while not run.stopping:
            msg = sub.recv(timeout_s=loop.wait_s())
            pub.heartbeat_if_due()
            loop.on_message(msg)
            pub.status.update(run.counts, drops=sub.stats.as_dict()["frames_dropped"])
    return 0


class DecoderLoop:
    """What the decoder does with each message off the wire (or a receive time-out).

    A frame waits (at most ``sync_wait_s``) for its sync unless that came first (the sim
    rig sends it first; a merged rig's sync may lag): the sync names the stimulus frame on
    screen and carries the behavior. No sockets of its own: it publishes through ``pub``.
    """

    def __init__(self, dec: FrameDecoder, pub: Publisher, settings: DecoderSettings,
                 counts: dict[str, Any], busy_ns: BusyTimes) -> None:
        self.dec, self.pub, self.settings = dec, pub, settings
        self.counts, self.busy_ns = counts, busy_ns
        self.model_name = resolve_model(settings.model).stem
        self.pending: tuple[Message, ImagingFrame, float] | None = None  # frame, deadline
        self.no_sync = False  # a frame waited in vain and no sync was ever seen: stop waiting

    def wait_s(self) -> float:
        """How long the next receive may block."""
        return 0.5 if self.pending is None else max(0.0, self.pending[2] - time.monotonic())

    def on_message(self, msg: Message | None) -> None:
        if msg is None:
            self.flush()  # its sync did not come in time: decode with extrapolated values
            return
        try:
            event = from_message(msg)
        except MessageError as exc:  # bad meta or arrays: counted, logged once, skipped
            if msg.kind == "frame":
                self.counts["frames_in"] += 1
            count_bad(self.counts, "bad_frames" if msg.kind == "frame" else "bad_sync", exc)
            return
        if isinstance(event, SyncEvent):
            self.dec.sync.add(event.imaging_frame, event.stim_frame, event.behavior or None)
            if self.pending is not None and self.dec.sync.known(self.pending[1].index):
                self.flush()
            return
        if not isinstance(event, ImagingFrame):
            return
        msg = msg.stamped("decoder.recv")
        self.flush()  # the previous frame's sync never came
        if (self.settings.sync_wait_s > 0 and (self.dec.sync.seen_any or not self.no_sync)
                and not self.dec.sync.known(event.index)):
            self.pending = (msg, event, time.monotonic() + self.settings.sync_wait_s)
            return
        self.decode(msg, event)

    def flush(self) -> None:
        if self.pending is None:
            return
        if not self.dec.sync.seen_any and not self.no_sync:
            self.no_sync = True
            log.info("no sync messages: decoding frames as they come, stimulus frames "
                     "unknown (-1) until a sync arrives")
        msg, event, _ = self.pending
        self.pending = None
        self.decode(msg, event)

    def decode(self, msg: Message, frame: ImagingFrame) -> None:
        self.counts["frames_in"] += 1
        t0 = msg.stamps[-1][1]
        try:
            out = self.dec(frame.index, frame.pixels)
        except BadFrameError as exc:  # not an image's dtype, or NaN/inf pixels: no state moved
            if exc.reason == "nonfinite":
                self.counts["nonfinite_frames"] = self.counts.get("nonfinite_frames", 0) + 1
            count_bad(self.counts, "bad_frames", exc)
            return
        except ROIError as exc:  # a frame size the ROIs do not fit
            count_bad(self.counts, "bad_frames", exc)
            return
        stamps = forwarded_stamps(msg.stamps[:-1]) + (
            msg.stamps[-1], ("decoder.extract", out.t_extract_ns),
            ("decoder.infer", out.t_infer_ns))
        # The reconstructions first: they are what the operator is waiting for. Slow imaging
        # gives several per imaging frame, one per stimulus frame, oldest first.
        for stim_frame, pixels in out.outputs or ((out.stim_frame, out.frame),):
            self.pub.publish_event(Reconstruction(stim_frame, msg.t_acq, pixels, frame.index,
                                                  self.dec.lag, self.model_name), stamps=stamps)
            self.counts["reconstructions_out"] += 1
        if self.settings.publish_activity:
            self.pub.publish_event(Activity(frame.index, msg.t_acq, out.activity), stamps=stamps)
        self.busy_ns.append(time.monotonic_ns() - t0)
