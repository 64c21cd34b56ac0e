"""The ``replay`` acquisition backend: a recording played back as daq events.

A recording of the ``frames`` / ``sync`` / ``stimulus`` topics (made with
``cortexcast record``) turns back into the events a live source yields, mapped
as in the topic table of docs/architecture.md:

``frame`` -> :class:`ImagingFrame`, ``sync`` -> :class:`SyncEvent`, ``stimulus`` ->
:class:`StimulusFrame`, by the one codec, :func:`cortexcast.core.events.from_message`.

Paced, it yields each event at its recorded time (relative, scaled by
``speed``, absolute deadlines: no drift); unpaced, as fast as the consumer
takes them. With ``loop`` it starts again at the end, shifting frame indices
and times so the stream stays monotonic, like a sim that runs on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from cortexcast.core.events import Event, ImagingFrame, StimulusFrame, SyncEvent, from_message
from cortexcast.core.message import MessageError

from cortexcast.daq.source import AcquisitionError, AcquisitionSource
from cortexcast.stream.message import Message
from cortexcast.stream.recording import RecordingError, RecordingReader
from cortexcast.core.pacing import Pacer
from cortexcast.stream.replay import (
    Clock,
    ReplaySettings,
    check_damage,
    loop_period,
    read_or_skip,
    timeline,
)

log = logging.getLogger(__name__)

TOPICS = ("frames", "sync", "stimulus")


def daq_replay(replay: ReplaySettings, recording: str | None = None,
               paced: bool = True) -> ReplaySettings:
    """``[daq.replay]`` with the ``[daq]`` shorthand folded in: ``recording`` (when set)
    names the file, ``replay_paced = false`` means ``fast``."""
    return dataclasses.replace(replay, recording=recording or replay.recording,
                               fast=replay.fast or not paced)


def message_to_event(msg: Message) -> Event | None:
    """The source event a recorded message stands for (:func:`from_message`); None for the
    kinds a source does not yield (activity, reconstructions, ...). Raises MessageError when
    a message lacks what its kind needs."""
    if msg.kind not in ("frame", "sync", "stimulus"):
        return None
    return from_message(msg)  # type: ignore[return-value]


def _shifted(event: Event, frames: int, stims: int, dt: float) -> Event:
    """``event`` moved on by ``frames`` imaging frames, ``stims`` stimulus frames, ``dt`` s."""
    if isinstance(event, ImagingFrame):
        return dataclasses.replace(event, index=event.index + frames, t=event.t + dt)
    if isinstance(event, StimulusFrame):
        return dataclasses.replace(event, index=event.index + stims, t=event.t + dt)
    return dataclasses.replace(
        event, imaging_frame=event.imaging_frame + frames, t=event.t + dt,
        stim_frame=event.stim_frame + stims if event.stim_frame >= 0 else -1,
        t_flip=None if event.t_flip is None else event.t_flip + dt)


class ReplaySource(AcquisitionSource):
    """An :class:`~cortexcast.daq.source.AcquisitionSource` that plays a recording back.

    ``monotonic``/``sleep`` are injectable for tests. Messages that do not map
    to an event are skipped and counted in ``skipped``; damaged records (and spans a
    scan skipped) are logged once and counted in ``damaged``, or with ``strict`` end
    :meth:`events` with AcquisitionError. With ``loop``, the
    first of ``topics`` sets the rhythm across the seam (one frame interval).
    """

    def __init__(self, recording: str | Path, *, paced: bool = True, speed: float = 1.0,
                 clock: Clock = "recv", loop: bool = False, topics: Sequence[str] = TOPICS,
                 strict: bool = False,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.path = Path(recording)
        self.paced, self.speed, self.clock, self.loop = paced, speed, clock, loop
        self.topics = tuple(topics)
        self.strict = strict
        self._monotonic, self._sleep = monotonic, sleep
        self._reader: RecordingReader | None = None
        self._closed = False
        self.skipped = 0
        self.yielded = 0
        self.damaged = 0
        self._damaged_records: set[int] = set()

    @classmethod
    def from_settings(cls, settings: ReplaySettings, **kwargs: object) -> ReplaySource:
        """Build one from the replay settings (``kwargs`` pass clock/sleep on); its topics
        default to the daq's (frames, sync, stimulus)."""
        return cls(settings.recording, paced=not settings.fast, speed=settings.speed,
                   clock=settings.clock, loop=settings.loop, topics=settings.topics or TOPICS,
                   strict=settings.strict, **kwargs)  # type: ignore[arg-type]

    def open(self) -> RecordingReader:
        """Open the recording (``__enter__`` does); AcquisitionError if it cannot be read."""
        if self._reader is None:
            try:
                self._reader = RecordingReader(self.path)
                spans = check_damage(self._reader, self.strict)
            except RecordingError as exc:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
                raise AcquisitionError(f"replay source: {exc}") from exc
            self.damaged = spans + len(self._damaged_records)
            self._closed = False
        return self._reader

    def stop(self) -> None:
        """End :meth:`events` before its next event (any thread; the file stays open)."""
        self._closed = True

    def close(self) -> None:
        """Stop :meth:`events` and close the recording (idempotent)."""
        self._closed = True
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> ReplaySource:
        self.open()
        return self

    def events(self) -> Iterator[Event]:
        """Yield the recording's events in recorded order, until its end or :meth:`close`."""
        reader = self.open()
        indices = reader.select(self.topics)
        t = timeline(reader, indices, self.clock)
        rhythm = reader.select(self.topics[:1])  # loop at the imaging rhythm (frames)
        rhythm = rhythm if len(rhythm) > 1 else indices
        period = loop_period(timeline(reader, rhythm, self.clock))
        t_acq_period = loop_period(timeline(reader, rhythm, "t_acq"))
        pacer = Pacer(self.speed if self.paced else None, clock=self._monotonic,
                      sleep=self._sleep, should_stop=lambda: self._closed)
        frames = np.array([np.inf, -np.inf])  # min and max imaging frame seen (first pass)
        stims = np.array([np.inf, -np.inf])
        n_pass = 0
        pacer.start()
        while len(indices) and not self._closed:
            for i, t_i in zip(indices, t, strict=True):
                if self._closed:  # closed between two events
                    return
                event = self._event(reader, int(i))
                if event is None:
                    continue
                if n_pass == 0:
                    _track(event, frames, stims)
                else:
                    event = _shifted(event, n_pass * _span(frames), n_pass * _span(stims),
                                     n_pass * t_acq_period)
                if not pacer.wait(float(t_i) + n_pass * period):
                    return
                self.yielded += 1
                yield event
            n_pass += 1
            if not self.loop:
                return

    def _event(self, reader: RecordingReader, i: int) -> Event | None:
        try:
            msg = read_or_skip(reader, i, self.strict, self._damaged_records)
        except RecordingError as exc:
            raise AcquisitionError(f"replay source: {exc}") from exc
        if msg is None:
            self.damaged = len(reader.damaged_spans) + len(self._damaged_records)
            return None
        try:
            return message_to_event(msg)
        except MessageError as exc:
            if not self.skipped:
                log.warning("%s: skipping a %s message that maps to no event (%r); further ones "
                            "are counted, not logged", self.path, msg.kind, exc)
            self.skipped += 1
            return None


def _track(event: Event, frames: np.ndarray, stims: np.ndarray) -> None:
    """Widen the [min, max] ranges of imaging and stimulus frame indices by ``event``'s."""
    if isinstance(event, ImagingFrame):
        f, s = event.index, -1
    elif isinstance(event, SyncEvent):
        f, s = event.imaging_frame, event.stim_frame
    else:
        f, s = -1, event.index
    if f >= 0:
        frames[:] = min(frames[0], f), max(frames[1], f)
    if s >= 0:
        stims[:] = min(stims[0], s), max(stims[1], s)


def _span(r: np.ndarray) -> int:
    """Number of indices in the range [min, max] (0 if nothing was seen)."""
    return int(r[1] - r[0] + 1) if np.isfinite(r).all() else 0
