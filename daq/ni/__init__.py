"""NI-DAQmx sync: frame clock and photodiode recorded by an NI DAQ, turned into sync events.

* :mod:`cortexcast.daq.ni.settings` — ``[daq.ni]`` (no nidaqmx import);
* :mod:`cortexcast.daq.ni.edges` — a streaming Schmitt-trigger edge detector (pure numpy);
* :mod:`cortexcast.daq.ni.sync_builder` — voltages -> imaging frame times, stimulus flips, monitor
  delay and one :class:`~cortexcast.daq.source.SyncEvent` per imaging frame (pure numpy);
* :mod:`cortexcast.daq.ni.task` — the thin nidaqmx wrapper (analog inputs, optional edge counter) and
  the vendor-error mapping;
* :mod:`cortexcast.daq.ni.simulated` — the same sync lines computed in real time (``backend =
  "simulated"``), and :mod:`cortexcast.daq.ni.synthetic` — the voltages it and the tests use;
* :mod:`cortexcast.daq.ni.source` — the sync source the daq process runs.
"""
