"""The simulated NI backend: the rig's sync voltages computed in real time, no driver.

Same shape as :class:`cortexcast.daq.ni.task.NiAnalogInput` (``open``/``close``, blocks to
``on_block`` from its own thread at the hardware pace), so ``[daq.ni] backend =
"simulated"`` runs the whole NI path — edge detection, flips, monitor delay, sync events —
in ``cortexcast up`` on a machine without a DAQ.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from cortexcast.daq.ni.settings import NiSettings
from cortexcast.daq.ni.synthetic import RigSignals


class SimulatedAnalogInput:
    def __init__(self, settings: NiSettings, on_block: Callable[[np.ndarray], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self.s = settings
        self.on_block, self.on_error = on_block, on_error
        self.signals = RigSignals(rate_hz=settings.rate_hz,
                                  frame_rate_hz=settings.sim_frame_rate_hz,
                                  stim_rate_hz=settings.stim_rate_hz,
                                  monitor_delay_s=settings.sim_monitor_delay_s,
                                  noise_v=0.02)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ni-simulated", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n, rate = self.s.block_samples, self.s.rate_hz
        rows = self.s.rows
        rng = np.random.default_rng(0)
        t0 = time.monotonic()
        first = 0
        while not self._stop.is_set():
            due = t0 + (first + n) / rate  # a block exists once its last sample is taken
            if self._stop.wait(max(due - time.monotonic(), 0.0)):
                return
            block = self.signals.block(first, n, rng)[:rows]
            if self.s.frame_counter:
                block[0] = self.signals.frame_count(first, n)
            self.on_block(block)
            first += n

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
