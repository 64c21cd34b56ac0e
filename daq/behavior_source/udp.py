"""Eye-tracker readings over UDP JSON (``[daq.behavior] mode = "udp"``).

One datagram holds one reading or a list of readings::

    {"v": 1, "t": 12.345, "pupil": 0.8, "pupil_x": 312.0, "pupil_y": 240.5}

Field names come from ``channels`` (default: the model channel names). ``t`` (optional) is
the reading's time in the sender's clock, in seconds (any origin). A field that is null or
NaN (the tracker lost the pupil) drops the reading (counted as ``behavior_missing``); a
datagram that is not JSON, lacks a field or has a non-number is counted and skipped.
"""

from __future__ import annotations

import json
import math
from typing import Any

from cortexcast.daq.behavior_source.alignment import BehaviorFeed, SenderClock
from cortexcast.daq.behavior_source.settings import BehaviorSettings
from cortexcast.daq.udp_listener import UdpListener, parse_senders


class DatagramError(ValueError):
    """A datagram's content does not follow the schema (internal; counted, not raised out)."""


class UdpBehaviorSource(BehaviorFeed):
    """Readings from UDP datagrams, timed on this host's monotonic clock."""

    def __init__(self, settings: BehaviorSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.clock = SenderClock(settings.clock_window)
        self._listener: UdpListener | None = None
        self.datagrams = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (port 0 in ``listen`` picks a free one)."""
        if self._listener is None:
            raise RuntimeError("not open")
        return self._listener.address

    @property
    def reading(self) -> bool:
        """A thread is reading the socket now."""
        return self._listener is not None and self._listener.reading

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["behavior_clock_offset_s"] = self.clock.offset
        out["behavior_refused"] = self._listener.refused if self._listener is not None else 0
        return out

    def __enter__(self) -> UdpBehaviorSource:
        self._closed = False
        self._listener = UdpListener(
            self.s.listen, self.s.poll_s, what="behaviour source",
            setting="[daq.behavior] listen",
            allowed=parse_senders(self.s.allowed_senders, "allowed_senders"),
            allowed_setting="[daq.behavior] allowed_senders")
        return self

    def close(self) -> None:
        """Stop reading (any thread)."""
        self._closed = True
        if self._listener is not None:
            self._listener.close()

    def _read(self) -> None:
        if self._listener is None:
            return
        for data in self._listener.datagrams(lambda exc: self.count_bad("receive", exc)):
            self.handle(data, self._monotonic())

    def handle(self, data: bytes, t_recv: float) -> None:
        """Decode one datagram received at ``t_recv`` and store its readings."""
        self.datagrams += 1
        try:
            readings = self.parse(json.loads(data))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, DatagramError
            self.count_bad("datagram", f"{exc}: {data[:80]!r}")
            return
        for t_sender, raw in readings:
            values = self.convert(raw)
            if values is None:
                continue
            t = t_recv if t_sender is None else self.clock.to_local(t_sender, t_recv)
            self.add_sample(t, values)

    def parse(self, obj: Any) -> list[tuple[float | None, dict[str, Any]]]:
        """``(sender t or None, {model channel: raw value})`` per reading of a datagram."""
        items = obj if isinstance(obj, list) else [obj]
        out = []
        for it in items:
            if not isinstance(it, dict):
                raise DatagramError(f"expected a JSON object, got {type(it).__name__}")
            if it.get("v", 1) != 1:
                raise DatagramError(f"unknown schema version {it.get('v')!r} (this reads v 1)")
            t = it.get("t")
            if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))
                                  or not math.isfinite(t)):
                raise DatagramError(f"t must be a number (seconds), got {t!r}")
            raw: dict[str, Any] = {}
            for channel, fieldname in self.mapping.items():
                if fieldname not in it:
                    raise DatagramError(f"missing field {fieldname!r} (for channel {channel!r}; "
                                        "see [daq.behavior] channels)")
                value = it[fieldname]
                if value is not None and (isinstance(value, bool)
                                          or not isinstance(value, (int, float))):
                    raise DatagramError(f"field {fieldname!r} must be a number, got {value!r}")
                raw[channel] = value
            out.append((None if t is None else float(t), raw))
        return out
