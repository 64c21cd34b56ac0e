"""The decoder process: frames in, `activity` and `reconstruction` out.

The math lives in :class:`FrameDecoder` (extraction + ONNX pixel decoder +
sync bookkeeping), a plain object; :func:`run_decoder` is the socket loop.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cortexcast.core.runtime import (
    Stop, ignore_stop_signals, install_stop_signals, percentiles_ms, write_json_atomic,
)
from cortexcast.decoder.live.extraction import ActivityExtractor, ExtractionSettings
from cortexcast.decoder.live.model_card import ModelError
from cortexcast.decoder.live.deconvolution import DeconvolutionSettings, OnlineDeconvolver
from cortexcast.decoder.live.motion import MotionCorrector, MotionSettings, load_reference
from cortexcast.decoder.live.roi_loaders import FORMATS as ROI_FORMATS, detect_format, load_roi_set
from cortexcast.core.rois import ROIError
from cortexcast.stream.message import Message, MessageError, meta_int
from cortexcast.stream.pubsub import Publisher, Subscriber, parse_wait_for

log = logging.getLogger("decoder")

MODELS_DIR = Path(__file__).resolve().parent / "models"
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
    rois: str = ""
    """ROIs: cortexcast .npz (the simulator writes the ground-truth footprints), a suite2p
    folder (plane, combined or parent) or its stat.npy, or a CaImAn .hdf5 (cnm.save)."""
    rois_format: str = "auto"
    """'auto' (from the path), 'cortexcast', 'suite2p' or 'caiman'."""
    rois_cells_only: bool = True
    """Keep only suite2p ROIs with iscell = 1 / CaImAn's accepted components (idx_components)."""
    model: str = "bundled"
    """ONNX model with its JSON card beside it, or 'bundled'."""
    session_stats: str = ""
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
    stats_out: str | None = None

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


class SyncTracker:
    """Which stimulus frame was on screen at each imaging frame, and the mouse's behaviour
    then, from `sync` messages.

    Frames whose sync has not arrived yet are extrapolated from the newest known
    pair at the stimulus/imaging rate ratio; their behaviour is the newest known
    within ``BEHAVIOR_HOLD_FRAMES`` imaging frames.
    """

    BEHAVIOR_HOLD_FRAMES = 10

    def __init__(self, stim_per_imaging: float = 1.0, keep: int = 256) -> None:
        self.ratio = stim_per_imaging
        self._map: dict[int, int] = {}
        self._keep = keep
        self._last: tuple[int, int] | None = None
        self._behavior: dict[int, dict[str, Any]] = {}
        self._last_behavior: tuple[int, dict[str, Any]] | None = None

    @property
    def seen_any(self) -> bool:
        """True once any sync has arrived (so waiting for one makes sense)."""
        return self._last is not None

    def add(self, imaging_frame: int, stim_frame: int,
            behavior: dict[str, Any] | None = None) -> None:
        self._map[imaging_frame] = stim_frame
        if self._last is None or imaging_frame >= self._last[0]:
            self._last = (imaging_frame, stim_frame)
        if behavior:
            self._behavior[imaging_frame] = behavior
            if self._last_behavior is None or imaging_frame >= self._last_behavior[0]:
                self._last_behavior = (imaging_frame, behavior)
        for table in (self._map, self._behavior):
            if len(table) > self._keep:
                for k in sorted(table)[: len(table) - self._keep]:
                    del table[k]

    def known(self, imaging_frame: int) -> bool:
        return imaging_frame in self._map

    def stim_at(self, imaging_frame: int) -> int:
        if imaging_frame in self._map:
            return self._map[imaging_frame]
        if self._last is None or self._last[1] < 0:
            return -1
        return int(round(self._last[1] + (imaging_frame - self._last[0]) * self.ratio))

    def behavior_at(self, imaging_frame: int) -> dict[str, Any] | None:
        """The behaviour dict sent with this frame's sync, else the newest recent one."""
        b = self._behavior.get(imaging_frame)
        if b is not None:
            return b
        last = self._last_behavior
        if last is not None and abs(imaging_frame - last[0]) <= self.BEHAVIOR_HOLD_FRAMES:
            return last[1]
        return None


class FrameDecoder:
    """Frame -> (activity, reconstruction, stimulus frame reconstructed). No sockets."""

    def __init__(self, settings: DecoderSettings) -> None:
        from cortexcast.decoder.offline.streaming import read_session_stats
        from cortexcast.decoder.live.pixel_decoder import PixelDecoder

        self.rois = load_roi_set(settings.rois, settings.rois_format,
                                 cells_only=settings.rois_cells_only)
        self.pixels = PixelDecoder(resolve_model(settings.model), providers=settings.providers,
                                   threads=settings.threads,
                                   session_stats=read_session_stats(settings.session_stats))
        if self.pixels.card.neurons != self.rois.n_neurons:
            raise ModelError(
                f"model {settings.model} expects {self.pixels.card.neurons} neurons but the ROI "
                f"file {settings.rois} has {self.rois.n_neurons}"
            )
        self.extract = ActivityExtractor(self.rois, settings.frame_rate_hz, settings.extraction)
        self.motion = _motion_corrector(settings, self.rois.frame_shape)
        self.deconvolve = (OnlineDeconvolver(self.rois.n_neurons, settings.frame_rate_hz,
                                             settings.deconvolution)
                           if settings.activity == "deconvolved" else None)
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
        self.rois.check_frame(pixels.shape)
        if self.motion is not None:
            pixels = self.motion(pixels)
        activity = self.extract(pixels)
        if self.deconvolve is not None:
            activity = self.deconvolve(activity)
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


class StimulusClock:
    """Which stimulus-clock rows an imaging frame's activity fills (slow imaging, resampled).

    The training data (``cortexcast simulate``, as the competition data) gives
    stimulus frame f the activity of the imaging frame during which f was on
    screen at mid-frame, and a frame no imaging frame saw holds the previous
    one. So when imaging frame i arrives, showing stimulus frame s_i, the rows
    since the last one pushed are: ``s_i - s_{i-1} - 1`` rows of frame i-1's
    activity (held), then one of frame i's. Rows are capped at ``max_pushes``
    (a gap after dropped frames); with an unknown stimulus frame,
    ``round(ratio)`` rows named -1. At ratio <= 1 every frame is one row, as
    before.
    """

    def __init__(self, stim_per_imaging: float, max_pushes: int) -> None:
        self.ratio = stim_per_imaging
        self.resampling = stim_per_imaging > 1.0 + 1e-9
        self.fallback = max(1, round(stim_per_imaging))
        self.max_pushes = max(max_pushes, 2 * math.ceil(stim_per_imaging))
        self.last_row: int | None = None
        self.held: tuple[np.ndarray, np.ndarray | None] | None = None
        """(activity, behaviour) of the previous imaging frame."""

    def rows(self, stim: int) -> tuple[list[int], int]:
        """(stimulus rows to push, oldest first; how many of them take the held frame)."""
        if not self.resampling:
            return [stim], 0
        if stim < 0:
            self.last_row = None
            return [-1] * self.fallback, self.fallback - 1
        n = 1 if self.last_row is None else min(max(stim - self.last_row, 1), self.max_pushes)
        self.last_row = stim
        return list(range(stim - n + 1, stim + 1)), n - 1


def _motion_corrector(settings: DecoderSettings,
                      frame_shape: tuple[int, int]) -> MotionCorrector | None:
    """The motion corrector, with its reference from the settings or the suite2p ROIs' meanImg."""
    m = settings.motion
    if not m.enabled:
        return None
    ref_path = m.reference
    if not ref_path and (settings.rois_format == "suite2p" or (
            settings.rois_format == "auto" and detect_format(settings.rois) == "suite2p")):
        ref_path = settings.rois  # the mean image the suite2p ROIs were drawn on
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


def run_decoder(settings: DecoderSettings) -> int:
    install_stop_signals()
    counts = {"frames_in": 0, "reconstructions_out": 0, "bad_frames": 0, "bad_sync": 0}
    busy_ns: list[int] = []
    reason = "ended"
    pub: Publisher | None = None
    sub: Subscriber | None = None
    try:
        dec = FrameDecoder(settings)
        pub = Publisher(settings.publish, "decoder", hwm=settings.hwm)
        if settings.wait_for:
            ok = pub.wait_for_subscribers(parse_wait_for(settings.wait_for), settings.wait_timeout_s)
            log.info("downstream %s", "ready" if ok else "NOT ready (timeout), starting anyway")
        sub = Subscriber(settings.frames_from, ["frames", "sync"], hwm=settings.hwm, name="decoder")
        log.info("decoding %s -> %s (model %s, %d neurons, window %d, lag %d)",
                 settings.frames_from, pub.address, settings.model, dec.rois.n_neurons,
                 dec.pixels.card.window, dec.lag)
        model_name = resolve_model(settings.model).stem
        # A frame waits (at most sync_wait_s) for its sync unless that came first (the sim
        # rig sends it first; a merged rig's sync may lag): the sync names the stimulus
        # frame on screen and carries the behaviour.
        pending: tuple[Message, int, float] | None = None  # (frame, imaging frame, deadline)
        no_sync = False  # a frame waited in vain and no sync was ever seen: stop waiting

        def flush() -> None:
            nonlocal pending, no_sync
            if pending is not None:
                if not dec.sync.seen_any and not no_sync:
                    no_sync = True
                    log.info("no sync messages: decoding frames as they come, stimulus frames "
                             "unknown (-1) until a sync arrives")
                _decode_one(dec, pub, pending[0], settings, model_name, counts, busy_ns)
                pub.status.update(counts, drops=sub.stats.as_dict()["total_dropped"])
                pending = None

        while True:
            wait = 0.5 if pending is None else max(0.0, pending[2] - time.monotonic())
            msg = sub.recv(timeout_s=wait)
            pub.heartbeat_if_due()
            if msg is None:
                flush()  # its sync did not come in time: decode with extrapolated values
                continue
            if msg.kind == "sync":
                try:
                    beh = msg.meta.get("behavior")
                    dec.sync.add(meta_int(msg, "imaging_frame"), meta_int(msg, "stim_frame", -1),
                                 beh if isinstance(beh, dict) else None)
                except MessageError as exc:
                    _count_bad(counts, "bad_sync", exc)
                if pending is not None and dec.sync.known(pending[1]):
                    flush()
                continue
            msg = msg.stamped("decoder.recv")
            flush()  # the previous frame's sync never came
            idx = msg.meta.get("imaging_frame", msg.seq)
            if (settings.sync_wait_s > 0 and (dec.sync.seen_any or not no_sync)
                    and isinstance(idx, int) and not dec.sync.known(idx)):
                pending = (msg, idx, time.monotonic() + settings.sync_wait_s)
                continue
            _decode_one(dec, pub, msg, settings, model_name, counts, busy_ns)
            pub.status.update(counts, drops=sub.stats.as_dict()["total_dropped"])
    except Stop as sig:
        reason = f"stopped by {sig}"
    finally:
        ignore_stop_signals()
        stream = sub.stats.as_dict() if sub is not None else {}
        for sock in (sub, pub):
            if sock is not None:
                sock.close()
        stats = {"process": "decoder", "reason": reason, **counts,
                 "stream": stream, "busy_ms": percentiles_ms(busy_ns)}
        log.info("%s: %s", reason, counts)
        if settings.stats_out:
            write_json_atomic(settings.stats_out, stats)
    return 0


def _count_bad(counts: dict[str, int], key: str, exc: Exception) -> None:
    counts[key] = counts.get(key, 0) + 1
    if counts[key] == 1:
        log.error("%s (skipped; further ones counted, not logged)", exc)


def _decode_one(dec: FrameDecoder, pub: Publisher, msg: Message, settings: DecoderSettings,
                model_name: str, counts: dict[str, int], busy_ns: list[int]) -> None:
    counts["frames_in"] += 1
    t0 = msg.stamps[-1][1]
    try:
        idx = meta_int(msg, "imaging_frame", msg.seq)
        if len(msg.arrays) != 1 or msg.arrays[0].ndim != 2:
            raise MessageError(f"frame {idx} has {len(msg.arrays)} arrays, expected one 2-D image")
        out = dec(idx, msg.arrays[0])
    except (MessageError, ROIError) as exc:  # bad meta, or a frame size the ROIs do not fit
        _count_bad(counts, "bad_frames", exc)
        return
    stamps = msg.stamps + (("decoder.extract", out.t_extract_ns), ("decoder.infer", out.t_infer_ns))
    # The reconstructions first: they are what the operator is waiting for. Slow imaging
    # gives several per imaging frame, one per stimulus frame, oldest first.
    for stim_frame, frame in out.outputs or ((out.stim_frame, out.frame),):
        pub.publish("reconstruction", "reconstruction", [frame], t_acq=msg.t_acq, stamps=stamps,
                    meta={"imaging_frame": idx, "stim_frame": stim_frame,
                          "lag": dec.lag, "model": model_name})
        counts["reconstructions_out"] += 1
    if settings.publish_activity:
        pub.publish("activity", "activity", [out.activity], t_acq=msg.t_acq,
                    meta={"imaging_frame": idx}, stamps=stamps)
    busy_ns.append(time.monotonic_ns() - t0)
