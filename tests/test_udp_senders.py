"""UDP datagrams (stimulus identity, eye tracker) are read only from allowed senders.

Anyone who can reach the port can send a datagram, so the listener checks the sender's
address against ``allowed_senders`` (default: this computer only). Linux lets a socket
bind any 127.x address, which stands in for a second computer here.
"""

from __future__ import annotations

import socket
import sys

import pytest

from polling import wait_for
from cortexcast.daq.behavior_source.settings import BehaviorSettings
from cortexcast.daq.stimulus_identity import StimulusIdentitySource, StimulusSettings
from cortexcast.daq.udp_listener import UdpListener, parse_senders

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="binds 127.0.0.2 as a second sender")


def _send_from(host: str, to: tuple[str, int], payload: bytes) -> None:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tx.bind((host, 0))
        tx.sendto(payload, to)
    finally:
        tx.close()


def test_parse_senders_accepts_addresses_networks_and_star() -> None:
    nets = parse_senders(["10.0.0.5", "192.168.1.0/24", "localhost"], "allowed_senders")
    assert [str(n) for n in nets] == ["10.0.0.5/32", "192.168.1.0/24", "127.0.0.0/8",
                                      "::1/128"]
    assert len(parse_senders(["*"], "x")) == 2
    with pytest.raises(ValueError, match="allowed_senders: 'stim-pc' is not an IP address"):
        parse_senders(["stim-pc"], "allowed_senders")
    with pytest.raises(ValueError, match="empty"):
        parse_senders([], "allowed_senders")
    with pytest.raises(ValueError, match="allowed_senders"):
        StimulusSettings(allowed_senders=("nope",))
    with pytest.raises(ValueError, match="allowed_senders"):
        BehaviorSettings(allowed_senders=())


@linux_only
def test_listener_drops_and_counts_datagrams_from_others(caplog) -> None:
    listener = UdpListener("127.0.0.1:0", 0.02, what="stimulus identity", setting="x",
                           allowed=parse_senders(["127.0.0.2"], "x"),
                           allowed_setting="[daq.stimulus] allowed_senders")
    received: list[bytes] = []
    import threading

    reader = threading.Thread(target=lambda: received.extend(listener.datagrams()), daemon=True)
    reader.start()
    try:
        for i in range(3):
            _send_from("127.0.0.1", listener.address, b"intruder %d" % i)
        _send_from("127.0.0.2", listener.address, b"allowed")
        wait_for(lambda: listener.refused == 3 and received, what="datagrams handled")
    finally:
        listener.close()
        reader.join(5)
    assert received == [b"allowed"]
    warnings = [r.getMessage() for r in caplog.records if "not an allowed sender" in r.getMessage()]
    assert len(warnings) == 1 and "[daq.stimulus] allowed_senders" in warnings[0]


@linux_only
def test_stimulus_source_reads_only_its_stimulus_computer(tmp_path) -> None:
    settings = StimulusSettings(listen="127.0.0.1:0", allowed_senders=("127.0.0.2",),
                                poll_s=0.02)
    with StimulusIdentitySource(settings) as src:
        events = src.events()
        _send_from("127.0.0.1", src.address, b'{"frame": 1, "clip": "fake", "clip_frame": 0}')
        _send_from("127.0.0.2", src.address, b'{"frame": 2, "clip": "real", "clip_frame": 0}')
        first = next(events)
        assert (first.index, first.clip) == (2, "real")
        assert src.status()["stimulus_refused"] == 1
        src.close()


def test_default_is_this_computer_only() -> None:
    settings = StimulusSettings(listen="127.0.0.1:0", poll_s=0.02)
    with StimulusIdentitySource(settings) as src:
        events = src.events()
        _send_from("127.0.0.1", src.address, b'{"frame": 5, "clip": "c", "clip_frame": 0}')
        assert next(events).index == 5
        src.close()
    assert BehaviorSettings(mode="lsl", lsl_name="eye", lsl_hosts=("eye-pc", "eye-pc2")
                            ).lsl_predicate() == \
        "name='eye' and (hostname='eye-pc' or hostname='eye-pc2')"
