"""The `cortexcast` command: one subcommand per process or tool.

Subcommands register themselves (``register(subparsers)``) from the package
that owns them; heavy imports (torch) happen only inside the subcommand that
needs them, so the live path never imports torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

#: (module, register function) for every subcommand, in --help order.
SUBCOMMANDS: list[tuple[str, str]] = [
    ("cortexcast.app.launcher", "register_demo"),
    ("cortexcast.app.launcher", "register_up"),
    ("cortexcast.app.process_commands", "register_daq"),
    ("cortexcast.app.process_commands", "register_decoder"),
    ("cortexcast.display.cli", "register"),
    ("cortexcast.stream.record_cli", "register_record"),
    ("cortexcast.stream.record_cli", "register_replay"),
    ("cortexcast.app.simulate", "register"),
    ("cortexcast.app.offline_commands", "register_train"),
    ("cortexcast.app.offline_commands", "register_evaluate"),
    ("cortexcast.app.offline_commands", "register_reconstruct"),
    ("cortexcast.app.bench", "register"),
    ("cortexcast.decoder.closed_loop.cli", "register"),
    ("cortexcast.app.doctor", "register"),
]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="cortexcast",
        description="Live reconstruction of what a mouse sees from two-photon imaging of V1.",
    )
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module, name in SUBCOMMANDS:
        register: Callable[[argparse._SubParsersAction], None] = getattr(
            importlib.import_module(module), name)
        register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'the user's input is wrong': printed, not traced."""
    from cortexcast.core.config import ConfigError
    from cortexcast.daq.source import AcquisitionError
    from cortexcast.core.rois import ROIError
    from cortexcast.stream.pubsub import StreamError

    errors: list[type[BaseException]] = [ConfigError, AcquisitionError, ROIError, StreamError,
                                         OSError]
    for module, name in (("cortexcast.decoder.live.model_card", "ModelError"), ("cortexcast.decoder.offline.dataset", "DatasetError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    from cortexcast.core.runtime import die_with_parent

    die_with_parent()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(args.log_level)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        print(f"cortexcast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
