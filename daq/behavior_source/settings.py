"""Settings of the behaviour source (table ``[daq.behavior]``): an eye tracker's pupil size and
pupil centre over UDP JSON or Lab Streaming Layer, mapped to the model's behaviour channels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from cortexcast.daq.udp_listener import LOOPBACK_SENDERS, check_listen, parse_senders

#: The model's eye channels, in the order an LSL stream carries them by default.
EYE_CHANNELS = ("pupil", "pupil_x", "pupil_y")

Selector = Union[str, int]
"""Where a channel's value comes from: a JSON field name (UDP), or an LSL channel index
(0-based) or channel label."""


@dataclass(frozen=True)
class BehaviorSettings:
    mode: Literal["udp", "lsl"] = "udp"
    """How the eye tracker sends: UDP JSON datagrams, or an LSL stream (docs/rig.md)."""
    listen: str = "127.0.0.1:5558"
    """UDP host:port to receive datagrams on (mode "udp"; "0.0.0.0:5558" for another PC)."""
    allowed_senders: tuple[str, ...] = LOOPBACK_SENDERS
    """IP addresses or networks whose datagrams are read (mode "udp"); others are dropped,
    counted and logged once a minute. Default: this computer only; add the eye tracker's
    address (e.g. "10.0.0.5" or "10.0.0.0/24"), or "*" for any sender."""
    lsl_name: str = "cortexcast-eye"
    """LSL stream name to resolve (mode "lsl"; "" = any name)."""
    lsl_type: str = ""
    """LSL stream type to resolve, e.g. "Gaze" ("" = any type)."""
    lsl_source_id: str = ""
    """LSL source_id to resolve ("" = any); streams with a source_id reconnect by themselves."""
    lsl_hosts: tuple[str, ...] = ()
    """Host names (as LSL reports them) the stream may come from, e.g. ["eye-pc"]; a stream
    of the right name from any other computer is then ignored ("" = any host: LSL has no
    authentication, so set this on a shared network)."""
    resolve_timeout_s: float = 2.0
    """How long starting waits for the LSL stream; without it the daq starts anyway
    (behaviour stale) and keeps looking."""
    channels: dict[str, Selector] = field(default_factory=dict)
    """Model channel -> JSON field (UDP) or LSL channel index/label. Default: pupil, pupil_x,
    pupil_y from fields of those names (UDP) or from channels 0, 1, 2 (LSL)."""
    scale: dict[str, float] = field(default_factory=dict)
    """Model channel -> factor applied to the raw value (e.g. pixels -> model units)."""
    offset: dict[str, float] = field(default_factory=dict)
    """Model channel -> added after scaling: value = raw * scale + offset."""
    stale_s: float = 0.5
    """A sync with no sample in the last stale_s seconds gets behavior_stale = 1 instead."""
    poll_s: float = 0.05
    """How often the reader checks for a stop request while no data comes (s)."""
    clock_window: int = 200
    """UDP with a sender "t": the sender's clock offset is the minimum of the last this many
    receive-minus-sender differences (the least delayed datagram)."""

    def __post_init__(self) -> None:
        if self.mode == "udp":
            check_listen(self.listen)
        parse_senders(self.allowed_senders, "allowed_senders")
        if any(not h or "'" in h for h in self.lsl_hosts):
            raise ValueError(f"lsl_hosts: bad host name in {list(self.lsl_hosts)}")
        if self.mode == "lsl" and not (self.lsl_name or self.lsl_type or self.lsl_source_id):
            raise ValueError("mode = 'lsl' needs lsl_name, lsl_type or lsl_source_id to find "
                             "the eye tracker's stream")
        for name, sel in self.channels.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"channels: bad model channel name {name!r}")
            if isinstance(sel, bool) or not isinstance(sel, (str, int)) or sel == "" \
                    or (isinstance(sel, int) and sel < 0):
                raise ValueError(f"channels.{name} must be a field name, or an LSL channel "
                                 f"index >= 0 or label, got {sel!r}")
            if self.mode == "udp" and isinstance(sel, int):
                raise ValueError(f"channels.{name} = {sel}: a UDP datagram's fields have names")
        mapped = self.channel_map()
        for table in ("scale", "offset"):
            for name, value in getattr(self, table).items():
                if name not in mapped:
                    raise ValueError(f"{table}.{name}: not a mapped channel "
                                     f"(channels: {', '.join(mapped)})")
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{table}.{name} must be a number, got {value!r}")
        if self.stale_s <= 0 or self.poll_s <= 0 or self.resolve_timeout_s < 0:
            raise ValueError("stale_s and poll_s must be > 0, resolve_timeout_s >= 0")
        if self.clock_window < 1:
            raise ValueError("clock_window must be >= 1")

    def lsl_predicate(self) -> str:
        """The LSL resolve predicate of lsl_name / lsl_type / lsl_source_id (those set)."""
        terms = [f"{key}='{value}'" for key, value in (
            ("name", self.lsl_name), ("type", self.lsl_type),
            ("source_id", self.lsl_source_id)) if value]
        if self.lsl_hosts:  # LSL itself admits only streams from these hosts
            terms.append("(" + " or ".join(f"hostname='{h}'" for h in self.lsl_hosts) + ")")
        return " and ".join(terms)

    def channel_map(self) -> dict[str, Selector]:
        """Model channel -> selector, with this mode's defaults when ``channels`` is empty."""
        if self.channels:
            return dict(self.channels)
        if self.mode == "lsl":
            return {name: i for i, name in enumerate(EYE_CHANNELS)}
        return {name: name for name in EYE_CHANNELS}

    def convert(self, channel: str, raw: float) -> float:
        """A raw reading in the model's units."""
        return raw * float(self.scale.get(channel, 1.0)) + float(self.offset.get(channel, 0.0))
