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

from typing import Iterator, Protocol, runtime_checkable

from cortexcast.core.events import Event


class AcquisitionError(RuntimeError):
    """A source failed (device vanished, file unreadable, ...). Vendor errors are chained."""





@runtime_checkable
class AcquisitionSource(Protocol):
    """What the daq process needs from a backend."""

    def __enter__(self) -> "AcquisitionSource": ...

    def __exit__(self, *exc: object) -> None: ...

    def events(self) -> Iterator[Event]:
        """Yield events in time order until the acquisition ends or the source is closed."""
        ...
