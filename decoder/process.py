"""The decoder process: frames in, `activity` and `reconstruction` out.

The math lives in :class:`FrameDecoder` (extraction + ONNX pixel decoder +
sync bookkeeping), a plain object; :func:`run_decoder` is the socket loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cortexcast.runtime import (
    Stop, ignore_stop_signals, install_stop_signals, percentiles_ms, write_json_atomic,
)
from decoder.extraction import ActivityExtractor, ExtractionSettings
from decoder.model_card import ModelError
from decoder.rois import ROIError, load_rois
from stream.message import Message, MessageError, meta_int
from stream.pubsub import Publisher, Subscriber, parse_wait_for

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
    """ROI file (cortexcast .npz; the simulator writes the ground-truth footprints)."""
    model: str = "bundled"
    """ONNX model with its JSON card beside it, or 'bundled'."""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    """onnxruntime execution providers, in order of preference."""
    threads: int = 1
    """onnxruntime intra-op threads."""
    frame_rate_hz: float = 30.0
    """Imaging rate (Hz); sets the baseline time constants of the extraction."""
    stim_rate_hz: float = 30.0
    """Stimulus (output) frame rate (Hz): the clock reconstructions are named on."""
    extraction: ExtractionSettings = field(default_factory=ExtractionSettings)
    publish_activity: bool = True
    """Also publish the ΔF/F vector of every frame on `activity`."""
    hwm: int = 200
    """Receive/send queue length (messages)."""
    wait_for: tuple[str, ...] = ()
    """Own topics that must have a subscriber before the decoder subscribes to the daq."""
    wait_timeout_s: float = 30.0
    stats_out: str | None = None

    def __post_init__(self) -> None:
        if not self.rois:
            raise ValueError("'rois' is required: the ROI file that matches the imaging frames")
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        if not 0 < self.frame_rate_hz <= 1000:
            raise ValueError(f"frame_rate_hz must be in (0, 1000], got {self.frame_rate_hz}")
        if not 0 < self.stim_rate_hz <= 1000:
            raise ValueError(f"stim_rate_hz must be in (0, 1000], got {self.stim_rate_hz}")


class SyncTracker:
    """Which stimulus frame was on screen at each imaging frame, from `sync` messages.

    Frames whose sync has not arrived yet are extrapolated from the newest known
    pair at the stimulus/imaging rate ratio.
    """

    def __init__(self, stim_per_imaging: float = 1.0, keep: int = 256) -> None:
        self.ratio = stim_per_imaging
        self._map: dict[int, int] = {}
        self._keep = keep
        self._last: tuple[int, int] | None = None

    def add(self, imaging_frame: int, stim_frame: int) -> None:
        self._map[imaging_frame] = stim_frame
        if self._last is None or imaging_frame >= self._last[0]:
            self._last = (imaging_frame, stim_frame)
        if len(self._map) > self._keep:
            for k in sorted(self._map)[: len(self._map) - self._keep]:
                del self._map[k]

    def stim_at(self, imaging_frame: int) -> int:
        if imaging_frame in self._map:
            return self._map[imaging_frame]
        if self._last is None or self._last[1] < 0:
            return -1
        return int(round(self._last[1] + (imaging_frame - self._last[0]) * self.ratio))


class FrameDecoder:
    """Frame -> (activity, reconstruction, stimulus frame reconstructed). No sockets."""

    def __init__(self, settings: DecoderSettings) -> None:
        from decoder.pixel_decoder import PixelDecoder

        self.rois = load_rois(settings.rois)
        self.pixels = PixelDecoder(resolve_model(settings.model), providers=settings.providers,
                                   threads=settings.threads)
        if self.pixels.card.neurons != self.rois.n_neurons:
            raise ModelError(
                f"model {settings.model} expects {self.pixels.card.neurons} neurons but the ROI "
                f"file {settings.rois} has {self.rois.n_neurons}"
            )
        self.extract = ActivityExtractor(self.rois, settings.frame_rate_hz, settings.extraction)
        self.sync = SyncTracker(settings.stim_rate_hz / settings.frame_rate_hz)
        if settings.stim_rate_hz != settings.frame_rate_hz:
            # Models today take one activity vector per stimulus frame (the dataset's
            # responses are on the stimulus clock); resampling slower imaging onto it is
            # the next step (see docs/architecture.md, "Seams").
            log.warning("imaging at %g Hz, stimulus at %g Hz: reconstructions are named on the "
                        "stimulus clock, but the model still sees one vector per imaging frame",
                        settings.frame_rate_hz, settings.stim_rate_hz)
        self.lag = self.pixels.card.lag

    def __call__(self, imaging_frame: int, pixels: np.ndarray) -> Decoded:
        """Extract, decode, and name the stimulus frame reconstructed (-1 if unknown).

        Raises ROIError when the frame does not have the ROIs' shape.
        """
        activity = self.extract(pixels)
        t_ext = time.monotonic_ns()
        frame = self.pixels.push(activity)
        t_inf = time.monotonic_ns()
        stim = self.sync.stim_at(imaging_frame)
        return Decoded(activity, frame, stim - self.lag if stim >= 0 else -1, t_ext, t_inf)


@dataclass(frozen=True)
class Decoded:
    activity: np.ndarray
    frame: np.ndarray
    stim_frame: int
    t_extract_ns: int
    t_infer_ns: int


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
        while True:
            msg = sub.recv(timeout_s=0.5)
            pub.heartbeat_if_due()
            if msg is None:
                continue
            if msg.kind == "sync":
                try:
                    dec.sync.add(meta_int(msg, "imaging_frame"), meta_int(msg, "stim_frame", -1))
                except MessageError as exc:
                    _count_bad(counts, "bad_sync", exc)
                continue
            msg = msg.stamped("decoder.recv")
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
    # The reconstruction first: it is what the operator is waiting for.
    pub.publish("reconstruction", "reconstruction", [out.frame], t_acq=msg.t_acq, stamps=stamps,
                meta={"imaging_frame": idx, "stim_frame": out.stim_frame,
                      "lag": dec.lag, "model": model_name})
    if settings.publish_activity:
        pub.publish("activity", "activity", [out.activity], t_acq=msg.t_acq,
                    meta={"imaging_frame": idx}, stamps=stamps)
    counts["reconstructions_out"] += 1
    busy_ns.append(time.monotonic_ns() - t0)
