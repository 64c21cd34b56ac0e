"""``cortexcast record`` and ``cortexcast replay``: thin loops around the recording format.

``record`` subscribes to any set of streams and appends every message, as
received, to a recording (:mod:`cortexcast.stream.recording`); ``replay`` publishes a
recording again (:mod:`cortexcast.stream.replay`). ``cortexcast/cli.py`` adds them with
:func:`register_record` and :func:`register_replay`; ``python -m
cortexcast.stream.record_cli record|replay ...`` runs them on their own.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from cortexcast.core.config import ConfigError, load_settings, path_field
from cortexcast.core.runtime import ProcessRun, StopSignals, setup_logging
from cortexcast.stream.message import Message, encode
from cortexcast.stream.pubsub import Sockets, StreamError, Subscriber
from cortexcast.stream.pubsub import sockets_for
from cortexcast.stream.recording import RecordingError, RecordingReader, RecordingWriter
from cortexcast.stream.replay import Replayer, ReplaySettings, ReplayStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordSettings:
    """Settings of the ``record`` process (TOML table ``[record]``)."""

    endpoints: tuple[str, ...] = ("tcp://127.0.0.1:5555",)
    """Endpoints to subscribe to (connect)."""
    topics: tuple[str, ...] = ("frames", "sync", "stimulus")
    """Topics to record (ZeroMQ prefix match: ``""`` records every topic)."""
    out: str = path_field("")
    """Recording file to create (its index goes to ``<out>.idx``)."""
    duration_s: float | None = None
    """Stop after this many seconds (None: run until SIGINT/SIGTERM)."""
    fsync_s: float = 1.0
    """Longest time between fsyncs (s); 0 syncs after every message."""
    overwrite: bool = False
    """Replace ``out`` if it exists (otherwise refuse)."""
    hwm: int = 1000
    """Receive high-water mark (messages queued before the publisher drops)."""
    stats_out: str | None = path_field(None)
    """Write a JSON of the recording's counters here on exit."""

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("record needs at least one endpoint")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.fsync_s < 0 or self.hwm < 1:
            raise ValueError("fsync_s must be >= 0 and hwm >= 1")


class RawSubscriber(Subscriber):
    """A :class:`Subscriber` that also returns each message's raw frames and receive time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw: dict[int, tuple[list[Any], int]] = {}

    def __enter__(self) -> RawSubscriber:
        return self

    def _accept(self, frames: list[zmq.Frame]) -> Message | None:
        t_recv = time.monotonic_ns()
        msg = super()._accept(frames)
        if msg is not None:
            self._raw[id(msg)] = (frames, t_recv)
        return msg

    def recv_raw(self, timeout_s: float | None) -> tuple[Message, list[Any], int] | None:
        """``(message, frames as received, receive monotonic ns)``, or None on timeout."""
        msg = self.recv(timeout_s)
        if msg is None:
            return None
        frames, t_recv = self._raw.pop(id(msg), (None, time.monotonic_ns()))
        return msg, (encode(msg) if frames is None else frames), t_recv


def record(settings: RecordSettings, *, sockets: Sockets = Sockets(),
           stop: StopSignals | None = None) -> dict[str, Any]:
    """Record until ``duration_s`` passes or a stop comes; return a summary.

    A stop signal only ends the loop (it never interrupts a write), so the file ends on a
    whole record; what had already arrived is written before the file is closed.
    """
    if not settings.out:
        raise RecordingError("no output file given (--out)")
    summary: dict[str, Any] = {}
    with ProcessRun("record", settings.stats_out, stats=lambda: summary,
                    stop=stop or StopSignals(raise_stop=False)) as run:
        end = None if settings.duration_s is None else run.started + settings.duration_s
        sub = run.own(RawSubscriber(settings.endpoints, settings.topics, hwm=settings.hwm,
                                    context=sockets.context, name="record",
                                    security=sockets.security))
        writer = run.own(RecordingWriter(settings.out, overwrite=settings.overwrite,
                                         fsync_s=settings.fsync_s))
        log.info("recording %s from %s to %s", ",".join(settings.topics),
                 " ".join(settings.endpoints), settings.out)
        while not run.stopping:
            left = 0.1 if end is None else min(0.1, end - time.monotonic())
            if left <= 0:
                break
            if (got := sub.recv_raw(left)) is not None:
                writer.write(got[0], got[1], got[2])
        for _ in range(settings.hwm):  # what had already arrived when we stopped
            if (got := sub.recv_raw(0)) is None:
                break
            writer.write(got[0], got[1], got[2])
        stats = sub.stats.as_dict()
        run.counts = dict(writer.per_topic)
        summary.update({"out": settings.out, "messages": dict(writer.per_topic),
                        "total": writer.count, "bytes": writer.bytes_written,
                        "elapsed_s": time.monotonic() - run.started,
                        "dropped": stats["dropped"], "total_dropped": stats["total_dropped"],
                        "bad": stats["bad"]})
    return summary


def replay(settings: ReplaySettings, *, sockets: Sockets = Sockets(),
           stop: StopSignals | None = None) -> dict[str, Any]:
    """Publish ``settings.recording`` on ``settings.to``; return a summary."""
    if not settings.recording:
        raise RecordingError("no recording given")
    summary: dict[str, Any] = {"recording": settings.recording, "to": settings.to}
    with ProcessRun("replay", settings.stats_out, stats=lambda: summary,
                    stop=stop or StopSignals(raise_stop=False)) as run:
        reader = run.own(RecordingReader(settings.recording))
        pub = run.own(sockets.publisher(settings.to, settings.source, hwm=settings.hwm,
                                           what="[replay] to"))
        topics = settings.topics or reader.topics
        if settings.wait_subscribers:
            want = {t: settings.wait_subscribers for t in topics}
            deadline = time.monotonic() + settings.wait_timeout_s
            while not pub.wait_for_subscribers(want, 0.1):
                if run.stopping:
                    summary.update(ReplayStats(stopped=True).as_dict())
                    return summary
                if time.monotonic() > deadline:
                    raise StreamError(f"fewer than {settings.wait_subscribers} subscriber(s) "
                                      f"on {pub.address} after {settings.wait_timeout_s} s")
        log.info("replaying %d messages (%s) from %s on %s", len(reader.select(topics)),
                 ",".join(topics), settings.recording, pub.address)
        replayer = Replayer(settings, pub.send, idle=pub.heartbeat_if_due,
                            should_stop=lambda: run.stopping)
        summary.update(replayer.run(reader).as_dict())
        run.counts = dict(summary.get("sent", {}))
        end = time.monotonic() + settings.linger_s
        while not run.stopping and time.monotonic() < end:  # let queued messages leave
            pub.heartbeat_if_due()
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    return summary


# -- command line ---------------------------------------------------------------
def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _finish(summary: dict[str, Any]) -> None:
    """Print a human summary (the JSON one went to ``stats_out``)."""
    if "out" in summary:
        print(f"recorded {summary['total']} messages, {summary['bytes'] / 1e6:.1f} MB, "
              f"{summary['elapsed_s']:.1f} s -> {summary['out']}")
        counts = summary["messages"]
    else:
        print(f"replayed {summary['total']} messages from {summary['recording']} on "
              f"{summary['to']}: {summary['passes']} pass(es), {summary['elapsed_s']:.1f} s, "
              f"max lateness {summary['max_late_s'] * 1e3:.1f} ms")
        counts = summary["sent"]
    print("  " + ("  ".join(f"{t}: {n}" for t, n in counts.items()) or "(none)"))
    if summary.get("damaged"):
        print(f"  damaged records skipped: {summary['damaged']} (see the log; --strict fails "
              "on them)")
    if "out" in summary:
        drops = ", ".join(f"{k} {n}" for k, n in summary["dropped"].items() if n) or "none"
        bad = ", ".join(f"{k} {n}" for k, n in summary["bad"].items()) or "none"
        print(f"  drops (sequence gaps): {summary['total_dropped']} ({drops}); "
              f"bad messages: {bad}")


def _fail(name: str, exc: Exception, code: int) -> int:
    print(f"cortexcast {name}: error: {exc}", file=sys.stderr)
    return code


def check_recording(path: str) -> int:
    """Print the health of recording ``path``; 0 when healthy, 1 when damaged or unreadable."""
    try:
        reader = RecordingReader(path)
    except RecordingError as exc:
        return _fail("record", exc, 1)
    with reader:
        bad = reader.check()
        spans = [(off, n, "skipped by the scan") for off, n in reader.damaged_spans]
        spans += [(off, n, f"record {i}: {err}") for i, off, n, err in bad]
        healthy = not spans and not reader.tail_bytes
        print(f"{path}: {'healthy' if healthy else 'DAMAGED'}")
        print(f"  records: {len(reader)} ({len(reader) - len(bad)} intact), "
              f"{reader.duration:.1f} s")
        print("  topics: " + ("  ".join(f"{t}: {n}" for t, n in reader.counts().items())
                              or "(none)"))
        print(f"  index: {reader.index_source}")
        print(f"  damaged spans: {len(spans)}")
        for off, n, why in sorted(spans):
            print(f"    byte offset {off}, {n} bytes ({why})")
        if reader.tail_bytes:
            print(f"  truncated tail: {reader.tail_bytes} bytes ignored")
    return 0 if healthy else 1


def run_record(args: argparse.Namespace) -> int:
    """Entry point of ``cortexcast record``."""
    setup_logging("record", getattr(args, "log_level", "INFO"))
    if getattr(args, "check", None):
        return check_recording(args.check)
    overrides = {"endpoints": args.endpoints, "topics": args.topics, "out": args.out,
                 "duration_s": args.duration, "fsync_s": args.fsync, "overwrite": args.overwrite,
                 "hwm": args.hwm, "stats_out": args.stats_out}
    try:
        settings = load_settings(RecordSettings, args.config, "record", overrides)
        sockets = sockets_for(args.config)
    except ConfigError as exc:
        return _fail("record", exc, 2)
    try:
        summary = record(settings, sockets=sockets)
    except (RecordingError, StreamError) as exc:
        return _fail("record", exc, 1)
    _finish(summary)
    return 0


def run_replay(args: argparse.Namespace) -> int:
    """Entry point of ``cortexcast replay``."""
    setup_logging("replay", getattr(args, "log_level", "INFO"))
    overrides = {"recording": args.file, "to": args.to, "speed": args.speed,
                 "fast": args.fast if args.speed is None else False,  # --speed beats config fast
                 "topics": args.topics, "clock": args.clock,
                 "loop": args.loop, "wait_subscribers": args.wait_subscribers,
                 "wait_timeout_s": args.wait_timeout, "hwm": args.hwm,
                 "linger_s": args.linger, "shift_stamps": args.shift_stamps,
                 "strict": args.strict, "stats_out": args.stats_out}
    try:
        settings = load_settings(ReplaySettings, args.config, "replay", overrides)
        sockets = sockets_for(args.config)
    except ConfigError as exc:
        return _fail("replay", exc, 2)
    try:
        summary = replay(settings, sockets=sockets)
    except (RecordingError, StreamError) as exc:
        return _fail("replay", exc, 1)
    _finish(summary)
    return 0


def register_record(subparsers: Any) -> None:
    """Add ``record`` to a ``cortexcast`` subparsers object."""
    p = subparsers.add_parser(
        "record", help="record streams to a crash-safe file",
        description="Subscribe to streams and append every message, exactly as received, to a "
                    "recording (FILE plus its index FILE.idx). A killed recorder loses at most "
                    "the message it was writing. Stops on Ctrl-C/SIGTERM or after --duration "
                    "and prints messages per topic, drops (sequence gaps) and bytes.")
    p.add_argument("--from", dest="endpoints", action="append", metavar="ENDPOINT",
                   help="endpoint to subscribe to; repeat for several (default from config, "
                        "else tcp://127.0.0.1:5555)")
    p.add_argument("--topics", type=_csv, metavar="T1,T2",
                   help="comma-separated topics (prefix match; default frames,sync,stimulus)")
    p.add_argument("--out", metavar="FILE", help="recording to create (required here or in config)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace FILE if it exists")
    p.add_argument("--fsync", type=float, metavar="S", help="seconds between fsyncs (default 1)")
    p.add_argument("--hwm", type=int, metavar="N", help="receive high-water mark (default 1000)")
    p.add_argument("--stats-out", metavar="JSON", help="write the summary here too")
    p.add_argument("--config", metavar="TOML", help="config file; its [record] table is used")
    p.add_argument("--check", metavar="FILE",
                   help="record nothing: print FILE's health (records, topics, damaged spans, "
                        "index) and exit 0 if healthy, 1 if damaged")
    p.set_defaults(func=run_record)


def register_replay(subparsers: Any) -> None:
    """Add ``replay`` to a ``cortexcast`` subparsers object."""
    p = subparsers.add_parser(
        "replay", help="publish a recording again",
        description="Publish a recording's messages again, with their recorded topic, seq, "
                    "source and stamps plus a replay.pub stamp, at the recorded pace (times "
                    "relative to the first message, no drift) or as fast as possible.")
    p.add_argument("file", nargs="?", metavar="FILE", help="recording to replay")
    p.add_argument("--to", metavar="ENDPOINT",
                   help="endpoint to bind and publish on (default tcp://127.0.0.1:5555)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, metavar="X",
                      help="multiple of the recorded pace (default 1.0)")
    pace.add_argument("--fast", action="store_true", default=None,
                      help="as fast as possible, ignoring the recorded pace")
    p.add_argument("--clock", choices=("recv", "t_acq"),
                   help="pace by receive times (default) or by acquisition times")
    p.add_argument("--topics", type=_csv, metavar="T1,T2",
                   help="comma-separated topics to replay (exact; default all)")
    p.add_argument("--loop", action="store_true", default=None, help="start again at the end")
    p.add_argument("--wait-subscribers", type=int, metavar="N",
                   help="first wait until each replayed topic has N subscribers")
    p.add_argument("--wait-timeout", type=float, metavar="S",
                   help="give up waiting for subscribers after S seconds (default 10)")
    p.add_argument("--hwm", type=int, metavar="N", help="send high-water mark (default 1000)")
    p.add_argument("--linger", type=float, metavar="S",
                   help="keep the socket open S seconds after the end (default 0.5)")
    p.add_argument("--shift-stamps", action="store_true", default=None,
                   help="move recorded stamps to now, so downstream latencies stay meaningful")
    p.add_argument("--strict", action="store_true", default=None,
                   help="fail (exit 1) on a damaged record instead of skipping it")
    p.add_argument("--stats-out", metavar="JSON", help="write the summary here too")
    p.add_argument("--config", metavar="TOML", help="config file; its [replay] table is used")
    p.set_defaults(func=run_replay)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cortexcast.stream.record_cli record|replay ...`` (until cortexcast/cli.py has them)."""
    parser = argparse.ArgumentParser(prog="python -m cortexcast.stream.record_cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register_record(sub)
    register_replay(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
