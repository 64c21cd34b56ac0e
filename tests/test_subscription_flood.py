"""A peer flooding a publisher with subscriptions: refused, counted, and off the send path.

Issue 10, item 4: an XSUB sending 200,000 distinct subscriptions to the daq grew it by
500 MB and stalled acquisition (publish p99 785 ms). The publisher now applies only
subscriptions to what it serves, and the daq's sends go through a thread
(``cortexcast bench --flood`` measures the latency).
"""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from polling import wait_for
from cortexcast.stream.pubsub import Publisher, Subscriber
from cortexcast.stream.subscriptions import SubscriptionBook


def test_book_accepts_prefixes_of_its_topics_only() -> None:
    book = SubscriptionBook(("frames", "sync"), always=("_hb",))
    assert book.decide(b"\x01frames") and book.decide(b"\x01fr") and book.decide(b"\x01")
    assert book.decide(b"\x01_hb")
    assert not book.decide(b"\x01junk") and not book.decide(b"\x01framesX")
    assert book.refused == 2
    assert book.count("frames") == 3  # "frames", "fr" and "" all match it
    assert not book.decide(b"\x00junk")  # undoing a refused one is a no-op
    assert book.decide(b"\x00fr") and book.count("frames") == 2
    assert not book.decide(b"") and not book.decide(b"\x07x")  # not a subscription message


def test_book_without_topics_caps_distinct_prefixes() -> None:
    book = SubscriptionBook(None, max_topics=4)
    accepted = [book.decide(b"\x01t%d" % i) for i in range(10)]
    assert accepted == [True] * 4 + [False] * 6
    assert book.decide(b"\x01t0")  # one already served may be asked for again
    assert book.refused == 6 and len(book._counts) == 4


@pytest.mark.parametrize("background", [False, True])
def test_flooding_peer_is_refused_while_a_subscriber_gets_every_frame(
        zmq_ctx, background: bool) -> None:
    pub = Publisher("tcp://127.0.0.1:0", "daq", context=zmq_ctx, heartbeat_s=0.05,
                    topics=("frames", "sync"), background=background, hwm=1000)
    sub = Subscriber(pub.address, ["frames"], context=zmq_ctx, hwm=1000)
    flood = zmq_ctx.socket(zmq.XSUB)
    flood.setsockopt(zmq.SNDHWM, 0)  # the flooder queues every one (it drops past its HWM)
    try:
        assert pub.wait_for_subscribers({"frames": 1}, timeout_s=5)
        flood.connect(pub.address)
        n_junk = 5000
        for i in range(n_junk):
            flood.send(b"\x01junk-%06d" % i)
        flood.send(b"\x01sync")  # a topic it does serve: applied
        frames = 200
        for i in range(frames):
            pub.publish("frames", "frame", [np.full(4, i, np.uint16)], t_acq=0.0)
            pub.heartbeat_if_due()
        got = [sub.recv(timeout_s=5) for _ in range(frames)]
        assert [m.seq for m in got] == list(range(frames))
        wait_for(lambda: pub.heartbeat_if_due() is not None and
                 pub.refused_subscriptions == n_junk, what="every junk subscription refused")
        wait_for(lambda: pub.subscribers("sync") == 1, what="the served topic applied")
        assert pub.subscribers("junk-000001") == 0
        assert len(pub._book._counts) <= 4  # bounded, whatever the peer sent
        assert pub.queue_dropped == 0
    finally:
        flood.close(0)
        sub.close()
        pub.close()


def test_background_publisher_sends_queued_messages_before_closing(zmq_ctx) -> None:
    pub = Publisher("tcp://127.0.0.1:0", "daq", context=zmq_ctx, topics=("frames",),
                    background=True, hwm=500)
    sub = Subscriber(pub.address, ["frames"], context=zmq_ctx, hwm=500)
    assert pub.wait_for_subscribers({"frames": 1}, timeout_s=5)
    for i in range(300):
        pub.publish("frames", "frame", [np.zeros(16, np.uint8)], t_acq=0.0)
    pub.close(linger_ms=1000)
    got = [sub.recv(timeout_s=5) for _ in range(300)]
    assert [m.seq for m in got] == list(range(300))
    sub.close()


def test_heartbeat_gaps_are_not_counted_as_drops(zmq_ctx) -> None:
    from cortexcast.stream.message import Message

    pub = Publisher("tcp://127.0.0.1:0", "daq", context=zmq_ctx)
    sub = Subscriber(pub.address, ["frames"], context=zmq_ctx)
    assert pub.wait_for_subscribers({"frames": 1}, timeout_s=5)
    for seq in (0, 1, 7):  # heartbeats 2..6 lost while the consumer was stopped
        pub.send(Message("_hb", "heartbeat", seq, "daq", 0.0, meta={"status": {}}))
    pub.send(Message("frames", "frame", 0, "daq", 0.0))
    assert sub.recv(timeout_s=5).topic == "frames"
    assert sub.stats.as_dict()["total_dropped"] == 0


def test_frames_dropped_counts_imaging_frames_only(zmq_ctx) -> None:
    """A consumer stalled for 3 frames misses their syncs and heartbeats too: 3 frames lost."""
    from cortexcast.stream.message import Message

    pub = Publisher("tcp://127.0.0.1:0", "daq", context=zmq_ctx)
    sub = Subscriber(pub.address, ["frames", "sync"], context=zmq_ctx)
    assert pub.wait_for_subscribers({"frames": 1, "sync": 1}, timeout_s=5)
    for seq in (0, 1, 5):
        pub.send(Message("sync", "sync", seq, "daq", 0.0, meta={"imaging_frame": seq}))
        pub.send(Message("frames", "frame", seq, "daq", 0.0))
        pub.send(Message("_hb", "heartbeat", seq, "daq", 0.0, meta={"status": {}}))
    got = [sub.recv(timeout_s=5) for _ in range(6)]
    assert all(m is not None for m in got)
    stats = sub.stats.as_dict()
    assert stats["frames_dropped"] == 3 and stats["total_dropped"] == 6
    sub.close()
    pub.close()
    sub.close()
    pub.close()
