"""The root of every cortexcast exception.

Each project error also keeps its builtin base (``ValueError``, ``RuntimeError``, ...),
so code that catches those goes on working; the command line catches
:class:`CortexcastError` once to print "the user's input is wrong" without a traceback.
"""

from __future__ import annotations


class CortexcastError(Exception):
    """Base of every cortexcast exception: the message is for the user, not a bug report."""
