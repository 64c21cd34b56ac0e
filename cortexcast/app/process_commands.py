"""`cortexcast daq` and `cortexcast decoder`: one process each, settings from TOML + flags."""

from __future__ import annotations

import argparse

from cortexcast.app.registry import process


def daq_settings(args: argparse.Namespace):  # -> DaqSettings
    return process("daq").load(args.config, {
        "source": args.source, "publish": args.publish, "recording": args.recording,
        "stats_out": args.stats_out,
        "wait_for": tuple(args.wait_for.split(",")) if args.wait_for else None,
        "sim": {"n_neurons": args.neurons, "seed": args.seed, "mouse": args.mouse,
                "duration_s": args.duration, "paced": False if args.fast else None}})


def _run_daq(args: argparse.Namespace) -> int:
    from cortexcast.core.runtime import setup_logging
    from cortexcast.daq.process import run_daq

    from cortexcast.stream.pubsub import sockets_for

    setup_logging("daq", getattr(args, "log_level", "INFO"))
    return run_daq(daq_settings(args), sockets=sockets_for(args.config))


def decoder_settings(args: argparse.Namespace):  # -> DecoderSettings
    return process("decoder").load(args.config, {
        "frames_from": args.frames_from, "publish": args.publish, "rois": args.rois,
        "model": args.model, "stats_out": args.stats_out,
        "providers": tuple(args.providers.split(",")) if args.providers else None,
        "threads": args.threads})


def _run_decoder(args: argparse.Namespace) -> int:
    from cortexcast.core.runtime import setup_logging
    from cortexcast.decoder.live.process import run_decoder

    from cortexcast.stream.pubsub import sockets_for

    setup_logging("decoder", getattr(args, "log_level", "INFO"))
    return run_decoder(decoder_settings(args), sockets=sockets_for(args.config))


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
