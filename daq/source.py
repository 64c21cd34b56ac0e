"""The acquisition-source interface every daq backend implements.

A source is a context manager whose :meth:`AcquisitionSource.events` yields
a time-ordered stream of three event types — the same ones whether they come
from the simulated rig, a replayed recording, ScanImage + an NI DAQ, or a
serial sync box — so backends are interchangeable and the daq process that
publishes them stays a few lines long.

A live source paces itself (it yields an imaging frame when the frame
exists); a dataset/benchmark source may run as fast as possible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator

from cortexcast.core.errors import CortexcastError
from cortexcast.core.events import Event


class AcquisitionError(CortexcastError, RuntimeError):
    """A source failed (device vanished, file unreadable, ...). Vendor errors are chained."""


class AcquisitionSource(ABC):
    """What the daq process needs from a backend.

    ``with source:`` opens it (devices, files, sockets), :meth:`events` yields until the
    acquisition ends, leaving the block closes it. The defaults suit a source with
    nothing to open or report; a backend overrides what it has.
    """

    def __enter__(self) -> AcquisitionSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def events(self) -> Iterator[Event]:
        """Yield events in time order until the acquisition ends or the source is closed."""

    def stop(self) -> None:
        """Ask :meth:`events` to end soon; safe from any thread (it does not release
        resources another thread may be using: :meth:`close` does that)."""

    def close(self) -> None:
        """Release the source's resources and end :meth:`events` (idempotent)."""
        self.stop()

    def status(self) -> dict[str, Any]:
        """Counters for the daq's heartbeat and stats (empty when there are none)."""
        return {}
