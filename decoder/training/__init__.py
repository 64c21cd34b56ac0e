"""Training helpers for ``cortexcast train`` (torch lives in model.py and windows.py only)."""
