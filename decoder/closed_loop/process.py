"""The closed-loop process: reconstructions in, triggers out, every firing logged.

Subscribes to the decoder's ``reconstruction`` topic, runs every rule on every
reconstruction (:class:`ClosedLoop`, a plain object), and hands each firing
to its output's worker thread (:mod:`cortexcast.decoder.closed_loop.outputs.worker`), so a slow device
never holds up the next reconstruction. When an output has acted, the firing
is written as one JSON line to ``log`` and published on topic ``loop`` (kind
``event``) with the reconstruction's stamps plus ``loop.recv``,
``loop.decide`` and ``loop.out`` — its latency from the imaging frame
(``daq.acq``) to the trigger.

Config (``[loop]`` of a rig config, run by ``cortexcast loop`` or under
``cortexcast up`` with "loop" in ``[stack] processes``)::

    [loop]
    reconstruction_from = "tcp://127.0.0.1:5556"
    publish = "tcp://127.0.0.1:5557"
    log = "loop.jsonl"

    [[loop.outputs]]
    name = "laser"
    kind = "ni-ttl"
    ni = { line = "Dev1/port0/line0", pulse_ms = 5.0 }

    [[loop.rules]]
    name = "saw-target"
    kind = "correlation"
    target = "target.png"
    threshold = 0.5
    frames = 3
    refractory_s = 2.0
    output = "laser"
"""

from __future__ import annotations

import json
import logging
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cortexcast.core.config import path_field
from cortexcast.core.events import LoopEvent, Reconstruction, from_message, topics_of
from cortexcast.core.message import Message, MessageError
from cortexcast.core.runtime import ProcessRun, StopSignals, percentiles_ms
from cortexcast.decoder.closed_loop.outputs.factory import make_output
from cortexcast.decoder.closed_loop.outputs.output import OutputSettings
from cortexcast.decoder.closed_loop.outputs.worker import TriggerWorker
from cortexcast.decoder.closed_loop.rules import Rule, RuleSettings, build_rule
from cortexcast.stream.pubsub import Sockets, Subscriber

log = logging.getLogger("loop")

#: The stamp a firing's latency is measured from (the imaging frame's acquisition),
#: with the publish stamp as a fallback for producers that do not stamp acquisition.
FROM_STAGES = ("daq.acq", "daq.pub")


@dataclass(frozen=True)
class LoopSettings:
    reconstruction_from: str = "tcp://127.0.0.1:5556"
    """The decoder's endpoint (topic `reconstruction`)."""
    publish: str = "tcp://127.0.0.1:5557"
    """Endpoint this process binds to publish firings on topic `loop`."""
    log: str = path_field("loop.jsonl")
    """Firing log, one JSON object per line (appended; relative to the config's folder)."""
    rules: tuple[RuleSettings, ...] = ()
    """The rules, one ``[[loop.rules]]`` table each."""
    outputs: tuple[OutputSettings, ...] = ()
    """The outputs the rules drive, one ``[[loop.outputs]]`` table each."""
    hwm: int = 1000
    """Receive queue (messages): rules need every reconstruction, so it is generous."""
    duration_s: float | None = None
    """Stop after this many seconds (None: until SIGTERM/SIGINT)."""
    stats_out: str | None = path_field(None)
    """Write counters and latency percentiles as JSON here on exit."""

    def __post_init__(self) -> None:
        if not self.rules:
            raise ValueError("no rules: add at least one [[loop.rules]] table")
        names = [o.name for o in self.outputs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"two outputs are called {sorted(dup)[0]!r}")
        rule_names = [r.name for r in self.rules]
        dup = {n for n in rule_names if rule_names.count(n) > 1}
        if dup:
            raise ValueError(f"two rules are called {sorted(dup)[0]!r}")
        for r in self.rules:
            if r.output not in names:
                raise ValueError(f"rule {r.name!r} drives output {r.output!r}, which is not "
                                 f"among [[loop.outputs]] ({', '.join(names) or 'none'})")
        if self.hwm < 1:
            raise ValueError("hwm must be >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")


def latency_ms(stamps: dict[str, int], t_out_ns: int | None) -> dict[str, float | None]:
    """From the imaging frame's stamp to the decision and to the output (ms)."""
    t0 = next((stamps[s] for s in FROM_STAGES if s in stamps), None)
    decide = stamps.get("loop.decide")

    def ms(a: int | None, b: int | None) -> float | None:
        return None if a is None or b is None else round((b - a) / 1e6, 4)

    return {"frame_to_output": ms(t0, t_out_ns), "frame_to_decision": ms(t0, decide),
            "decision_to_output": ms(decide, t_out_ns),
            "frame_to_reconstruction": ms(t0, stamps.get("decoder.pub"))}


class ClosedLoop:
    """Rules over reconstructions; ``submit(output, pending)`` hands firings on. No sockets."""

    def __init__(self, rules: list[Rule], submit: Callable[[str, dict[str, Any]], bool]) -> None:
        self.rules = rules
        self.submit = submit
        self.reconstructions = 0
        self.bad = 0

    def on_reconstruction(self, msg: Message) -> list[dict[str, Any]]:
        """Run every rule on one reconstruction; returns the firings it decided (pending)."""
        self.reconstructions += 1
        try:
            recon = from_message(msg)
        except MessageError:
            self.bad += 1
            return []
        if not isinstance(recon, Reconstruction):
            self.bad += 1
            return []
        frame = recon.pixels
        out = []
        for rule in self.rules:
            firing = rule.update(frame, msg.t_acq)
            if firing is None:
                continue
            stamps = msg.stamps + (("loop.decide", time.monotonic_ns()),)
            pending = {
                "rule": firing.rule, "output": firing.output, "value": round(firing.value, 6),
                "threshold": rule.threshold, "frames": firing.streak, "t_acq": msg.t_acq,
                "imaging_frame": recon.imaging_frame, "stim_frame": recon.stim_frame,
                "stamps": stamps,
            }
            pending["queued"] = self.submit(firing.output, pending)
            out.append(pending)
        return out


def firing_record(pending: dict[str, Any], t_out_ns: int | None,
                  error: str | None) -> dict[str, Any]:
    """What the log line and the `loop` message say about one firing."""
    stamps = dict(pending["stamps"])
    if t_out_ns is not None:
        stamps["loop.out"] = t_out_ns
    rec = {k: v for k, v in pending.items() if k not in ("stamps", "queued")}
    rec.update(ok=error is None, error=error, wall_time=time.time(),
               latency_ms=latency_ms(stamps, t_out_ns), stamps=stamps)
    return rec


class FiringLog:
    """Appends one JSON object per line; each line is flushed as it is written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def run_loop(settings: LoopSettings, *, sockets: Sockets = Sockets(),
             stop: StopSignals | None = None) -> int:
    """Run the rules on every reconstruction until ``duration_s`` or a stop (ProcessRun)."""
    latencies: list[int] = []
    done: queue.SimpleQueue = queue.SimpleQueue()
    with ProcessRun("loop", settings.stats_out, stop=stop) as run:
        counts = run.counts
        counts.update(reconstructions_in=0, firings=0, fired_ok=0, failed=0, dropped_busy=0,
                      per_rule={})
        sub: Subscriber | None = None
        run.stats_fn = lambda: {**counts,
                                "stream": sub.stats.as_dict() if sub is not None else {},
                                "frame_to_output_ms": percentiles_ms(latencies)}
        workers: dict[str, TriggerWorker] = {}
        rules = [build_rule(r) for r in settings.rules]
        used = {r.output for r in settings.rules}
        firing_log = run.own(FiringLog(settings.log))
        pub = run.own(sockets.publisher(settings.publish, "loop", what="[loop] publish",
                                        topics=topics_of(LoopEvent)))

        def finish(pending: dict[str, Any], t_out: int | None, error: str | None) -> None:
            rec = firing_record(pending, t_out, error)
            firing_log.write(rec)
            meta = {k: v for k, v in rec.items() if k != "stamps"}
            pub.publish_event(LoopEvent(rec["t_acq"], meta), stamps=tuple(rec["stamps"].items()),
                              stage="loop.pub")
            if error is None:
                counts["fired_ok"] += 1
                if rec["latency_ms"]["frame_to_output"] is not None:
                    latencies.append(int(rec["latency_ms"]["frame_to_output"] * 1e6))
            else:
                counts["failed"] += 1
                log.error("%s -> %s failed: %s", rec["rule"], rec["output"], error)

        def drain() -> None:
            while True:
                try:
                    finish(*done.get_nowait())
                except queue.Empty:
                    return

        run.own(None, close=drain)  # what the outputs did while we stopped (after they close)
        for o in settings.outputs:
            if o.name in used:
                w = TriggerWorker(make_output(o), done, o.queue)
                w.start()  # opens the device: a missing one fails here, before anything runs
                workers[o.name] = run.own(w)
        loop = ClosedLoop(rules, lambda output, pending: workers[output].submit(pending))
        sub = run.own(sockets.subscriber(settings.reconstruction_from, ["reconstruction"],
                                         hwm=settings.hwm, name="loop"))
        log.info("%d rule(s) on %s -> %s; firings logged to %s", len(rules),
                 settings.reconstruction_from, ", ".join(o.describe() for o in settings.outputs
                                                          if o.name in used), settings.log)
        until = None if settings.duration_s is None else time.monotonic() + settings.duration_s
        while not run.stopping and (until is None or time.monotonic() < until):
            msg = sub.recv(timeout_s=0.05)
            if msg is not None and msg.topic == "reconstruction":
                msg = msg.stamped("loop.recv")
                for pending in loop.on_reconstruction(msg):
                    counts["firings"] += 1
                    per = counts["per_rule"]
                    per[pending["rule"]] = per.get(pending["rule"], 0) + 1
                    if not pending["queued"]:
                        counts["dropped_busy"] += 1
                        finish(pending, None, f"output {pending['output']} busy: firing dropped")
                counts["reconstructions_in"] = loop.reconstructions
            drain()
            pub.heartbeat_if_due()
            pub.status.update(counts)
        else:
            run.reason = "duration reached" if not run.stopping else run.reason
    return 0
