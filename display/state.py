"""What the display knows: the newest stimulus/reconstruction pair, counters, latency, r.

A plain object, no sockets, no clocks, no threads: the display process feeds
it decoded :class:`cortexcast.stream.message.Message` s (already stamped
``display.recv``) and reads views and summaries from it; tests call it
directly.

Pairing: stimulus frames are kept by their global index (``meta.stim_frame``)
for a while; a reconstruction names the stimulus frame it reconstructs
(``meta.stim_frame``) and is paired with it, now or as soon as that stimulus
frame arrives. The running pixel correlation is computed over the last
``correlation_window`` pairs with :func:`cortexcast.decoder.live.metric.pixel_correlation`.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from cortexcast.display.correlation import Metric, window_correlation
from cortexcast.display.latency import LatencyStats
from cortexcast.core.events import EventArrayError, Reconstruction, StimulusFrame, from_message
from cortexcast.core.message import Message, MessageError

log = logging.getLogger(__name__)

STIMULUS = "stimulus"
RECONSTRUCTION = "reconstruction"
#: Unknown topics counted by name in ``bad`` (the rest as ``"topic:other"``).
MAX_BAD_TOPICS = 16


@dataclass(frozen=True)
class View:
    """One thing to show: a stimulus frame and the reconstruction next to it.

    ``stimulus`` is uint8 (H, W); ``reconstruction`` float32 (H, W) on the
    0..255 scale; either may be None (nothing yet, or the decoder went quiet).
    ``paired`` is True when the reconstruction is of exactly this stimulus frame.
    """

    version: int
    stimulus: np.ndarray | None
    stim_frame: int | None
    reconstruction: np.ndarray | None
    recon_stim_frame: int | None
    imaging_frame: int | None
    lag: int | None
    paired: bool


class DisplayState:
    """Ingests stimulus and reconstruction messages; see the module docstring."""

    def __init__(
        self,
        correlation_window: int = 300,
        *,
        mask: np.ndarray | None = None,
        stimulus_buffer: int = 900,
        pending_buffer: int = 90,
        recon_timeout_frames: int = 30,
        latency_samples: int = 9000,
        metric: Metric | None = None,
    ) -> None:
        if correlation_window < 2:
            raise ValueError(f"correlation_window must be >= 2, got {correlation_window}")
        if mask is not None and (mask.ndim != 2 or mask.dtype != bool):
            raise ValueError(f"mask must be a 2-D bool array, got {mask.dtype} {mask.shape}")
        self.correlation_window = correlation_window
        self.mask = mask
        self.stimulus_buffer = stimulus_buffer
        self.pending_buffer = pending_buffer
        self.recon_timeout_frames = recon_timeout_frames
        self.latency = LatencyStats(latency_samples)
        self._metric = metric
        self.received: Counter[str] = Counter()
        self.bad: Counter[str] = Counter()
        self.paired = 0
        self.unpaired = 0  # reconstructions whose stimulus frame never came (or is -1)
        self.shown = 0
        self.skipped = 0
        self.stream_stats: dict[str, Any] = {}
        self.producers: dict[str, float] = {}
        self.correlation: float | None = None
        self.correlation_frames = 0
        self.correlation_error: str | None = None
        self._stimuli: OrderedDict[int, np.ndarray] = OrderedDict()
        self._pending: OrderedDict[int, Reconstruction] = OrderedDict()
        self._newest_stim: tuple[int, np.ndarray] | None = None
        self._stims_since_recon = 0
        self._view: View | None = None
        self._version = 0
        self._taken = 0
        self._reset_window(None)

    # -- ingest ------------------------------------------------------------
    def ingest(self, msg: Message) -> None:
        """Take one decoded message; unknown topics and malformed ones are counted as bad."""
        if msg.topic not in (STIMULUS, RECONSTRUCTION):
            # topics come off the wire (a SUB matches by prefix): a few by name, then pooled
            key = f"topic:{msg.topic}"
            if key not in self.bad and (len(msg.topic) > 64 or sum(
                    k.startswith("topic:") for k in self.bad) >= MAX_BAD_TOPICS):
                key = "topic:other"
            self.bad[key] += 1
            return
        try:
            event = from_message(msg)
        except EventArrayError:
            self.bad[f"{msg.topic}_array"] += 1
            return
        except MessageError:
            self.bad[f"{msg.topic}_meta"] += 1
            return
        if isinstance(event, StimulusFrame):
            self._ingest_stimulus(event)
        elif isinstance(event, Reconstruction):
            self.latency.add(msg.stamps)
            self._ingest_reconstruction(event)
        else:
            self.bad[f"{msg.topic}_kind"] += 1

    def _ingest_stimulus(self, stim: StimulusFrame) -> None:
        index, pixels = stim.index, stim.pixels
        self.received[STIMULUS] += 1
        self._stimuli[index] = pixels
        self._stimuli.move_to_end(index)
        while len(self._stimuli) > self.stimulus_buffer:
            self._stimuli.popitem(last=False)
        self._newest_stim = (index, pixels)
        self._stims_since_recon += 1
        waiting = self._pending.pop(index, None)
        if waiting is not None:
            self._pair(waiting, pixels)
        elif self._view is None or self._view.reconstruction is None:
            self._set_view(pixels, index, None)  # no reconstruction (yet): live stimulus
        elif self._stims_since_recon > self.recon_timeout_frames:
            self._set_view(pixels, index, None)  # decoder went quiet: back to live

    def _ingest_reconstruction(self, recon: Reconstruction) -> None:
        index = recon.stim_frame
        self.received[RECONSTRUCTION] += 1
        self._stims_since_recon = 0
        stimulus = self._stimuli.get(index) if index >= 0 else None
        if stimulus is not None:
            self._pair(recon, stimulus)
            return
        if index >= 0:
            self._pending[index] = recon
            while len(self._pending) > self.pending_buffer:
                self._pending.popitem(last=False)
                self.unpaired += 1
        else:
            self.unpaired += 1
        # Show it now, next to the live stimulus, until (if ever) its own arrives.
        stim = self._newest_stim
        self._set_view(stim[1] if stim else None, stim[0] if stim else None, recon)

    def _pair(self, recon: Reconstruction, stimulus: np.ndarray) -> None:
        if recon.pixels.shape != stimulus.shape:
            self.bad["shape_mismatch"] += 1
            return
        self.paired += 1
        self._push_window(recon.pixels, stimulus)
        self._set_view(stimulus, recon.stim_frame, recon, paired=True)

    def _set_view(self, stimulus: np.ndarray | None, stim_frame: int | None,
                  recon: Reconstruction | None, paired: bool = False) -> None:
        self._version += 1
        self._view = View(
            version=self._version,
            stimulus=stimulus,
            stim_frame=stim_frame,
            reconstruction=recon.pixels if recon is not None else None,
            recon_stim_frame=recon.stim_frame if recon is not None else None,
            imaging_frame=recon.imaging_frame if recon is not None else None,
            lag=recon.lag if recon is not None else None,
            paired=paired,
        )

    # -- what to show ------------------------------------------------------
    @property
    def view(self) -> View | None:
        """The newest view (whether or not it was taken)."""
        return self._view

    def take_view(self) -> View | None:
        """The newest view if it changed since the last take (counts shown/skipped), else None."""
        if self._view is None or self._view.version == self._taken:
            return None
        self.skipped += self._view.version - self._taken - 1
        self._taken = self._view.version
        self.shown += 1
        return self._view

    def set_stream_stats(self, stats: dict[str, Any],
                         producers: dict[str, float] | None = None) -> None:
        """Subscriber counters (``StreamStats.as_dict()``) and producers' heartbeat ages (s)."""
        self.stream_stats = stats
        if producers is not None:
            self.producers = producers

    # -- running correlation -----------------------------------------------
    def _reset_window(self, shape: tuple[int, ...] | None) -> None:
        n = self.correlation_window
        shape = shape or (0, 0)
        self._recons = np.zeros((n, *shape), np.float32)
        self._targets = np.zeros((n, *shape), np.float32)
        self._window_n = 0
        self._window_i = 0

    def _push_window(self, recon: np.ndarray, stimulus: np.ndarray) -> None:
        if self._recons.shape[1:] != recon.shape:
            self._reset_window(recon.shape)
        self._recons[self._window_i] = recon
        self._targets[self._window_i] = stimulus
        self._window_i = (self._window_i + 1) % self.correlation_window
        self._window_n = min(self._window_n + 1, self.correlation_window)

    def paired_window(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the last paired (recons, targets), oldest first, each (T, H, W) float32."""
        n, i = self._window_n, self._window_i
        if n < self.correlation_window:
            return self._recons[:n].copy(), self._targets[:n].copy()
        order = np.r_[i:n, 0:i]
        return self._recons[order], self._targets[order]

    def correlation_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """The evaluation mask: the one given, else every pixel."""
        return self.mask if self.mask is not None else np.ones(shape, bool)

    def compute_correlation(self, recons: np.ndarray, targets: np.ndarray) -> float | None:
        """Pixel correlation of a window (pure; no state changes). None if not computable."""
        return window_correlation(recons, targets, self.correlation_mask(recons.shape[1:]),
                                  self._metric)

    def set_correlation(self, r: float | None, frames: int, error: str | None = None) -> None:
        self.correlation, self.correlation_frames, self.correlation_error = r, frames, error

    def update_correlation(self) -> float | None:
        """Recompute the running correlation now (single-threaded use and tests)."""
        recons, targets = self.paired_window()
        try:
            r = self.compute_correlation(recons, targets)
        except (ImportError, ValueError) as exc:
            self.set_correlation(None, len(recons), f"{type(exc).__name__}: {exc}")
            return None
        self.set_correlation(r, len(recons))
        return r

    # -- reporting ---------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counters, latency percentiles and correlation, JSON-ready."""
        stream = self.stream_stats
        view = self._view
        return {
            "received": {t: self.received[t] for t in (STIMULUS, RECONSTRUCTION)},
            "dropped": stream.get("total_dropped", 0),
            "dropped_by_stream": stream.get("dropped", {}),
            "bad": {**stream.get("bad", {}), **self.bad},
            "paired": self.paired,
            "unpaired": self.unpaired,
            "shown": self.shown,
            "skipped": self.skipped,
            "last": None if view is None else {
                "stim_frame": view.stim_frame,
                "recon_stim_frame": view.recon_stim_frame,
                "imaging_frame": view.imaging_frame,
                "lag": view.lag,
                "paired": view.paired,
            },
            "latency_ms": self.latency.summary(),
            "end_to_end_span": self.latency.end_to_end_span,
            "correlation": None if self.correlation is None else round(self.correlation, 4),
            "correlation_frames": self.correlation_frames,
            "correlation_window": self.correlation_window,
            "correlation_error": self.correlation_error,
            "producers": {k: round(v, 3) for k, v in self.producers.items()},
        }
