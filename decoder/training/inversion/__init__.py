"""The paper's offline method (Bauer, Margrie & Clopath, eLife 2025): invert encoding models.

``cortexcast reconstruct --method inversion``. Offline only: this package imports torch and
must never be imported by the live path.
"""
