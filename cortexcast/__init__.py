"""cortexcast: live reconstruction of what a mouse sees from two-photon imaging of V1.

Layers, bottom to top (docs/architecture.md): ``core`` -> ``stream`` -> ``daq`` ->
``decoder.live`` -> ``display`` / ``decoder.closed_loop`` -> ``decoder.offline`` ->
``decoder.training`` -> ``app``.
"""
