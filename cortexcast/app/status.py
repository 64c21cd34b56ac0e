"""The supervisor's live status line and end-of-run summary.

The status line listens only to heartbeats (topic ``_hb``, which carry each
publisher's counters) and to the display's ``/api/stats``; it never
subscribes to the data streams, so watching costs the pipeline nothing.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.request
from typing import Any

from cortexcast.stream.pubsub import Subscriber
from cortexcast.app.supervisor import Supervisor


def connect_endpoint(bind_endpoint: str) -> str:
    """The address to connect to for an endpoint a process binds (``*``/0.0.0.0 -> loopback)."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if bind_endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + bind_endpoint[len(wildcard):]
    return bind_endpoint


def _fmt(x: Any, spec: str = ".1f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


class StatusBoard:
    def __init__(self, settings: dict[str, Any], quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        endpoints = [connect_endpoint(s.publish) for n, s in settings.items()
                     if n in ("daq", "decoder")]
        self._hb = Subscriber(endpoints, [], name="status") if endpoints else None
        disp = settings.get("display")
        self._stats_url = (f"http://{disp.host}:{disp.port}/api/stats"
                           if disp is not None and not disp.headless else None)
        self._ticks = 0

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def _display_stats(self) -> dict[str, Any]:
        if self._stats_url is None:
            return {}
        try:
            with urllib.request.urlopen(self._stats_url, timeout=0.2) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return {}

    def line(self) -> str:
        if self._hb is not None:
            self._hb.recv_all()
        st = self._hb.producer_status if self._hb is not None else {}
        daq, dec = st.get("daq", {}), st.get("decoder", {})
        line = (f"frames {daq.get('frames', '–')} → decoded "
                f"{dec.get('reconstructions_out', '–')}")
        if self._stats_url is None:  # headless display: its figures come in the summary
            return line + f" | decoder input drops {dec.get('drops', 0)} | display headless"
        disp = self._display_stats()
        e2e = disp.get("latency_ms", {}).get("end_to_end", {})
        return (line + f" → shown {disp.get('shown', '–')} | drops {dec.get('drops', 0)}"
                f"/{disp.get('dropped', 0)} | e2e p50 {_fmt(e2e.get('p50'))} "
                f"p99 {_fmt(e2e.get('p99'))} ms | r {_fmt(disp.get('correlation'), '.2f')}")

    def tick(self) -> None:
        self._ticks += 1
        if self.quiet:
            return
        if self.tty:
            print("\r" + self.line().ljust(110), end="", flush=True)
        elif self._ticks % 5 == 0:
            print(self.line(), flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            print()
        if self._hb is not None:
            self._hb.close()


def print_summary(sup: Supervisor, reason: str, quiet: bool = False) -> dict[str, Any]:
    """Collect each process's stats file into one summary; print it as a table."""
    stats = {n: c.stats() for n, c in sup.children.items()}
    daq = stats.get("daq") or {}
    dec = stats.get("decoder") or {}
    disp = stats.get("display") or {}
    summary: dict[str, Any] = {
        "reason": reason,
        "failed": sup.failed,
        "frames_acquired": (daq.get("published") or {}).get("frames"),
        "frames_decoded": dec.get("reconstructions_out"),
        "frames_displayed": disp.get("shown"),
        "reconstructions_received": disp.get("received", {}).get("reconstruction"),
        "drops": {"decoder_in": (dec.get("stream") or {}).get("total_dropped"),
                  "display_in": disp.get("dropped")},
        "bad_messages": {"decoder": (dec.get("stream") or {}).get("bad"),
                         "display": disp.get("bad")},
        "latency_ms": disp.get("latency_ms", {}),
        "decoder_busy_ms": dec.get("busy_ms"),
        "pixel_correlation": disp.get("correlation"),
        "resources": sup.resources(),
        "processes": stats,
    }
    if quiet:
        return summary
    print(f"\n== cortexcast summary ({reason}) ==")
    if sup.failed:
        for name in sup.failed:
            print(f"!! {name} failed; last lines of {sup.children[name].log_path}:")
            print(sup.children[name].log_tail())
    print(f"frames acquired {_fmt(summary['frames_acquired'], '')}, decoded "
          f"{_fmt(summary['frames_decoded'], '')}, displayed {_fmt(summary['frames_displayed'], '')}"
          f" (reconstructions received {_fmt(summary['reconstructions_received'], '')})")
    print(f"drops: decoder input {_fmt(summary['drops']['decoder_in'], '')}, display input "
          f"{_fmt(summary['drops']['display_in'], '')}; bad messages: {summary['bad_messages']}")
    lat = summary["latency_ms"]
    if lat:
        print(f"{'latency (ms)':<32}{'p50':>8}{'p99':>8}{'max':>8}{'n':>8}")
        for stage, v in lat.items():
            print(f"{stage:<32}{_fmt(v.get('p50'), '8.2f')}{_fmt(v.get('p99'), '8.2f')}"
                  f"{_fmt(v.get('max'), '8.2f')}{v.get('n', 0):>8}")
    print(f"running pixel correlation (stimulus vs reconstruction): "
          f"{_fmt(summary['pixel_correlation'], '.3f')}")
    rec = stats.get("record")
    if rec:
        topics = ", ".join(f"{k} {v}" for k, v in (rec.get("messages") or {}).items())
        print(f"recorded to {rec.get('out')}: {topics or 'nothing'} "
              f"({_fmt((rec.get('bytes') or 0) / 1e9, '.2f')} GB), dropped "
              f"{_fmt(rec.get('total_dropped'), '')}")
    loop = stats.get("loop")
    if loop:
        ms = loop.get("frame_to_output_ms") or {}
        print(f"closed loop: fired {loop.get('fired_ok', 0)}, failed {loop.get('failed', 0)}, "
              f"dropped (output busy) {loop.get('dropped_busy', 0)}; imaging frame -> output "
              f"p50 {_fmt(ms.get('p50'), '.1f')} / p99 {_fmt(ms.get('p99'), '.1f')} / "
              f"max {_fmt(ms.get('max'), '.1f')} ms")
    for name, r in summary["resources"].items():
        print(f"  {name:<8} cpu {r['cpu_s']:.1f} s ({r['cpu_percent']:.0f} %), "
              f"peak memory {r['peak_rss_mb']:.0f} MB")
    return summary
