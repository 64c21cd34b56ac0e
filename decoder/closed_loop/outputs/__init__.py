"""Closed-loop trigger outputs (TTL on an NI line, serial commands, a simulated log).

See :mod:`cortexcast.decoder.closed_loop.outputs.output` for the interface and the settings.
"""
