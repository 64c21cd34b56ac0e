"""``cortexcast display``: the operator's live page (or a headless sink/recorder).

Usage::

    cortexcast display [--config rig.toml] [--port 0] [--headless] [--save out.gif]
                       [--duration 10] [--stats-out stats.json] ...
    python -m display ...            # the same, without the cortexcast front end

Flags override the ``[display]`` table of the config file. Never imports torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from cortexcast.core.config import ConfigError, load_settings
from cortexcast.display.settings import DisplaySettings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="TOML", help="rig config; its [display] table is used")
    p.add_argument("--stimulus-from", metavar="ENDPOINT",
                   help="daq endpoint (topic stimulus), e.g. tcp://127.0.0.1:5555")
    p.add_argument("--reconstruction-from", metavar="ENDPOINT",
                   help="decoder endpoint (topic reconstruction), e.g. tcp://127.0.0.1:5556")
    p.add_argument("--host", help="interface to serve the page on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8030; 0 = any free port)")
    p.add_argument("--fps", type=float, help="push/save rate, Hz (default 30)")
    p.add_argument("--scale", type=int, help="upscaling factor of saved frames (default 8)")
    p.add_argument("--headless", action="store_true", default=None,
                   help="no web server: receive, keep statistics, optionally --save")
    p.add_argument("--save", metavar="FILE",
                   help="write what is shown: FILE.gif (animated GIF) or a directory (PNGs)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--stats-out", metavar="JSON", help="write counters and latency here on stop")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "display", help="serve the live stimulus/reconstruction page",
        description="Subscribe to stimulus and reconstruction and show them side by side "
                    "in a browser at 30 Hz, with frame numbers, drops, latency and the "
                    "running pixel correlation.")
    add_arguments(p)
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> DisplaySettings:
    overrides = {
        "stimulus_from": args.stimulus_from,
        "reconstruction_from": args.reconstruction_from,
        "host": args.host,
        "port": args.port,
        "fps": args.fps,
        "scale": args.scale,
        "headless": args.headless,
        "save": args.save,
        "duration_s": args.duration,
        "stats_out": args.stats_out,
    }
    return load_settings(DisplaySettings, args.config, "display", overrides)


def run(args: argparse.Namespace) -> int:
    from cortexcast.display.server import Display, DisplayError  # aiohttp, zmq: only when running
    from cortexcast.stream.pubsub import StreamError

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from cortexcast.stream.security import load_security

        settings = settings_from_args(args)
        return Display(settings, security=load_security(args.config)).run()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (DisplayError, StreamError, OSError) as exc:
        print(f"display: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m display", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))
