"""One thread and one bounded queue per trigger output.

The thread that receives reconstructions only ever calls :meth:`TriggerWorker.submit`,
which never blocks: a firing either joins the output's queue or, when the
output is still busy with ``queue`` earlier ones, is refused (the caller
logs it as dropped). The worker thread calls the (possibly slow) output and
puts ``(item, t_out_ns, error)`` on a shared ``done`` queue for the caller
to log and publish from its own thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from cortexcast.decoder.closed_loop.outputs.output import TriggerError, TriggerOutput

log = logging.getLogger("loop")

_STOP = object()


class TriggerWorker:
    def __init__(self, output: TriggerOutput, done: "queue.SimpleQueue[tuple[Any, int | None, str | None]]",
                 queue_size: int = 8) -> None:
        self.output = output
        self.done = done
        self._q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name=f"trigger-{output.name}",
                                        daemon=True)
        self.refused = 0

    def start(self) -> None:
        """Open the output here (so a missing device fails at start), then start the thread."""
        self.output.open()
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Queue a firing; False (at once) when the output's queue is full."""
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.refused += 1
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            try:
                t_out: int | None = self.output.fire()
                error = None
            except TriggerError as exc:
                t_out, error = None, str(exc)
            except Exception as exc:  # a backend bug must not kill the output thread
                log.exception("output %s: unexpected error", self.output.name)
                t_out, error = None, f"{type(exc).__name__}: {exc}"
            self.done.put((item, t_out, error))

    def close(self, timeout_s: float = 5.0) -> None:
        """Fire what is queued, stop the thread, close the output."""
        if self._thread.is_alive():
            try:
                self._q.put(_STOP, timeout=timeout_s)
            except queue.Full:
                log.warning("output %s: still busy at shutdown", self.output.name)
            self._thread.join(timeout_s)
        try:
            self.output.close()
        except TriggerError as exc:
            log.warning("%s", exc)
