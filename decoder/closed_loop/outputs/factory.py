"""The output backend an ``[[loop.outputs]]`` table names (kept apart from the settings
and the interface in :mod:`.output`, which every backend imports: no import cycle)."""

from __future__ import annotations

from cortexcast.decoder.closed_loop.outputs.log_output import LogOutput
from cortexcast.decoder.closed_loop.outputs.ni_ttl import NiTtlOutput
from cortexcast.decoder.closed_loop.outputs.output import OutputSettings, TriggerOutput
from cortexcast.decoder.closed_loop.outputs.serial_command import SerialCommandOutput


def make_output(settings: OutputSettings) -> TriggerOutput:
    """The backend an output's settings name (not yet opened)."""
    if settings.kind == "ni-ttl":
        return NiTtlOutput(settings.name, settings.ni)
    if settings.kind == "serial":
        assert settings.serial is not None
        return SerialCommandOutput(settings.name, settings.serial)
    return LogOutput(settings.name)
