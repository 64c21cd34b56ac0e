"""Serial sync devices: a microcontroller sync box and a running-wheel encoder (pyserial).

* :mod:`cortexcast.daq.serial_sync.settings` — ``[daq.serial]``;
* :mod:`cortexcast.daq.serial_sync.protocol` — the line protocol (a configurable regex), pure;
* :mod:`cortexcast.daq.serial_sync.builder` — parsed lines -> SyncEvents with running speed, pure;
* :mod:`cortexcast.daq.serial_sync.port` — a reconnecting line reader (survives unplug/re-plug);
* :mod:`cortexcast.daq.serial_sync.source` — the sync source the daq process runs;
* :mod:`cortexcast.daq.serial_sync.standin` — a pseudo-terminal device that speaks the protocol
  (``python -m cortexcast.daq.serial_sync.standin``), for tests and for trying a rig config without one.
"""
