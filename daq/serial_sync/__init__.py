"""Serial sync devices: a microcontroller sync box and a running-wheel encoder (pyserial).

* :mod:`daq.serial_sync.settings` — ``[daq.serial]``;
* :mod:`daq.serial_sync.protocol` — the line protocol (a configurable regex), pure;
* :mod:`daq.serial_sync.builder` — parsed lines -> SyncEvents with running speed, pure;
* :mod:`daq.serial_sync.port` — a reconnecting line reader (survives unplug/re-plug);
* :mod:`daq.serial_sync.source` — the sync source the daq process runs;
* :mod:`daq.serial_sync.standin` — a pseudo-terminal device that speaks the protocol
  (``python -m daq.serial_sync.standin``), for tests and for trying a rig config without one.
"""
