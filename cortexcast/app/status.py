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

from cortexcast.display.access import is_wildcard
from cortexcast.stream.pubsub import Subscriber
from cortexcast.stream.security import SecuritySettings
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
    """The live status line of ``up``: producers' heartbeats (as a CURVE client when the
    config has keys) and the display's ``/api/stats`` (with its token when it needs one)."""

    def __init__(self, settings: dict[str, Any], quiet: bool = False,
                 security: SecuritySettings | None = None,
                 display_token: str | None = None) -> None:
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        endpoints = [connect_endpoint(s.publish) for n, s in settings.items()
                     if n in ("daq", "decoder")]
        self._hb = (Subscriber(endpoints, [], name="status", security=security)
                    if endpoints else None)
        disp = settings.get("display")
        host = "127.0.0.1" if disp is not None and is_wildcard(disp.host) else \
            getattr(disp, "host", "")
        host = f"[{host}]" if ":" in host else host
        self._stats_url = (f"http://{host}:{disp.port}/api/stats"
                           if disp is not None and not disp.headless else None)
        self._headers = {"Authorization": f"Bearer {display_token}"} if display_token else {}
        self._ticks = 0
        self.supervisor: Supervisor | None = None
        """Set by ``run_stack``: its restarts show on the status line."""

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def event(self, text: str) -> None:
        """A restart or hang, as it happens: on its own line, even over the status line."""
        if not self.quiet:
            print(("\r" + " " * 110 + "\r" if self.tty else "") + text, flush=True)

    def restarts_text(self) -> str:
        """`` | restarts: display 1 (down 0.4 s)`` or "" when nothing was restarted."""
        if self.supervisor is None:
            return ""
        parts = []
        for name, r in self.supervisor.restarts().items():
            last = r["events"][-1]
            state = ("down" if last.get("down_s") is None and last.get("action") == "restart"
                     else f"down {r['down_s']:.1f} s")
            parts.append(f"{name} {r['restarts']}x ({last['cause']}, {state})")
        return " | restarts: " + ", ".join(parts) if parts else ""

    def _display_stats(self) -> dict[str, Any]:
        if self._stats_url is None:
            return {}
        try:
            request = urllib.request.Request(self._stats_url, headers=self._headers)
            with urllib.request.urlopen(request, timeout=0.2) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return {}

    def line(self) -> str:
        return self._line() + self.restarts_text()

    def _line(self) -> str:
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


def _total(sup: Supervisor, name: str, key: str, sub: str | None = None) -> Any:
    """``stats[key]`` (or ``stats[key][sub]``) summed over every incarnation of ``name``
    that wrote stats (one killed by SIGKILL wrote none: then a lower bound); None if none."""
    child = sup.children.get(name)
    if child is None:
        return None
    values = []
    for st in child.all_stats():
        v = (st or {}).get(key)
        v = v.get(sub) if sub is not None and isinstance(v, dict) else v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values.append(v)
    return sum(values) if values else None


def print_summary(sup: Supervisor, reason: str, quiet: bool = False) -> dict[str, Any]:
    """Collect each process's stats file into one summary; print it as a table.

    A restarted process has one stats file per incarnation: counts are summed over them,
    ``processes`` holds the latest, ``incarnations`` all, ``restarts`` why and how long
    each was down.
    """
    stats = {n: c.stats() for n, c in sup.children.items()}
    dec = stats.get("decoder") or {}
    disp = stats.get("display") or {}
    restarts = sup.restarts()
    summary: dict[str, Any] = {
        "reason": reason,
        "failed": sup.failed,
        "frames_acquired": _total(sup, "daq", "published", "frames"),
        "frames_decoded": _total(sup, "decoder", "reconstructions_out"),
        "frames_displayed": _total(sup, "display", "shown"),
        "reconstructions_received": _total(sup, "display", "received", "reconstruction"),
        "restarts": restarts,
        "incarnations": {n: c.all_stats() for n, c in sup.children.items() if c.incarnation},
        "drops": {"decoder_in": (dec.get("stream") or {}).get("frames_dropped"),
                  "display_in": disp.get("dropped")},
        "bad_messages": {"decoder": (dec.get("stream") or {}).get("bad"),
                         "display": disp.get("bad")},
        "latency_ms": disp.get("latency_ms", {}),
        "latency_cdf_ms": disp.get("latency_cdf_ms", {}),
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
    for name, r in restarts.items():
        print(f"!! {name}: {len(r['events'])} death(s), restarted {r['restarts']} time(s), "
              f"down {r['down_s']:.2f} s in all (log: {sup.children[name].log_path})")
        for e in r["events"]:
            down = e.get("down_s")
            print(f"     at {e['at_s']:7.2f} s: {e['cause']} -> {e['action']}"
                  + (f", down {down:.2f} s (until its {e.get('up_by', 'restart')})"
                     if down is not None else ""))
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
