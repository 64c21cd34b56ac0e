"""Publisher/Subscriber over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from cortexcast.stream.message import Message, encode
from cortexcast.stream.pubsub import Publisher, StreamError, Subscriber


def _pair(ctx, topics=("frames",), hwm=100):
    pub = Publisher("tcp://127.0.0.1:0", "daq", context=ctx, hwm=hwm, heartbeat_s=0.05)
    sub = Subscriber(pub.address, topics, context=ctx, hwm=hwm)
    assert pub.wait_for_subscribers({t: 1 for t in topics}, timeout_s=5)
    return pub, sub


def test_handshake_then_every_message_arrives_in_order(zmq_ctx) -> None:
    pub, sub = _pair(zmq_ctx)
    for i in range(50):
        pub.publish("frames", "frame", [np.full((4, 4), i, np.uint16)], t_acq=i / 30)
    got = [sub.recv(timeout_s=2) for _ in range(50)]
    assert [m.seq for m in got] == list(range(50))
    assert all(int(m.arrays[0][0, 0]) == m.seq for m in got)
    assert got[0].stamp("daq.pub") is not None
    assert sub.stats.as_dict()["total_dropped"] == 0


def test_wait_for_subscribers_times_out_without_one(zmq_ctx) -> None:
    pub = Publisher("tcp://127.0.0.1:0", "daq", context=zmq_ctx)
    assert not pub.wait_for_subscribers({"frames": 1}, timeout_s=0.2)


def test_subscriber_only_gets_its_topics(zmq_ctx) -> None:
    pub, sub = _pair(zmq_ctx, topics=("sync",))
    pub.publish("frames", "frame", [np.zeros(3, np.uint16)], t_acq=0)
    pub.publish("sync", "sync", t_acq=0, meta={"imaging_frame": 0, "stim_frame": 3})
    msg = sub.recv(timeout_s=2)
    assert msg.topic == "sync" and msg.meta["stim_frame"] == 3
    assert sub.recv(timeout_s=0.1) is None


def test_sequence_gaps_are_counted_as_drops(zmq_ctx) -> None:
    pub, sub = _pair(zmq_ctx)
    for seq in (0, 1, 2, 5, 6, 10):
        pub.send(Message("frames", "frame", seq, "daq", 0.0))
    got = [sub.recv(timeout_s=2).seq for _ in range(6)]
    assert got == [0, 1, 2, 5, 6, 10]
    assert sub.stats.dropped[("daq", "frames")] == 2 + 3


def test_slow_consumer_never_blocks_publisher_and_losses_are_counted(zmq_ctx) -> None:
    pub, sub = _pair(zmq_ctx, hwm=5)
    n = 2000
    payload = np.zeros(64 * 1024, np.uint8)
    for i in range(n):  # would block forever here if PUB could block
        pub.publish("frames", "frame", [payload], t_acq=0)
    received = 0
    while sub.recv(timeout_s=0.5) is not None:
        received += 1
    dropped = sub.stats.dropped[("daq", "frames")]
    assert dropped > 0
    # Every message is either received or counted as dropped (tail losses are invisible
    # until a later message arrives, so send one more that gets through).
    pub.wait_for_subscribers({"frames": 1}, 1)
    pub.publish("frames", "frame", [payload], t_acq=0)
    assert sub.recv(timeout_s=2) is not None
    assert received + 1 + sub.stats.dropped[("daq", "frames")] == n + 1


def test_bad_messages_are_counted_and_skipped(zmq_ctx, caplog) -> None:
    raw = zmq_ctx.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    sub = Subscriber(f"tcp://127.0.0.1:{port}", ["frames"], context=zmq_ctx)
    good = encode(Message("frames", "frame", 0, "daq", 0.0, (np.ones(4, np.uint16),)))
    # handshake: resend a good message until the subscription is live
    for _ in range(200):
        raw.send_multipart(good)
        if sub.recv(timeout_s=0.02) is not None:
            break
    else:
        pytest.fail("subscriber never connected")
    raw.send_multipart([b"frames", b"\xc1\xc1"])
    raw.send_multipart([b"frames", b"\xc1\xc1"])
    raw.send_multipart([b"frames", bytes(good[1]), b"123"])
    raw.send_multipart([b"frames"])
    final = encode(Message("frames", "frame", 1000, "daq", 0.0, (np.ones(4, np.uint16),)))
    raw.send_multipart(final)
    while (m := sub.recv(timeout_s=2)) is not None and m.seq != 1000:
        pass
    assert m is not None and m.seq == 1000
    assert sub.stats.bad["bad_header"] == 2
    assert sub.stats.bad["bad_buffer"] == 1
    assert sub.stats.bad["malformed"] == 1
    assert sum("bad_header" in r.message for r in caplog.records) == 1  # logged once per kind
    raw.close(0)


def test_heartbeat_readiness_and_status(zmq_ctx) -> None:
    pub = Publisher("tcp://127.0.0.1:0", "daq", context=zmq_ctx, heartbeat_s=0.01)
    pub.status["frames_out"] = 42
    sub = Subscriber(pub.address, ["frames"], context=zmq_ctx)
    pub.wait_for_subscribers({"_hb": 1}, 5)
    for _ in range(500):
        pub.heartbeat_if_due()
        if sub.wait_ready(timeout_s=0.02):
            break
    assert sub.producer_alive("daq")
    assert sub.producer_status["daq"]["frames_out"] == 42
    assert sub.recv(timeout_s=0.05) is None  # heartbeats are not data


def test_recv_latest_keeps_newest_per_topic(zmq_ctx) -> None:
    pub, sub = _pair(zmq_ctx, topics=("stimulus", "reconstruction"))
    for i in range(5):
        pub.publish("stimulus", "stimulus", t_acq=i)
        pub.publish("reconstruction", "reconstruction", t_acq=i)
    latest = {}
    while len(latest) < 2 or latest["stimulus"].seq < 4 or latest["reconstruction"].seq < 4:
        got = sub.recv_latest(timeout_s=2)
        assert got, "timed out"
        latest.update(got)
    assert sub.stats.skipped > 0 or sum(sub.stats.received.values()) == 10


def test_bad_endpoint_is_a_clear_error() -> None:
    with pytest.raises(StreamError, match="must start with"):
        Publisher("localhost:5555", "daq")
    with pytest.raises(StreamError, match="cannot bind"):
        Publisher("tcp://256.1.1.1:5555", "daq")
