"""The daq process: take events from a source backend, publish them on the wire.

Thin by design: which backend is a setting, what it does lives behind
:class:`cortexcast.daq.source.AcquisitionSource`. Publishing never blocks (PUB drops
for a slow subscriber), so acquisition never waits on a consumer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal


from cortexcast.core.config import path_field
from cortexcast.core.runtime import ProcessRun, StopSignals
from cortexcast.daq.behavior_source.settings import BehaviorSettings
from cortexcast.daq.ni.settings import NiSettings
from cortexcast.daq.scanimage.tiff_source import TiffSettings
from cortexcast.daq.scanimage.zmq_source import BridgeSettings, ScanImageStreamSettings
from cortexcast.daq.serial_sync.settings import SerialSettings
from cortexcast.daq.sim.settings import SimSettings
from cortexcast.core.events import Event, ImagingFrame, StimulusFrame, SyncEvent, topics_of
from cortexcast.daq.source import AcquisitionError, AcquisitionSource
from cortexcast.daq.replay_source import ReplaySource, daq_replay
from cortexcast.daq.stimulus_identity import StimulusSettings
from cortexcast.stream.endpoints import parse_wait_for
from cortexcast.stream.pubsub import Publisher, Sockets
from cortexcast.stream.replay import ReplaySettings

log = logging.getLogger("daq")


@dataclass(frozen=True)
class DaqSettings:
    publish: str = "tcp://127.0.0.1:5555"
    """Endpoint the daq binds and publishes `frames`, `sync`, `stimulus` on."""
    source: Literal["sim", "replay", "scanimage", "scanimage-bridge", "tiff"] = "sim"
    """Frame backend: the simulated rig, a recording made with `cortexcast record`,
    ScanImage Premium's ZeroMQ stream, the MATLAB bridge (daq/matlab/), or ScanImage's
    TIFF files as they are written (docs/scanimage.md)."""
    sim: SimSettings = field(default_factory=SimSettings)
    """Settings of the simulated rig (table [daq.sim])."""
    scanimage: ScanImageStreamSettings = field(default_factory=ScanImageStreamSettings)
    """ScanImage's own ZeroMQ stream, source = "scanimage" (table [daq.scanimage])."""
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    """The MATLAB frameAcquired bridge, source = "scanimage-bridge" (table [daq.bridge])."""
    tiff: TiffSettings = field(default_factory=TiffSettings)
    """Following ScanImage's TIFF files, source = "tiff" (table [daq.tiff])."""
    sync: tuple[Literal["ni", "serial", "stimulus", "behavior"], ...] = ()
    """Sync/behaviour sources merged into the frame source's stream (daq/merged.py): "ni"
    (NI-DAQmx frame clock + photodiode, [daq.ni]), "serial" (sync box / wheel, [daq.serial]),
    "stimulus" (clip ids from the stimulus computer, [daq.stimulus]), "behavior" (pupil and
    eye position from an eye tracker over UDP or LSL, [daq.behavior]); see docs/rig.md."""
    ni: NiSettings = field(default_factory=NiSettings)
    serial: SerialSettings = field(default_factory=SerialSettings)
    stimulus: StimulusSettings = field(default_factory=StimulusSettings)
    behavior: BehaviorSettings = field(default_factory=BehaviorSettings)
    """The eye tracker, sync = [..., "behavior"] (table [daq.behavior])."""
    recording: str | None = path_field(None)
    """Recording file for source = "replay"."""
    replay_paced: bool = True
    """Replay at the recorded pace (false: as fast as possible)."""
    replay: ReplaySettings = field(default_factory=ReplaySettings)
    """The replay backend's settings (table [daq.replay], the same as `cortexcast replay`'s
    [replay]); `recording` and `replay_paced` above are its shorthand in [daq]."""
    hwm: int = 200
    """Messages queued per subscriber before the newest are dropped (~3 messages per
    imaging frame: 200 is about 2 s at 30 Hz)."""
    wait_for: tuple[str, ...] = ()
    """Topics that must have subscribers before acquisition starts (a handshake, not a
    sleep): "frames" needs one, "frames:2" two."""
    wait_timeout_s: float = 30.0
    """How long to wait for those subscribers before starting anyway (s)."""
    stats_out: str | None = path_field(None)
    """Write a JSON of counters here on exit."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "replay",
                           daq_replay(self.replay, self.recording, self.replay_paced))
        if self.source == "replay" and not self.replay.recording:
            raise ValueError("source = 'replay' needs 'recording' (a file from cortexcast record)")
        if self.source == "tiff" and not self.tiff.folder:
            raise ValueError("source = 'tiff' needs [daq.tiff] folder (where ScanImage logs)")
        if self.hwm < 1:
            raise ValueError("hwm must be >= 1")
        if len(set(self.sync)) != len(self.sync):
            raise ValueError(f"sync names a source twice: {list(self.sync)}")
        if "serial" in self.sync and not self.serial.port:
            raise ValueError("sync includes 'serial' but [daq.serial] port is not set")
        if "ni" in self.sync and "serial" in self.sync:
            raise ValueError("sync can take imaging pulses from 'ni' or 'serial', not both")
        if self.source == "sim" and self.sim.clips:
            self._check_sim_clips()

    def _check_sim_clips(self) -> None:
        """A sim playing a clip set announces clip identity (and the eye) over UDP, as a
        stimulus computer would: without the matching listeners the session has no stimulus
        stream (or no pupil), silently."""
        if "stimulus" not in self.sync:
            raise ValueError("[daq.sim] clips is set, so the simulated stimulus computer "
                             "announces clip identity over UDP: add \"stimulus\" to [daq] sync "
                             f"and set [daq.stimulus] listen = {self.sim.stimulus_to!r}")
        if self.stimulus.mode == "udp" and _port(self.stimulus.listen) != _port(
                self.sim.stimulus_to):
            raise ValueError(f"[daq.sim] stimulus_to = {self.sim.stimulus_to!r} but [daq.stimulus]"
                             f" listen = {self.stimulus.listen!r}: use one port for both")
        if self.sim.eye_to and "behavior" in self.sync and self.behavior.mode == "udp" and \
                _port(self.behavior.listen) != _port(self.sim.eye_to):
            raise ValueError(f"[daq.sim] eye_to = {self.sim.eye_to!r} but [daq.behavior] listen"
                             f" = {self.behavior.listen!r}: use one port for both")


def _port(host_port: str) -> str:
    return host_port.rpartition(":")[2]


def make_source(settings: DaqSettings) -> AcquisitionSource:
    if settings.source == "sim":
        from cortexcast.daq.sim.rig import SimulatedRig

        return SimulatedRig(settings.sim)
    if settings.source in ("scanimage", "scanimage-bridge"):
        from cortexcast.daq.scanimage.zmq_source import bridge_source, scanimage_stream_source

        if settings.source == "scanimage":
            return scanimage_stream_source(settings.scanimage)
        return bridge_source(settings.bridge)
    if settings.source == "tiff":
        from cortexcast.daq.scanimage.tiff_source import TiffFollower

        return TiffFollower(settings.tiff)

    return ReplaySource.from_settings(settings.replay)


def with_sync(frames: AcquisitionSource, settings: DaqSettings) -> AcquisitionSource:
    """The frame source merged with the sync sources ``settings.sync`` names (if any)."""
    if not settings.sync:
        return frames
    from cortexcast.daq.merged import MergedSource

    syncs: dict[str, AcquisitionSource] = {}
    for name in settings.sync:
        if name == "ni":
            from cortexcast.daq.ni.source import NiSyncSource

            syncs[name] = NiSyncSource(settings.ni)
        elif name == "serial":
            from cortexcast.daq.serial_sync.source import SerialSyncSource

            syncs[name] = SerialSyncSource(settings.serial)
        elif name == "behavior":
            from cortexcast.daq.behavior_source import make_behavior_source

            syncs[name] = make_behavior_source(settings.behavior)
        else:
            from cortexcast.daq.stimulus_identity import StimulusIdentitySource

            syncs[name] = StimulusIdentitySource(settings.stimulus)
    return MergedSource(frames, syncs)  # type: ignore[return-value]


class EventPublisher:
    """Publishes source events (:meth:`Publisher.publish_event`) and counts them per topic."""

    def __init__(self, pub: Publisher) -> None:
        self.pub = pub
        self.counts = {"frames": 0, "sync": 0, "stimulus": 0}

    def __call__(self, ev: Event) -> None:
        stamps: tuple[tuple[str, int], ...] = ()
        if isinstance(ev, ImagingFrame):  # acquired when the source says, else now
            stamps = (("daq.acq", int(ev.meta.get("t_mono_ns", time.monotonic_ns()))),)
        msg = self.pub.publish_event(ev, stamps=stamps)
        self.counts[msg.topic] += 1
        self.pub.status.update(self.counts)


def run_daq(settings: DaqSettings, *, sockets: Sockets = Sockets(),
            stop: StopSignals | None = None) -> int:
    """Publish the source's events until it ends or a stop comes (see :class:`ProcessRun`).

    A stop that lands between a frame's sync and the frame waits for the frame (at most
    0.5 s), so a recording never ends on a sync without its frame.
    """
    first_event: float | None = None
    with ProcessRun("daq", settings.stats_out, stop=stop) as run:
        # A thread sends, so acquisition never waits on ZeroMQ (nor on a peer flooding it
        # with subscriptions); only the daq's own topics may be subscribed to.
        pub = sockets.publisher(settings.publish, "daq", hwm=settings.hwm,
                                what="[daq] publish", background=True,
                                topics=topics_of(ImagingFrame, SyncEvent, StimulusFrame))
        publish = EventPublisher(pub)

        def stats() -> dict[str, Any]:
            now = time.monotonic()
            return {"elapsed_s": now - run.started,
                    "acquiring_s": now - first_event if first_event is not None else 0.0,
                    "published": publish.counts,
                    "refused_subscriptions": pub.refused_subscriptions,
                    "send_queue_dropped": pub.queue_dropped,
                    "source": {k: v for k, v in pub.status.items() if k not in publish.counts}}

        run.counts, run.stats_fn = publish.counts, stats
        # A source that ended on its own (a replay, a finite sim run) lets the last queued
        # messages go out; a stop signal briefly (the frame a held stop waited for may still
        # be queued behind its sync); a failure closes at once.
        run.own(pub, close=lambda: pub.close(
            linger_ms=1000 if run.reason == "source ended" else
            200 if run.reason.startswith("stopped") else 0))
        try:
            with with_sync(make_source(settings), settings) as source:
                log.info("publishing on %s (source: %s%s)", pub.address, settings.source,
                         "".join(f" + {s}" for s in settings.sync))
                if settings.wait_for:
                    ok = pub.wait_for_subscribers(parse_wait_for(settings.wait_for),
                                                  settings.wait_timeout_s)
                    log.info("subscribers %s for %s", "ready" if ok else "NOT ready (timeout)",
                             ", ".join(settings.wait_for))
                status_t, last_frame = 0.0, -1
                try:
                    for event in source.events():
                        if first_event is None:
                            first_event = time.monotonic()
                        if isinstance(event, SyncEvent) and event.imaging_frame > last_frame:
                            run.stop.hold()  # its frame is next: publish both or neither
                        publish(event)
                        if isinstance(event, ImagingFrame):
                            last_frame = event.index
                            run.stop.release()
                            if run.stopping:  # a stop requested from another thread
                                break
                        if time.monotonic() - status_t > 0.5:
                            pub.status.update(source.status())  # sync counters ride the heartbeat
                            status_t = time.monotonic()
                    else:
                        run.reason = "source ended"
                finally:
                    run.stop.end()  # no held stop or alarm may fire into the source's cleanup
                pub.status.update(source.status())
        except AcquisitionError as exc:
            run.reason = f"source failed: {exc}"
            raise
    return 0
