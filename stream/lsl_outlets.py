"""``cortexcast lsl``: the decoder's reconstructions and the closed loop's events as Lab
Streaming Layer streams, so other rig software (LabRecorder, Bonsai, MATLAB) can use them.

Three outlets (names configurable, "" leaves one out):

- ``cortexcast-reconstruction`` (type ``Reconstruction``): one sample per reconstruction,
  ``height * width`` float32 channels (row-major 36 x 64 pixels, 0..255 scale), nominal rate
  ``rate_hz`` (the stimulus rate);
- ``cortexcast-reconstruction-index`` (type ``Markers``, string): per reconstruction, with the
  same timestamp, a JSON object ``{"stim_frame", "imaging_frame", "lag", "model", "t_acq",
  "seq", "source", "stamps"}``;
- ``cortexcast-loop`` (type ``Markers``, string): per closed-loop firing, its record as JSON
  plus ``t_acq``, ``seq``, ``source`` and ``stamps``.

Timestamps are ``pylsl.local_clock()`` at push; ``stamps`` are the message's own
``(stage, time.monotonic_ns())`` pairs from the producing processes (same host).
pylsl is optional: ``pip install cortexcast[lsl]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from cortexcast.core.config import load_settings, path_field
from cortexcast.core.errors import CortexcastError
from cortexcast.core.events import LoopEvent, Reconstruction, from_message
from cortexcast.core.message import Message, MessageError
from cortexcast.core.runtime import ProcessRun, StopSignals, setup_logging
from cortexcast.stream.pubsub import Sockets

log = logging.getLogger("lsl")


class LslUnavailableError(CortexcastError, RuntimeError):
    """pylsl (or its liblsl) is not installed."""


def require_pylsl() -> ModuleType:
    """The pylsl module, or :class:`LslUnavailableError` saying how to install it."""
    try:
        import pylsl
    except (ImportError, OSError, RuntimeError) as exc:  # RuntimeError: liblsl not found
        raise LslUnavailableError(
            f"Lab Streaming Layer needs pylsl and its liblsl ({exc}): pip install "
            "cortexcast[lsl] (or set [daq.behavior] mode = \"udp\" / leave \"lsl\" out of "
            "[stack] processes)") from exc
    return pylsl


@dataclass(frozen=True)
class LslSettings:
    """Settings of the ``lsl`` process (TOML table ``[lsl]``)."""

    endpoints: tuple[str, ...] = ("tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557")
    """Endpoints to subscribe to: the decoder's (reconstruction) and the loop's (loop)."""
    reconstruction_name: str = "cortexcast-reconstruction"
    """LSL stream of reconstruction pixels ("" = none)."""
    reconstruction_type: str = "Reconstruction"
    index_name: str = "cortexcast-reconstruction-index"
    """LSL marker stream with each reconstruction's frame numbers as JSON ("" = none)."""
    events_name: str = "cortexcast-loop"
    """LSL marker stream of closed-loop events as JSON ("" = none)."""
    events_type: str = "Markers"
    rate_hz: float = 30.0
    """Nominal rate of the reconstruction stream: the stimulus rate (0 = irregular)."""
    height: int = 36
    width: int = 64
    """Reconstruction size (pixels); others are counted and skipped."""
    source_id: str = ""
    """Prefix of the outlets' source_id ("" = cortexcast@<host>): a stable id lets LSL
    consumers reconnect by themselves when this process restarts."""
    hwm: int = 100
    """Receive high-water mark (messages queued before the publisher drops)."""
    stats_out: str | None = path_field(None)
    """Write a JSON of counters here on exit."""

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("lsl needs at least one endpoint")
        if self.rate_hz < 0 or self.height < 1 or self.width < 1 or self.hwm < 1:
            raise ValueError("rate_hz must be >= 0; height, width and hwm >= 1")
        if not (self.reconstruction_name or self.index_name or self.events_name):
            raise ValueError("every outlet name is empty: nothing to publish")


class LslOutlets:
    """The outlets, and :meth:`push` of one message onto the right ones."""

    def __init__(self, settings: LslSettings, pylsl: ModuleType | None = None) -> None:
        self.s = settings
        self.lsl = pylsl or require_pylsl()
        self.counts = {"reconstructions": 0, "events": 0, "skipped": 0, "bad": 0}
        prefix = settings.source_id or f"cortexcast@{socket.gethostname()}"
        self.pixels = self.index = self.events = None
        n = settings.height * settings.width
        if settings.reconstruction_name:
            info = self._info(settings.reconstruction_name, settings.reconstruction_type, n,
                              settings.rate_hz, self.lsl.cf_float32, prefix)
            d = info.desc()
            d.append_child_value("height", str(settings.height))
            d.append_child_value("width", str(settings.width))
            d.append_child_value("order", "row-major")
            d.append_child_value("scale", "0..255")
            d.append_child_value("index_stream", settings.index_name)
            self.pixels = self.lsl.StreamOutlet(info)
        if settings.index_name:
            self.index = self.lsl.StreamOutlet(self._info(
                settings.index_name, "Markers", 1, self.lsl.IRREGULAR_RATE,
                self.lsl.cf_string, prefix))
        if settings.events_name:
            self.events = self.lsl.StreamOutlet(self._info(
                settings.events_name, settings.events_type, 1, self.lsl.IRREGULAR_RATE,
                self.lsl.cf_string, prefix))

    def _info(self, name: str, kind: str, channels: int, rate: float, fmt: int,
              prefix: str) -> Any:
        info = self.lsl.StreamInfo(name, kind, channels, rate, fmt, f"{prefix}:{name}")
        info.desc().append_child_value("producer", "cortexcast")
        return info

    def topics(self) -> list[str]:
        out = []
        if self.pixels is not None or self.index is not None:
            out.append("reconstruction")
        if self.events is not None:
            out.append("loop")
        return out

    def push(self, msg: Message) -> None:
        try:
            ev = from_message(msg)
        except MessageError as exc:
            self._skip("bad", msg, exc)
            return
        head = {"t_acq": msg.t_acq, "seq": msg.seq, "source": msg.source,
                "stamps": {k: int(v) for k, v in msg.stamps}}
        now = self.lsl.local_clock()
        if isinstance(ev, Reconstruction):
            if ev.pixels.shape != (self.s.height, self.s.width):
                self._skip("skipped", msg, f"shape {ev.pixels.shape}, not "
                           f"({self.s.height}, {self.s.width}) ([lsl] height/width)")
                return
            if self.pixels is not None:
                self.pixels.push_sample(np.ascontiguousarray(ev.pixels, np.float32).ravel(), now)
            if self.index is not None:
                self.index.push_sample([json.dumps(
                    {"stim_frame": ev.stim_frame, "imaging_frame": ev.imaging_frame,
                     "lag": ev.lag, "model": ev.model, **head})], now)
            self.counts["reconstructions"] += 1
        elif isinstance(ev, LoopEvent) and self.events is not None:
            self.events.push_sample([json.dumps({**ev.record, **head}, default=str)], now)
            self.counts["events"] += 1
        else:
            self.counts["skipped"] += 1

    def _skip(self, what: str, msg: Message, why: Any) -> None:
        self.counts[what] += 1
        if self.counts[what] <= 3:
            log.warning("lsl: %s %s message %d from %s: %s", what, msg.topic, msg.seq,
                        msg.source, why)

    def close(self) -> None:
        self.pixels = self.index = self.events = None  # destroying an outlet closes it


def run_lsl(settings: LslSettings, *, sockets: Sockets = Sockets(),
            stop: StopSignals | None = None) -> dict[str, Any]:
    """Forward reconstructions and loop events to LSL until a stop comes; return counters."""
    summary: dict[str, Any] = {}
    with ProcessRun("lsl", settings.stats_out, stats=lambda: summary,
                    stop=stop or StopSignals(raise_stop=False)) as run:
        outlets = run.own(LslOutlets(settings))
        sub = run.own(sockets.subscriber(settings.endpoints, outlets.topics(),
                                         hwm=settings.hwm, name="lsl"))
        run.counts = outlets.counts
        log.info("publishing %s as LSL streams %s from %s", ", ".join(outlets.topics()),
                 ", ".join(n for n in (settings.reconstruction_name, settings.index_name,
                                       settings.events_name) if n),
                 " ".join(settings.endpoints))
        while not run.stopping:
            msg = sub.recv(0.1)
            if msg is not None:
                outlets.push(msg)
        summary.update({**outlets.counts, "elapsed_s": time.monotonic() - run.started,
                        "dropped": sub.stats.as_dict()["total_dropped"]})
    return summary


# -- command line ---------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    setup_logging("lsl", getattr(args, "log_level", "INFO"))
    overrides = {"endpoints": args.endpoints, "rate_hz": args.rate, "stats_out": args.stats_out}
    from cortexcast.stream.pubsub import sockets_for

    summary = run_lsl(load_settings(LslSettings, args.config, "lsl", overrides),
                      sockets=sockets_for(args.config))
    print(f"lsl: pushed {summary['reconstructions']} reconstructions, {summary['events']} "
          f"loop events ({summary['bad']} bad, {summary['dropped']} dropped)")
    return 0


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="endpoints", action="append", metavar="ENDPOINT",
                   help="endpoint to subscribe to; repeat for several (default the decoder's "
                        "and the loop's)")
    p.add_argument("--rate", type=float, metavar="HZ",
                   help="nominal rate of the reconstruction stream (default 30)")
    p.add_argument("--stats-out", metavar="JSON", help="write counters here on exit")
    p.add_argument("--config", metavar="TOML", help="config file; its [lsl] table is used")
    p.set_defaults(func=_run)


_DESCRIPTION = ("Subscribe to the decoder's reconstructions and the closed loop's events and "
                "push them to Lab Streaming Layer outlets (docs/rig.md). Needs pylsl: pip "
                "install cortexcast[lsl].")


def register(subparsers: Any) -> None:
    """Add ``lsl`` to a ``cortexcast`` subparsers object."""
    _add_args(subparsers.add_parser(
        "lsl", help="publish reconstructions and loop events as LSL streams",
        description=_DESCRIPTION))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cortexcast.stream.lsl_outlets [--config rig.toml] ...``."""
    parser = argparse.ArgumentParser(prog="python -m cortexcast.stream.lsl_outlets",
                                     description=_DESCRIPTION)
    parser.add_argument("--log-level", default="INFO", type=str.upper)
    _add_args(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CortexcastError as exc:
        print(f"cortexcast lsl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
