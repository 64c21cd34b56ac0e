"""A frame source merged with sync sources (NI, serial, stimulus identity) into one stream.

Each source runs in its own thread and puts its events on one bounded queue without ever
waiting: when the queue is full (the consumer stalled) the event is dropped and counted, so
no source's acquisition is held up. :meth:`MergedSource.events` yields from the queue until
the frame source ends or :meth:`close`; a sync source that fails ends the stream with its
error (sources recover from what they can recover from themselves: an unplugged serial
device, a DAQ buffer overflow).

What comes from where: when a sync source ("ni" / "serial") is configured, the frame
source's own SyncEvents are dropped (they are the simulator's or a recording's, not this
rig's); with "stimulus", its StimulusFrames likewise. Sync events carry imaging-frame numbers
from pulse counts (``first_frame`` / ``numbering`` in each source's settings); the merger
compares them with the frame source's frame numbers and reports the offset and any sync that
lies far from the frames (``sync_unmatched``), which means the numbering is misconfigured.

A behaviour source ("behavior", an eye tracker) yields no events of its own: it never ends
until closed, and every SyncEvent leaving here (the frame source's or a sync source's) gets
the eye channels of its latest sample at or before the sync's arrival here, or
``behavior_stale = 1.0`` when there is none within ``stale_s``
(:meth:`cortexcast.daq.behavior_source.BehaviorFeed.enrich`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any, Iterator, Mapping

from cortexcast.core.events import Event, ImagingFrame, StimulusFrame, SyncEvent

from cortexcast.daq.behavior_source.alignment import BehaviorFeed
from cortexcast.daq.source import AcquisitionError, AcquisitionSource

log = logging.getLogger(__name__)
_END = object()


class MergedSource(AcquisitionSource):
    """An :class:`AcquisitionSource` of a frame source plus named sync sources."""

    def __init__(self, frames: AcquisitionSource, syncs: Mapping[str, AcquisitionSource], *,
                 queue_size: int = 2048, match_tolerance: int = 30,
                 frame_stop_timeout_s: float = 2.0, drain_grace_s: float = 0.2) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.frames = frames
        self.syncs = dict(syncs)
        self.replace_sync = bool({"ni", "serial"} & set(self.syncs))
        self.replace_stimulus = "stimulus" in self.syncs
        self.feeds = [s for s in self.syncs.values() if isinstance(s, BehaviorFeed)]
        self.match_tolerance = match_tolerance
        self._queue: queue.Queue[tuple[str, Any, float]] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._frames_entered = False
        self.frame_stop_timeout_s = frame_stop_timeout_s
        self.drain_grace_s = drain_grace_s
        self._stack: contextlib.ExitStack | None = None
        self.dropped: dict[str, int] = {}
        self.replaced = 0
        self._last_frame: int | None = None
        self.sync_offset: int | None = None
        self.unmatched = 0

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for src in (self.frames, *self.syncs.values()):
            out.update(src.status())
        out.update({"merge_dropped": sum(self.dropped.values()), "merge_replaced": self.replaced,
                    "sync_offset": self.sync_offset, "sync_unmatched": self.unmatched})
        return out

    def __enter__(self) -> MergedSource:
        with contextlib.ExitStack() as stack:
            for src in self.syncs.values():  # sync first: a missing device fails fast, and
                stack.enter_context(src)     # the sync lines are read before imaging starts
            self.frames.__enter__()
            self._frames_entered = True
            self._stack = stack.pop_all()
        self._stop.clear()
        return self

    def close(self) -> None:
        """Stop every source and its thread (idempotent).

        Sync sources are closed from here (theirs is a thread-safe close). The frame source
        is not: it may hold sockets that only its own thread may touch (ZeroMQ), so its
        thread stops at its next event and the source is exited once that thread is gone;
        a frame source that stays silent (no imaging) for ``frame_stop_timeout_s`` is left
        to the end of the process.
        """
        self._stop.set()
        for src in self.syncs.values():
            try:
                src.close()
            except Exception:  # noqa: BLE001 - closing the others matters more
                log.exception("closing %s failed", type(src).__name__)
        self.frames.stop()  # a thread-safe request
        for name, th in self._threads.items():
            th.join(timeout=self.frame_stop_timeout_s if name == "frames" else 5.0)
        frames_busy = "frames" in self._threads and self._threads["frames"].is_alive()
        self._threads.clear()
        if self._frames_entered and not frames_busy:
            self._frames_entered = False
            self.frames.__exit__(None, None, None)
        elif frames_busy:
            log.warning("the frame source did not stop within %g s (no frames coming?): "
                        "leaving it to the end of the process", self.frame_stop_timeout_s)
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def _pump(self, name: str, src: AcquisitionSource) -> None:
        """Thread body: the source's events onto the queue, never waiting for room."""
        gen = src.events()
        try:
            for ev in gen:
                if self._stop.is_set():
                    break
                self._put(name, ev)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self._put(name, exc, force=True)
            return
        finally:
            close = getattr(gen, "close", None)
            if callable(close):
                close()  # in this thread, the one that ran it
        self._put(name, _END, force=True)

    def _put(self, name: str, item: Any, force: bool = False) -> None:
        entry = (name, item, time.monotonic())  # arrival: what behaviour samples are matched to
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            if force:  # an end or an error must arrive: wait for room, unless stopping
                while not self._stop.is_set():
                    try:
                        self._queue.put(entry, timeout=0.1)
                        return
                    except queue.Full:
                        continue
                return
            n = self.dropped[name] = self.dropped.get(name, 0) + 1
            if n == 1 or n % 1000 == 0:
                log.error("consumer too slow: dropped %d %s event(s) from %s", n,
                          type(item).__name__, name)

    def events(self) -> Iterator[Event]:
        sources = {"frames": self.frames, **self.syncs}
        for name, src in sources.items():
            th = threading.Thread(target=self._pump, args=(name, src), name=f"merge-{name}",
                                  daemon=True)
            self._threads[name] = th
            th.start()
        while not self._stop.is_set():
            try:
                name, item, t_arrival = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                if name == "frames":  # the acquisition ended: what is queued still goes out
                    yield from self._drain()
                    return
                raise AcquisitionError(f"sync source {name!r} ended unexpectedly")
            if isinstance(item, BaseException):
                if isinstance(item, AcquisitionError):
                    raise AcquisitionError(f"{name}: {item}") from item
                raise item
            if name == "frames":
                if isinstance(item, SyncEvent) and self.replace_sync:
                    self.replaced += 1
                    continue
                if isinstance(item, StimulusFrame) and self.replace_stimulus:
                    self.replaced += 1
                    continue
                if isinstance(item, ImagingFrame):
                    self._last_frame = item.index
            elif isinstance(item, SyncEvent):
                self._match(name, item)
            yield self._enrich(item, t_arrival)

    def _enrich(self, item: Event, t_arrival: float) -> Event:
        """A SyncEvent with the behaviour sources' readings at its arrival."""
        if isinstance(item, SyncEvent):
            for feed in self.feeds:
                item = feed.enrich(item, t_arrival)
        return item

    def _drain(self) -> Iterator[Event]:
        """What the sync sources still deliver after the frames ended: the queue, and what
        arrives within ``drain_grace_s`` (the last flips' datagrams may still be in flight),
        for at most 5 grace periods (a source that keeps sending must not hold the end)."""
        deadline = time.monotonic() + 5 * self.drain_grace_s
        while True:
            try:
                name, item, t_arrival = self._queue.get(
                    timeout=max(0.0, min(self.drain_grace_s, deadline - time.monotonic())))
            except queue.Empty:
                return
            if item is not _END and not isinstance(item, BaseException):
                yield self._enrich(item, t_arrival)

    def _match(self, name: str, ev: SyncEvent) -> None:
        """Compare a sync pulse's frame number with the frame source's latest frame."""
        if self._last_frame is None:
            return
        offset = ev.imaging_frame - self._last_frame
        self.sync_offset = offset
        if abs(offset) > self.match_tolerance:
            self.unmatched += 1
            if self.unmatched == 1 or self.unmatched % 1000 == 0:
                log.warning("%s sync names imaging frame %d while the frame source is at frame "
                            "%d (%d apart, %d such): check first_frame / numbering in "
                            "[daq.%s] and that both were started in the documented order",
                            name, ev.imaging_frame, self._last_frame, offset, self.unmatched,
                            name)
