"""Eye-tracker readings from a Lab Streaming Layer stream (``[daq.behavior] mode = "lsl"``).

The stream is found by ``lsl_name`` / ``lsl_type`` / ``lsl_source_id``; its channels are
picked by index or label (``channels``). Sample times: the sample's LSL timestamp plus
``inlet.time_correction()`` (the sender's clock -> this host's LSL clock), then this host's
LSL clock -> ``time.monotonic()`` (:class:`~cortexcast.daq.behavior_source.alignment.ClockMap`).

A stream that vanishes (its program closed, the network gone) never stops the daq: syncs are
marked stale meanwhile. A stream with a ``source_id`` is recovered by liblsl itself; one
without is looked for again by the same name/type. A stream that is not there at the start
is waited for ``resolve_timeout_s`` and then looked for in the background.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from cortexcast.daq.behavior_source.alignment import BehaviorFeed, ClockMap
from cortexcast.daq.behavior_source.settings import BehaviorSettings
from cortexcast.daq.source import AcquisitionError
from cortexcast.stream.lsl_outlets import require_pylsl

log = logging.getLogger("cortexcast.daq.behavior")

MAX_SKEW_S = 10.0
"""A sample time further than this from now is a clock error: its receive time is used."""
TC_EVERY_S = 1.0
"""How often the inlet's time correction is read again (liblsl updates it every ~5 s)."""
RESOLVE_S = 0.5
"""Each background look for a missing stream waits this long (a stop is seen in between)."""
RETRY_S = 5.0
"""After finding a stream that does not fit ``channels``, look again this much later."""


class StreamMismatch(AcquisitionError):
    """The stream found does not have what ``channels`` names (the message says what)."""


def channel_labels(info: Any) -> list[str]:
    """The stream's channel labels from its description ("" where none)."""
    labels: list[str] = []
    ch = info.desc().child("channels").child("channel")
    for _ in range(info.channel_count()):
        labels.append(ch.child_value("label") if not ch.empty() else "")
        ch = ch.next_sibling()
    return labels


class LslBehaviorSource(BehaviorFeed):
    """Readings from an LSL inlet, timed on this host's monotonic clock."""

    def __init__(self, settings: BehaviorSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.lsl = require_pylsl()
        self.clockmap = ClockMap(self.lsl.local_clock, self._monotonic)
        self._inlet: Any = None
        self._index: dict[str, int] = {}
        self._reading = False
        self._tc = 0.0
        self._tc_at = -math.inf
        self.connects = self.lost = self.clock_bad = 0
        self._mismatch_logged = False
        self._wake = threading.Event()  # set by close(): ends a wait before a retry

    @property
    def predicate(self) -> str:
        return self.s.lsl_predicate()

    @property
    def reading(self) -> bool:
        """A thread is reading the inlet now."""
        return self._reading

    def describe(self) -> str:
        return f"LSL stream [{self.predicate}]"

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update({"behavior_connected": int(self._inlet is not None),
                    "behavior_connects": self.connects, "behavior_lost": self.lost,
                    "behavior_clock_bad": self.clock_bad,
                    "behavior_clock_offset_s": self._tc})
        return out

    def __enter__(self) -> LslBehaviorSource:
        self._closed = False
        self._wake.clear()
        if not self._connect(self.s.resolve_timeout_s, strict=True):
            log.warning("behaviour: no %s found within %g s; starting without it (syncs marked "
                        "stale) and looking for it in the background. Check that the eye "
                        "tracker publishes it and [daq.behavior] lsl_name / lsl_type / "
                        "lsl_source_id.", self.describe(), self.s.resolve_timeout_s)
        return self

    def _connect(self, timeout: float, strict: bool = False) -> bool:
        """Resolve the stream and open an inlet; False when it is not there (yet)."""
        found = self.lsl.resolve_bypred(self.predicate, 1, timeout)
        if not found:
            return False
        inlet = self.lsl.StreamInlet(found[0], max_buflen=2, recover=True)
        try:
            info = inlet.info(max(timeout, 1.0))
            self._index = self._channel_index(info)
            inlet.open_stream(max(timeout, 1.0))
            try:  # the first estimate takes ~0.6 s; later reads are cached by liblsl
                self._tc = float(inlet.time_correction(timeout=max(timeout, 1.0)))
                self._tc_at = self._monotonic()
            except self.lsl.util.TimeoutError:
                self._tc_at = -math.inf  # stays as it was; read again with the samples
        except (StreamMismatch, self.lsl.util.TimeoutError, self.lsl.util.LostError) as exc:
            inlet.close_stream()
            if strict and isinstance(exc, StreamMismatch):
                raise
            if not self._mismatch_logged:
                self._mismatch_logged = True
                log.error("behaviour: cannot use %s: %s (still looking)", self.describe(), exc)
            if not strict:
                self._wake.wait(RETRY_S)  # not at once again: it is there, just unusable
            return False
        self._inlet = inlet
        self.connects += 1
        self._mismatch_logged = False
        log.info("behaviour: reading %s (%s on %s, %d channels: %s)", self.describe(),
                 info.name(), info.hostname(), info.channel_count(),
                 ", ".join(f"{k}<-{v}" for k, v in self._index.items()))
        return True

    def _channel_index(self, info: Any) -> dict[str, int]:
        n = info.channel_count()
        if info.channel_format() in (self.lsl.cf_string, getattr(self.lsl, "cf_undefined", -1)):
            raise StreamMismatch(f"{self.describe()} carries strings, not numbers; publish the "
                                 "eye tracker's readings as a float stream")
        labels = channel_labels(info)
        out: dict[str, int] = {}
        for channel, sel in self.mapping.items():
            if isinstance(sel, int):
                if sel >= n:
                    raise StreamMismatch(f"[daq.behavior] channels.{channel} = {sel}, but "
                                         f"{self.describe()} has {n} channel(s) (0..{n - 1})")
                out[channel] = sel
            elif sel in labels:
                out[channel] = labels.index(sel)
            else:
                raise StreamMismatch(f"[daq.behavior] channels.{channel} = {sel!r} is not a "
                                     f"channel label of {self.describe()} (labels: {labels})")
        return out

    def close(self) -> None:
        """Stop reading (any thread: the inlet is closed by the reading thread within
        ``poll_s``, or here when nothing reads it)."""
        self._closed = True
        self._wake.set()
        if not self._reading:
            self._drop_inlet()

    def _drop_inlet(self) -> None:
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            inlet.close_stream()

    def _read(self) -> None:
        lost_error = self.lsl.util.LostError
        self._reading = True
        try:
            while not self._closed:
                if self._inlet is None:
                    self._connect(RESOLVE_S)  # logs when it connects
                    continue
                try:
                    sample, ts = self._inlet.pull_sample(timeout=self.s.poll_s)
                    if sample is None:
                        continue
                    chunk, stamps = self._inlet.pull_chunk(timeout=0.0)
                    tc = self._time_correction()
                except lost_error:
                    self.lost += 1
                    log.warning("behaviour: %s lost (its program closed or the network is "
                                "down, %d time(s)); looking for it again, syncs are marked stale "
                                "meanwhile", self.describe(), self.lost)
                    self._drop_inlet()
                    continue
                self._store([sample, *chunk], [ts, *stamps], tc)
        finally:
            self._reading = False
            if self._closed:
                self._drop_inlet()

    def _time_correction(self) -> float:
        now = self._monotonic()
        if now - self._tc_at > TC_EVERY_S:
            try:
                self._tc = float(self._inlet.time_correction(timeout=self.s.poll_s))
                self._tc_at = now
            except self.lsl.util.TimeoutError:
                pass  # keep the last estimate; try again on the next sample
        return self._tc

    def _store(self, samples: list[Any], stamps: list[float], tc: float) -> None:
        now = self._monotonic()
        offset = self.clockmap.offset()
        for sample, ts in zip(samples, stamps):
            try:
                raw = {ch: sample[i] for ch, i in self._index.items()}
            except (IndexError, TypeError) as exc:
                self.count_bad("sample", exc)
                continue
            values = self.convert(raw)
            if values is None:
                continue
            t = ts + tc + offset
            if not math.isfinite(t) or abs(t - now) > MAX_SKEW_S:
                self.clock_bad += 1
                if self.clock_bad == 1:
                    log.warning("behaviour: %s stamps samples %.1f s from now: not LSL's clock "
                                "(does the sender push its own timestamps?); using receive "
                                "times instead (counted as behavior_clock_bad)",
                                self.describe(), t - now)
                t = now
            self.add_sample(t, values)
