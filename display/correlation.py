"""The display's running pixel correlation, and a worker process to compute it in.

The number is :func:`cortexcast.decoder.live.metric.pixel_correlation` (one implementation for
evaluate, display and bench) over the last paired frames. Its Gaussian filter
holds the GIL for milliseconds at a time; run in the display's own process it
delayed the receiver thread (p99 of ``decoder.pub→display.recv`` rose from
2.5 ms to 13 ms in a 30 Hz test), so the display computes it in a separate,
spawned process (:class:`CorrelationWorker`), once a second.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable

import numpy as np

from cortexcast.core.platform import lower_priority, parent_is_gone

Metric = Callable[..., float]

_PARENT_POLL_S = 0.5


def _default_metric() -> Metric:
    from cortexcast.decoder.live.metric import pixel_correlation  # lazy: scipy only when first needed

    return pixel_correlation


def window_correlation(recons: np.ndarray, targets: np.ndarray, mask: np.ndarray,
                       metric: Metric | None = None) -> float | None:
    """r over a whole window: (T, H, W) reconstructions vs targets inside ``mask`` (H, W).

    None when it cannot be computed (fewer than 2 frames, constant target).
    """
    if len(recons) < 2:
        return None
    if mask.shape != recons.shape[1:]:
        raise ValueError(f"mask shape {mask.shape} != frame shape {recons.shape[1:]}")
    metric = metric or _default_metric()
    r = float(metric(recons, targets, mask, start=0, stop=len(recons)))
    return r if np.isfinite(r) else None


def _exit_with(parent: int) -> None:
    while True:
        time.sleep(_PARENT_POLL_S)
        if parent_is_gone(parent):  # the display died without closing us (SIGKILL)
            os._exit(0)


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group; the display decides when its worker stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A statistic for the operator: it must never take a core from the pipeline.
    lower_priority()  # os.nice(10); below-normal priority on Windows
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    try:
        _default_metric()  # import scipy now, not while frames are flowing
    except ImportError:
        pass  # reported by the first window_correlation call


class CorrelationWorker:
    """One spawned worker process; ``start()`` (or the first ``submit``) starts it,
    ``close()`` ends it."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"),
                                             initializer=_init_worker)
            self._pool.submit(int)  # a no-op job, so the process starts (and warms up) now
        return self._pool

    def submit(self, recons: np.ndarray, targets: np.ndarray,
               mask: np.ndarray) -> "Future[float | None]":
        return self.start().submit(window_correlation, recons, targets, mask)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
