"""The processes cortexcast runs: one table read by the CLI, `up`, the doctor and the supervisor.

Each entry names the process (= its subcommand and its config table), its settings
dataclass, where its subcommand is registered, and how the supervisor starts and
stops it. Settings classes and commands are imported only when asked for, so the
live path never imports what it does not run (torch, aiohttp).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def load_attr(ref: str) -> Any:
    """``"package.module:name"`` -> that attribute (imported on demand)."""
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    """Subcommand (``cortexcast NAME``) and config table (``[NAME]``)."""
    settings: str
    """``module:Class`` of the process's frozen settings dataclass."""
    command: str
    """``module:function`` that registers the subcommand on the CLI's subparsers."""
    stop_rank: int
    """Stop order under the supervisor: producers first, so consumers can drain."""
    in_stack: bool = True
    """May be named in ``[stack] processes`` (``replay`` is run by hand or by bench)."""
    check: str | None = None
    """``module:function(settings, where)`` run after loading when files must exist too."""

    @property
    def section(self) -> str:
        return self.name

    def settings_class(self) -> type:
        return load_attr(self.settings)

    def load(self, config: str | Path | None, overrides: dict[str, Any] | None = None,
             *, check_files: bool = True) -> Any:
        """Its table of ``config`` (paths resolved, flags on top) as its settings."""
        from cortexcast.core.config import load_settings

        settings = load_settings(self.settings_class(), config, self.section, overrides)
        if check_files and self.check is not None:
            where = f"{config}: [{self.section}]" if config else self.section
            load_attr(self.check)(settings, where)
        return settings

    def argv(self, config: str | Path, stats_out: str | Path | None = None) -> list[str]:
        """The command line that starts it as its own process (same interpreter)."""
        cmd = [sys.executable, "-m", "cortexcast", self.name, "--config", str(config)]
        return cmd + (["--stats-out", str(stats_out)] if stats_out is not None else [])


#: Every process; ``[stack] processes`` may name those ``in_stack``.
PROCESSES: dict[str, ProcessSpec] = {p.name: p for p in (
    ProcessSpec("display", "cortexcast.display.settings:DisplaySettings",
                "cortexcast.display.cli:register", stop_rank=3),
    ProcessSpec("decoder", "cortexcast.decoder.live.process:DecoderSettings",
                "cortexcast.app.process_commands:register_decoder", stop_rank=2),
    ProcessSpec("daq", "cortexcast.daq.process:DaqSettings",
                "cortexcast.app.process_commands:register_daq", stop_rank=0),
    ProcessSpec("record", "cortexcast.stream.record_cli:RecordSettings",
                "cortexcast.stream.record_cli:register_record", stop_rank=5),
    ProcessSpec("loop", "cortexcast.decoder.closed_loop.process:LoopSettings",
                "cortexcast.decoder.closed_loop.cli:register", stop_rank=4,
                check="cortexcast.decoder.closed_loop.cli:check_rule_files"),
    ProcessSpec("replay", "cortexcast.stream.replay:ReplaySettings",
                "cortexcast.stream.record_cli:register_replay", stop_rank=1, in_stack=False),
    ProcessSpec("lsl", "cortexcast.stream.lsl_outlets:LslSettings",
                "cortexcast.stream.lsl_outlets:register", stop_rank=6),
)}

#: The processes ``up`` can start, in the order of error messages and the docs.
STACK_PROCESSES: tuple[str, ...] = tuple(n for n, p in PROCESSES.items() if p.in_stack)


def process(name: str) -> ProcessSpec:
    """The entry for ``name``; KeyError naming the known ones otherwise."""
    try:
        return PROCESSES[name]
    except KeyError:
        raise KeyError(f"unknown process {name!r} (known: {', '.join(PROCESSES)})") from None


def stop_order(names: list[str]) -> list[str]:
    """``names`` in the order the supervisor stops them (unknown names last)."""
    return sorted(names, key=lambda n: PROCESSES[n].stop_rank if n in PROCESSES
                  else len(PROCESSES))
