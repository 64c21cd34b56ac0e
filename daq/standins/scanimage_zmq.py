"""Stand-in for ScanImage Premium's ZeroMQ stream: ``python -m cortexcast.daq.standins.scanimage_zmq``.

Binds ``--endpoint`` (ScanImage's default port is 65179) and publishes one
message per frame in ScanImage's layout (see daq/scanimage/messages.py and
docs/scanimage.md): float64 header, then int16 pixels of every channel.
"""

from __future__ import annotations

import argparse
import logging

from cortexcast.daq.scanimage.messages import pack_scanimage_message
from cortexcast.daq.standins.playback import add_source_args, scanimage_frames, setup
from cortexcast.daq.standins.zmq_publisher import StandinPublisher

log = logging.getLogger("standin")


def add_publish_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--endpoint", default=default, help=f"where to bind (default {default})")
    p.add_argument("--wait-subscribers", type=int, default=0,
                   help="wait until this many subscribers are connected before playing")
    p.add_argument("--wait-timeout", type=float, default=60.0,
                   help="how long to wait for them (s); then exit with an error")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cortexcast.daq.standins.scanimage_zmq",
                                description=__doc__.splitlines()[0])
    add_publish_args(p, "tcp://127.0.0.1:65179")
    add_source_args(p)
    args = p.parse_args(argv)
    setup("scanimage_zmq")
    return play(args, lambda f: [pack_scanimage_message(f.number, f.t, f.channels)])


def play(args: argparse.Namespace, messages) -> int:  # messages: SIFrame -> list[bytes]
    pub = StandinPublisher(args.endpoint)
    sent = 0
    try:
        log.info("bound %s", args.endpoint)
        if args.wait_subscribers and not pub.wait_for_subscribers(args.wait_subscribers,
                                                                  args.wait_timeout):
            log.error("no subscriber within %.0f s; giving up", args.wait_timeout)
            return 1
        for frame in scanimage_frames(args):
            for data in messages(frame):
                pub.send(data)
            sent += 1
        log.info("played %d frames", sent)
    except KeyboardInterrupt:
        log.info("interrupted after %d frames", sent)
    finally:
        pub.close(linger_ms=5000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
