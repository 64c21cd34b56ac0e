"""`cortexcast daq` and `cortexcast decoder`: one process each, settings from TOML + flags."""

from __future__ import annotations

import argparse
from typing import Any

from cortexcast.core.config import load_settings, load_toml, resolve_paths, settings_from_table


def _table(config: str | None, section: str) -> dict[str, Any]:
    if not config:
        return {}
    raw = load_toml(config).get(section, {})
    return resolve_paths(raw, config) if isinstance(raw, dict) else raw


def _settings(cls: type, args: argparse.Namespace, section: str,
              flat: dict[str, Any], nested: dict[str, dict[str, Any]] | None = None) -> Any:
    """[section] of --config, then non-None flags on top (nested ones into sub-tables)."""
    table = _table(args.config, section)
    where = f"{args.config}: [{section}]" if args.config else section
    if not isinstance(table, dict):
        return load_settings(cls, args.config, section)  # raises the clear error
    for key, value in flat.items():
        if value is not None:
            table[key] = value
    for sub, values in (nested or {}).items():
        chosen = {k: v for k, v in values.items() if v is not None}
        if chosen:
            table[sub] = {**dict(table.get(sub, {})), **chosen}
    return settings_from_table(cls, table, where)


def daq_settings(args: argparse.Namespace):  # -> DaqSettings
    from cortexcast.daq.process import DaqSettings

    return _settings(
        DaqSettings, args, "daq",
        {"source": args.source, "publish": args.publish, "recording": args.recording,
         "stats_out": args.stats_out,
         "wait_for": tuple(args.wait_for.split(",")) if args.wait_for else None},
        {"sim": {"n_neurons": args.neurons, "seed": args.seed, "mouse": args.mouse,
                 "duration_s": args.duration, "paced": False if args.fast else None}},
    )


def _run_daq(args: argparse.Namespace) -> int:
    from cortexcast.core.runtime import setup_logging
    from cortexcast.daq.process import run_daq

    setup_logging("daq", getattr(args, "log_level", "INFO"))
    return run_daq(daq_settings(args))


def decoder_settings(args: argparse.Namespace):  # -> DecoderSettings
    from cortexcast.decoder.live.process import DecoderSettings

    return _settings(
        DecoderSettings, args, "decoder",
        {"frames_from": args.frames_from, "publish": args.publish, "rois": args.rois,
         "model": args.model, "stats_out": args.stats_out,
         "providers": tuple(args.providers.split(",")) if args.providers else None,
         "threads": args.threads},
    )


def _run_decoder(args: argparse.Namespace) -> int:
    from cortexcast.core.runtime import setup_logging
    from cortexcast.decoder.live.process import run_decoder

    setup_logging("decoder", getattr(args, "log_level", "INFO"))
    return run_decoder(decoder_settings(args))


def register_daq(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daq", help="acquisition process: publish frames, sync and stimulus",
                       description="Run the acquisition process. Settings come from the [daq] "
                       "table of --config; flags override them.")
    p.add_argument("--config", help="TOML config file (table [daq], [daq.sim])")
    p.add_argument("--source", choices=["sim", "replay", "scanimage", "scanimage-bridge", "tiff"],
                   help="frame backend (default sim); sync sources are set in the config")
    p.add_argument("--publish", help="endpoint to bind, e.g. tcp://127.0.0.1:5555")
    p.add_argument("--recording", help="recording file for --source replay")
    p.add_argument("--neurons", type=int, help="simulated neurons (100..100000)")
    p.add_argument("--seed", type=int, help="simulated animal's seed")
    p.add_argument("--mouse", help="Sensorium mouse whose cortical layout to use (A..J)")
    p.add_argument("--duration", type=float, help="stop after this many seconds of acquisition")
    p.add_argument("--fast", action="store_true", help="do not pace the simulator to the clock")
    p.add_argument("--wait-for", help="comma-separated topics that need a subscriber first")
    p.add_argument("--stats-out", help="write a JSON of counters here on exit")
    p.set_defaults(func=_run_daq)


def register_decoder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decoder", help="decoding process: frames -> activity -> pixels (ONNX)",
                       description="Run the decoder process. Settings come from the [decoder] "
                       "table of --config; flags override them.")
    p.add_argument("--config", help="TOML config file (table [decoder])")
    p.add_argument("--frames-from", help="daq endpoint to connect to")
    p.add_argument("--publish", help="endpoint to bind for activity and reconstruction")
    p.add_argument("--rois", help="ROI file matching the imaging frames")
    p.add_argument("--model", help="ONNX model (card beside it) or 'bundled'")
    p.add_argument("--providers", help="comma-separated onnxruntime providers")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--stats-out", help="write a JSON of counters and latencies here on exit")
    p.set_defaults(func=_run_decoder)
