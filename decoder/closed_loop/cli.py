"""`cortexcast loop`: run the closed-loop rules of a config's [loop] table."""

from __future__ import annotations

import argparse
from typing import Any

from cortexcast.core.config import ConfigError, load_settings


def check_rule_files(settings: Any, where: str) -> None:
    """Read each rule's target/mask: ConfigError naming rule and file if one is missing or
    misshapen (so `up` stops before it starts anything)."""
    from cortexcast.decoder.closed_loop.rules import RuleError, build_rule

    for rule in settings.rules:
        try:
            build_rule(rule)
        except RuleError as exc:
            raise ConfigError(f"{where}: {exc}") from exc


def loop_settings(config: str | None, overrides: dict[str, Any] | None = None,
                  check_files: bool = True):  # -> LoopSettings
    """[loop] of ``config`` (relative files resolved against its folder), flags on top.

    ``check_files`` also reads each rule's target/mask (:func:`check_rule_files`).
    """
    from cortexcast.decoder.closed_loop.process import LoopSettings

    settings = load_settings(LoopSettings, config, "loop", overrides)
    if check_files:
        check_rule_files(settings, f"{config}: [loop]" if config else "loop")
    return settings


def _run(args: argparse.Namespace) -> int:
    from cortexcast.core.runtime import setup_logging
    from cortexcast.decoder.closed_loop.process import run_loop
    from cortexcast.decoder.closed_loop.rules import RuleError

    setup_logging("loop", getattr(args, "log_level", "INFO"))
    settings = loop_settings(args.config, {
        "reconstruction_from": args.reconstruction_from, "publish": args.publish,
        "log": args.log, "duration_s": args.duration, "stats_out": args.stats_out})
    from cortexcast.stream.pubsub import sockets_for

    try:
        return run_loop(settings, sockets=sockets_for(args.config))
    except RuleError as exc:  # a rule's target/mask file: the user's input
        raise ConfigError(str(exc)) from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loop", help="closed loop: rules on reconstructions fire TTL/serial "
                       "triggers", description="Evaluate the [[loop.rules]] of --config on "
                       "every reconstruction; each firing drives its output (NI TTL pulse, "
                       "serial command, or log only), is appended to the firing log with its "
                       "latency from the imaging frame, and is published on topic 'loop'.")
    p.add_argument("--config", required=True, help="rig config (TOML) with a [loop] table")
    p.add_argument("--reconstruction-from", help="decoder endpoint, e.g. tcp://127.0.0.1:5556")
    p.add_argument("--publish", help="endpoint to bind for topic 'loop'")
    p.add_argument("--log", help="firing log (JSON lines; appended)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--stats-out", help="write a JSON of counters and latencies here on exit")
    p.set_defaults(func=_run)
