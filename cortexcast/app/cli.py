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

def subcommands() -> list[str]:
    """``module:function`` registering each subcommand, in --help order.

    The processes' own subcommands come from the process registry.
    """
    from cortexcast.app.registry import PROCESSES

    proc = {name: spec.command for name, spec in PROCESSES.items()}
    return [
        "cortexcast.app.launcher:register_demo", "cortexcast.app.launcher:register_up",
        proc["daq"], proc["decoder"], proc["display"], proc["record"], proc["replay"],
        "cortexcast.app.simulate:register",
        "cortexcast.app.rois_command:register",
        "cortexcast.app.export_command:register",
        "cortexcast.app.clips:register",
        "cortexcast.app.offline_commands:register_train",
        "cortexcast.app.offline_commands:register_evaluate",
        "cortexcast.app.offline_commands:register_reconstruct",
        "cortexcast.app.suite_command:register",
        "cortexcast.app.bench:register", proc["loop"], proc["lsl"], "cortexcast.app.doctor:register",
        "cortexcast.app.keys_command:register",
    ]


def build_parser() -> argparse.ArgumentParser:
    from cortexcast.app.registry import load_attr

    parser = argparse.ArgumentParser(
        prog="cortexcast",
        description="Live reconstruction of what a mouse sees from two-photon imaging of V1.",
    )
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for ref in subcommands():
        register: Callable[[argparse._SubParsersAction], None] = load_attr(ref)
        register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'the user's input is wrong': printed, not traced."""
    from cortexcast.core.errors import CortexcastError

    return (CortexcastError, OSError)


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
