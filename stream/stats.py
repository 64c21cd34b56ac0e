"""What a subscriber has seen of each stream: counters per (source, topic)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamStats:
    """What a subscriber has seen, per (source, topic)."""

    received: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    bad: Counter = field(default_factory=Counter)
    restarted: Counter = field(default_factory=Counter)  # sequence went back (restart or fake)
    skipped: int = 0  # messages deliberately passed over by recv_latest

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": {"/".join(k): v for k, v in self.received.items()},
            "dropped": {"/".join(k): v for k, v in self.dropped.items()},
            "restarted": {"/".join(k): v for k, v in self.restarted.items()},
            "bad": dict(self.bad),
            "skipped": self.skipped,
            "total_dropped": sum(self.dropped.values()),
            # Imaging frames lost: what an operator means by "drops" (a stalled consumer
            # also misses each frame's sync; counting both doubled the figure).
            "frames_dropped": sum(n for (_, topic), n in self.dropped.items()
                                  if topic == "frames"),
        }
