"""The behaviour source: an eye tracker's pupil size and centre merged into ``sync``.

``[daq] sync = [..., "behavior"]`` with table ``[daq.behavior]``
(:class:`~cortexcast.daq.behavior_source.settings.BehaviorSettings`): readings come over UDP
JSON (:mod:`.udp`) or Lab Streaming Layer (:mod:`.lsl`, needs pylsl), are timed on this host's
monotonic clock and merged into each SyncEvent's ``behavior`` (:mod:`.alignment`).
"""

from __future__ import annotations

from typing import Any

from cortexcast.daq.behavior_source.alignment import STALE_KEY, BehaviorFeed
from cortexcast.daq.behavior_source.settings import EYE_CHANNELS, BehaviorSettings

__all__ = ["BehaviorFeed", "BehaviorSettings", "EYE_CHANNELS", "STALE_KEY",
           "make_behavior_source"]


def make_behavior_source(settings: BehaviorSettings, **kwargs: Any) -> BehaviorFeed:
    """The source ``settings.mode`` names (LSL imports pylsl only here)."""
    if settings.mode == "lsl":
        from cortexcast.daq.behavior_source.lsl import LslBehaviorSource

        return LslBehaviorSource(settings, **kwargs)
    from cortexcast.daq.behavior_source.udp import UdpBehaviorSource

    return UdpBehaviorSource(settings, **kwargs)
