"""Closed-loop rules on live reconstructions (rules.py) and the process that runs them."""
