"""`cortexcast doctor`'s eye-tracker check: is the behaviour source of ``[daq.behavior]`` there,
and do its readings carry the channels the config maps?

It runs the daq's own behaviour source (UDP or LSL) for a few seconds and reads its counters,
so what the doctor reports is what the daq will see. Never raises: a missing pylsl, a port in
use or no eye tracker become FAIL / WARN lines with the fix.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cortexcast.app.rig_checks import Check, RigFacts

NAME = "eye tracker"


def check_behavior(facts: RigFacts, timeout_s: float) -> list[Check]:
    daq = facts.settings.get("daq")
    if daq is None or "behavior" not in getattr(daq, "sync", ()):
        return []
    from cortexcast.core.errors import CortexcastError
    from cortexcast.daq.behavior_source import make_behavior_source

    s = daq.behavior
    where = f"UDP {s.listen}" if s.mode == "udp" else f"LSL [{s.lsl_predicate()}]"
    try:
        source = make_behavior_source(s)
    except (CortexcastError, ImportError) as exc:
        return [Check(NAME, "FAIL", f"{where}: {exc}", "pip install 'cortexcast[lsl]'")]
    try:
        with source:
            status = _run_for(source, timeout_s)
    except (CortexcastError, OSError) as exc:
        fix = ("another program (a running daq?) holds the port: stop it, or change [daq.behavior]"
               " listen" if s.mode == "udp" else
               "map the channels the stream has ([daq.behavior] channels)")
        return [Check(NAME, "FAIL", f"{where}: {exc}", fix)]
    samples, bad = int(status.get("behavior_samples", 0)), int(status.get("behavior_bad", 0))
    missing = int(status.get("behavior_missing", 0))
    if samples:
        detail = f"{where}: {samples} readings in {timeout_s:g} s"
        if bad or missing:
            return [Check(NAME, "WARN", f"{detail}, {bad} malformed, {missing} without a mapped "
                          "channel", "check the tracker's field names against [daq.behavior] "
                          "channels (docs/rig.md, Eye tracker)")]
        return [Check(NAME, "OK", detail + ", every mapped channel present")]
    if bad:
        return [Check(NAME, "FAIL", f"{where}: {bad} datagram(s) not in the expected form",
                      "send JSON objects with the fields [daq.behavior] channels names")]
    return [Check(NAME, "WARN", f"{where}: no readings in {timeout_s:g} s",
                  "start the eye tracker (DeepLabCut-Live, Bonsai, FaceMap) and check that it "
                  f"publishes to {where}; the daq runs without it, marking syncs stale")]


def _run_for(source: Any, timeout_s: float) -> dict[str, Any]:
    """Read the source in a thread for ``timeout_s`` (or until a reading arrives)."""
    reader = threading.Thread(target=lambda: [None for _ in source.events()], daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not source.status().get("behavior_samples"):
        reader.join(0.05)  # polling with a timeout
    source.stop()
    reader.join(2.0)
    return source.status()
