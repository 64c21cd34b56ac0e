"""The simulated two-photon rig (``source = "sim"``): see :mod:`cortexcast.daq.sim.rig`.

Modules: ``settings`` (SimSettings), ``meta`` (packaged Sensorium metadata),
``stimulus`` (natural movies), ``layout`` (neuron positions and footprints),
``neurons`` (receptive fields, spikes, calcium), ``behavior`` (running,
pupil), ``microscope`` (frames), ``rig`` (the AcquisitionSource).
Import ``cortexcast.daq.sim.rig`` for the rig itself; this package stays light to import.
"""
