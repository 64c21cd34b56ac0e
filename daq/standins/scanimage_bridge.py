"""Stand-in for daq/matlab/cortexcast_frameAcquired.m: ``python -m cortexcast.daq.standins.scanimage_bridge``.

Publishes what the MATLAB user function publishes from inside ScanImage: one
bridge message per frame for one channel (layout in daq/scanimage/messages.py).
"""

from __future__ import annotations

import argparse

from cortexcast.daq.scanimage.messages import pack_bridge_message
from cortexcast.daq.standins.playback import add_source_args, setup
from cortexcast.daq.standins.scanimage_zmq import add_publish_args, play


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cortexcast.daq.standins.scanimage_bridge",
                                description=__doc__.splitlines()[0])
    add_publish_args(p, "tcp://127.0.0.1:5560")
    add_source_args(p)
    p.add_argument("--channel", type=int, default=1,
                   help="which channel to send, like the user function's argument (default 1)")
    args = p.parse_args(argv)
    if not 1 <= args.channel <= args.channels:
        p.error(f"--channel {args.channel} is not one of the {args.channels} channel(s)")
    setup("scanimage_bridge")
    return play(args, lambda f: [pack_bridge_message(f.number, f.t, f.channels[args.channel - 1],
                                                     args.channel, f.last)])


if __name__ == "__main__":
    raise SystemExit(main())
