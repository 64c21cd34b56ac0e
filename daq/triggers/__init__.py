"""Closed-loop trigger outputs (TTL on an NI line, serial commands, a simulated log).

See :mod:`daq.triggers.output` for the interface and the settings.
"""
