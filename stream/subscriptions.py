"""What a publisher's subscribers may ask for, decided by the publisher.

A subscription is a topic prefix a peer sends to the publisher's XPUB socket. ZeroMQ
keeps every distinct one in a trie, per peer, and matches every outgoing message
against it, so a peer sending 200,000 distinct prefixes costs the publisher hundreds of
MB and stalls its sends. The publisher therefore runs its socket in manual mode
(``XPUB_MANUAL``): each subscription arrives as a message and is applied only when
:meth:`SubscriptionBook.decide` accepts it. A publisher that knows its topics accepts
only prefixes of them (and of the heartbeat topic); one that does not accepts at most
``max_topics`` distinct prefixes. What it refuses is counted, logged at most once a
minute, and never enters the matching trie.

What libzmq cannot bound: it remembers each refused prefix of a connected peer until
that peer disconnects (to report the unsubscriptions). A peer that is not allowed to
connect at all is the full answer: CURVE keys (``[security]``, stream/security.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable, Iterable

log = logging.getLogger(__name__)

SUBSCRIBE, UNSUBSCRIBE = 1, 0
#: Refused subscriptions are logged at most once per this many seconds.
REFUSED_LOG_INTERVAL_S = 60.0


class SubscriptionBook:
    """Counts live subscriptions per topic prefix and decides which ones to apply.

    Thread-safe: a publisher's send thread updates it, the publisher's owner reads
    :meth:`count` and waits on :meth:`wait_changed`.
    """

    def __init__(self, topics: Iterable[str] | None, *, always: Iterable[str] = (),
                 max_topics: int = 64, name: str = "publisher",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topics = None if topics is None else tuple({*topics, *always})
        self.max_topics = max_topics
        self.name = name
        self.refused = 0
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._changed = threading.Condition()
        self._logged_at: float | None = None
        self._unlogged = 0

    def decide(self, event: bytes) -> bool:
        """Record one (un)subscription message; True when it is to be applied to the socket."""
        if not event or event[0] not in (SUBSCRIBE, UNSUBSCRIBE):
            return False
        prefix = event[1:].decode(errors="replace")
        with self._changed:
            if event[0] == UNSUBSCRIBE:
                if self._counts.get(prefix, 0) <= 0:
                    return False  # one we refused (or never saw): nothing to undo
                self._counts[prefix] -= 1
                if self._counts[prefix] == 0:
                    del self._counts[prefix]
            elif self._allowed(prefix):
                self._counts[prefix] += 1
            else:
                self.refused += 1
                self._log_refused(prefix)
                return False
            self._changed.notify_all()
        return True

    def _allowed(self, prefix: str) -> bool:
        if self.topics is not None:
            return any(topic.startswith(prefix) for topic in self.topics)
        return prefix in self._counts or len(self._counts) < self.max_topics

    def _log_refused(self, prefix: str) -> None:
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < REFUSED_LOG_INTERVAL_S:
            self._unlogged += 1
            return
        more = f"; {self._unlogged} more since the last such line" if self._unlogged else ""
        self._logged_at, self._unlogged = now, 0
        what = (f"it publishes only {', '.join(sorted(self.topics))}" if self.topics is not None
                else f"it already serves {self.max_topics} distinct prefixes")
        log.warning("%s: refused a subscription to %r: %s%s (logged at most once a minute; "
                    "all counted in 'refused_subscriptions')", self.name, prefix[:40], what, more)

    def count(self, topic: str) -> int:
        """Live subscriptions whose prefix matches ``topic``."""
        with self._changed:
            return sum(n for prefix, n in self._counts.items() if topic.startswith(prefix))

    def wait_changed(self, timeout_s: float) -> None:
        """Block until a subscription is applied or undone, or ``timeout_s`` passes."""
        with self._changed:
            self._changed.wait(timeout_s)
