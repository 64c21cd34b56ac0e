"""The daq process: take events from a source backend, publish them on the wire.

Thin by design: which backend is a setting, what it does lives behind
:class:`daq.source.AcquisitionSource`. Publishing never blocks (PUB drops
for a slow subscriber), so acquisition never waits on a consumer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cortexcast.runtime import Stop, ignore_stop_signals, install_stop_signals, write_json_atomic
from daq.sim.settings import SimSettings
from daq.source import AcquisitionError, AcquisitionSource, ImagingFrame, StimulusFrame, SyncEvent
from stream.pubsub import Publisher, parse_wait_for

log = logging.getLogger("daq")


@dataclass(frozen=True)
class DaqSettings:
    publish: str = "tcp://127.0.0.1:5555"
    """Endpoint the daq binds and publishes `frames`, `sync`, `stimulus` on."""
    source: Literal["sim", "replay"] = "sim"
    """Backend: the simulated rig, or a recording made with `cortexcast record`."""
    sim: SimSettings = field(default_factory=SimSettings)
    """Settings of the simulated rig (table [daq.sim])."""
    recording: str | None = None
    """Recording file for source = "replay"."""
    replay_paced: bool = True
    """Replay at the recorded pace (false: as fast as possible)."""
    hwm: int = 200
    """Messages queued per subscriber before the newest are dropped (~3 messages per
    imaging frame: 200 is about 2 s at 30 Hz)."""
    wait_for: tuple[str, ...] = ()
    """Topics that must have subscribers before acquisition starts (a handshake, not a
    sleep): "frames" needs one, "frames:2" two."""
    wait_timeout_s: float = 30.0
    """How long to wait for those subscribers before starting anyway (s)."""
    stats_out: str | None = None
    """Write a JSON of counters here on exit."""

    def __post_init__(self) -> None:
        if self.source == "replay" and not self.recording:
            raise ValueError("source = 'replay' needs 'recording' (a file from cortexcast record)")
        if self.hwm < 1:
            raise ValueError("hwm must be >= 1")


def make_source(settings: DaqSettings) -> AcquisitionSource:
    if settings.source == "sim":
        from daq.sim.rig import SimulatedRig

        return SimulatedRig(settings.sim)
    from daq.replay_source import ReplaySource

    return ReplaySource(settings.recording, paced=settings.replay_paced)  # type: ignore[arg-type]


class EventPublisher:
    """Maps source events to stream messages (the only place that knows the mapping)."""

    def __init__(self, pub: Publisher) -> None:
        self.pub = pub
        self.counts = {"frames": 0, "sync": 0, "stimulus": 0}

    def __call__(self, ev: ImagingFrame | SyncEvent | StimulusFrame) -> None:
        now = time.monotonic_ns()
        if isinstance(ev, ImagingFrame):
            acq = int(ev.meta.get("t_mono_ns", now))
            self.pub.publish("frames", "frame", [ev.pixels], t_acq=ev.t,
                             meta={"imaging_frame": ev.index}, stamps=[("daq.acq", acq)])
            self.counts["frames"] += 1
        elif isinstance(ev, SyncEvent):
            arrays = [] if ev.photodiode is None else [np.asarray(ev.photodiode, np.float32)]
            meta = {"imaging_frame": ev.imaging_frame, "stim_frame": ev.stim_frame,
                    "t_flip": ev.t_flip, "behavior": {k: float(v) for k, v in ev.behavior.items()}}
            self.pub.publish("sync", "sync", arrays, t_acq=ev.t, meta=meta)
            self.counts["sync"] += 1
        elif isinstance(ev, StimulusFrame):
            self.pub.publish("stimulus", "stimulus", [ev.pixels], t_acq=ev.t,
                             meta={"stim_frame": ev.index, "clip": ev.clip,
                                   "clip_frame": ev.clip_frame})
            self.counts["stimulus"] += 1
        else:
            raise TypeError(f"unknown event type {type(ev).__name__}")
        self.pub.status.update(self.counts)


def run_daq(settings: DaqSettings) -> int:
    install_stop_signals()
    pub = Publisher(settings.publish, "daq", hwm=settings.hwm)
    publish = EventPublisher(pub)
    started = time.monotonic()
    first_event: float | None = None
    reason = "source ended"
    try:
        with make_source(settings) as source:
            log.info("publishing on %s (source: %s)", pub.address, settings.source)
            if settings.wait_for:
                ok = pub.wait_for_subscribers(parse_wait_for(settings.wait_for),
                                              settings.wait_timeout_s)
                log.info("subscribers %s for %s", "ready" if ok else "NOT ready (timeout)",
                         ", ".join(settings.wait_for))
            for event in source.events():
                if first_event is None:
                    first_event = time.monotonic()
                publish(event)
    except Stop as sig:
        reason = f"stopped by {sig}"
    except AcquisitionError as exc:
        reason = f"source failed: {exc}"
        raise
    finally:
        ignore_stop_signals()
        pub.close()
        now = time.monotonic()
        stats = {"process": "daq", "reason": reason, "elapsed_s": now - started,
                 "acquiring_s": now - first_event if first_event is not None else 0.0,
                 "published": publish.counts}
        log.info("%s: %s", reason, publish.counts)
        if settings.stats_out:
            write_json_atomic(settings.stats_out, stats)
    return 0
