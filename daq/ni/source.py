"""The NI sync source: DAQmx blocks in, SyncEvents out, buffer overflows counted as gaps.

DAQmx calls back from its own thread with each block; the block goes into a queue and
:meth:`NiSyncSource.events` (the caller's thread) turns it into events with
:class:`~cortexcast.daq.ni.sync_builder.NiSyncBuilder`. A buffer overflow is not fatal: it is logged as
an error, counted, the task is restarted, and the frames that fell into the gap are estimated
from the elapsed time and reported (``status()["ni_lost_frames"]``, ``gaps``) — never silently
renumbered. Every other DAQmx error ends the source with an :class:`AcquisitionError`.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any, Callable, Iterator

import numpy as np

from cortexcast.daq.ni.settings import NiSettings
from cortexcast.daq.ni.sync_builder import NiSyncBuilder
from cortexcast.daq.ni.task import DaqOverflow, NiAnalogInput, map_daq_error
from cortexcast.core.events import SyncEvent
from cortexcast.daq.source import AcquisitionError, AcquisitionSource

log = logging.getLogger(__name__)
_STOP = object()


class NiSyncSource(AcquisitionSource):
    """Sync events from an NI DAQ (context manager; ``events()`` until ``close()``)."""

    def __init__(self, settings: NiSettings, *, task_factory: Callable[[], Any] | None = None,
                 reader_factory: Callable[[Any], Any] | None = None,
                 counter_reader_factory: Callable[[Any], Any] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.s = settings
        self.builder = NiSyncBuilder(settings)
        self._factories = {"task_factory": task_factory, "reader_factory": reader_factory,
                           "counter_reader_factory": counter_reader_factory}
        self._monotonic = monotonic
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._input: Any = None  # NiAnalogInput or SimulatedAnalogInput
        self._closed = False
        self._next_sample = 0  # global sample number of the next block
        self._last_block_mono: float | None = None
        self.overflows = 0

    def status(self) -> dict[str, Any]:
        return {**self.builder.status(), "ni_overflows": self.overflows,
                "ni_recent_gaps": self.builder.gaps[-5:]}

    def _start_task(self) -> None:
        if self.s.backend == "simulated" and not any(self._factories.values()):
            from cortexcast.daq.ni.simulated import SimulatedAnalogInput

            self._input = SimulatedAnalogInput(self.s, self._queue.put, self._queue.put)
        else:
            self._input = NiAnalogInput(self.s, self._queue.put, self._queue.put,
                                        **self._factories)
        self._input.open()

    def __enter__(self) -> NiSyncSource:
        self._closed = False
        self._start_task()
        return self

    def close(self) -> None:
        """Stop the task and end :meth:`events` (idempotent, callable from another thread)."""
        self._closed = True
        self._queue.put(_STOP)
        inp, self._input = self._input, None
        if inp is not None:
            inp.close()

    def events(self) -> Iterator[SyncEvent]:
        if self._input is None and not self._closed:
            self._start_task()
        while not self._closed:
            try:
                item = self._queue.get(timeout=self.s.read_timeout_s)
            except queue.Empty:
                raise AcquisitionError(
                    f"NI DAQ {self.s.device}: no samples for {self.s.read_timeout_s:g} s "
                    f"(is the device still connected and its sample clock running?)") from None
            if item is _STOP:
                break
            if isinstance(item, np.ndarray):
                self._last_block_mono = self._monotonic()
                first, self._next_sample = self._next_sample, self._next_sample + item.shape[1]
                yield from self.builder.feed(item, first)
                continue
            err = map_daq_error(item, self.s)
            if not isinstance(err, DaqOverflow):
                raise err from item
            self._restart_after_overflow(err)
        yield from self.builder.flush()

    def _restart_after_overflow(self, err: DaqOverflow) -> None:
        """Restart the task; advance the sample count by the time it was not reading."""
        self.overflows += 1
        if self._input is not None:
            self._input.close()
        # Whatever the failed task queued after the error lies beyond the lost samples:
        # it is part of the gap, dropped with it.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._closed = True
        if self._closed:
            return
        last = self._last_block_mono if self._last_block_mono is not None else self._monotonic()
        gap = max(int(round((self._monotonic() - last) * self.s.rate_hz)), 1)
        self._start_task()  # its first sample is (about) now
        self._next_sample += gap
        log.error("%s; restarted the task (overflow %d, about %.2f s of sync lost; the frames "
                  "in the gap are counted as lost)", err, self.overflows, gap / self.s.rate_hz)
