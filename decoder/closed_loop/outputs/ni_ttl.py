"""A TTL pulse on an NI digital output line (nidaqmx, on-demand software-timed DO task).

The task is created once (``open``) and kept: each firing is two on-demand
writes, edge then return to idle, ``pulse_ms`` apart. The rising edge is what
a downstream device triggers on; its time is what :meth:`NiTtlOutput.fire`
returns. Software timing makes the width good to about a millisecond; a rig
that needs it exact would use a counter output instead (same interface).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from cortexcast.decoder.closed_loop.outputs.output import NiTtlSettings, TriggerError

log = logging.getLogger("loop")

INSTALL_HINT = ("install NI-DAQmx (ni.com/downloads, or `python -m nidaqmx installdriver`), "
                "then check the device in NI MAX or `nidaqmx.system.System.local().devices`")


def _default_task_factory() -> Any:
    try:
        import nidaqmx
    except ImportError as exc:
        raise TriggerError("the nidaqmx package is not installed: pip install 'cortexcast[hw]'") \
            from exc
    return nidaqmx.Task()


def _nidaqmx_errors() -> tuple[type[BaseException], ...]:
    try:
        import nidaqmx.errors
    except ImportError:
        return ()
    return (nidaqmx.errors.Error,)


def wait_until(deadline_ns: int, spin_ns: int = 1_000_000) -> None:
    """Sleep until ``deadline_ns`` (monotonic), spinning the last ``spin_ns`` for accuracy."""
    left = deadline_ns - time.monotonic_ns()
    if left > spin_ns:
        time.sleep((left - spin_ns) / 1e9)
    while time.monotonic_ns() < deadline_ns:
        pass


class NiTtlOutput:
    """One DO line; ``fire`` drives it active for ``pulse_ms`` and back to idle."""

    def __init__(self, name: str, settings: NiTtlSettings,
                 task_factory: Callable[[], Any] = _default_task_factory) -> None:
        self.name = name
        self.settings = settings
        self._task_factory = task_factory
        self._task: Any = None
        self.pulses = 0

    def _vendor(self, what: str, exc: BaseException) -> TriggerError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if type(exc).__name__ == "DaqNotFoundError":
            return TriggerError(f"output {self.name}: NI-DAQmx is not installed on this machine; "
                                f"{INSTALL_HINT}")
        return TriggerError(f"output {self.name}: {what} {self.settings.line}: {text}")

    def open(self) -> None:
        try:
            from nidaqmx.constants import LineGrouping
        except ImportError as exc:
            raise TriggerError("the nidaqmx package is not installed: "
                               "pip install 'cortexcast[hw]'") from exc
        try:
            task = self._task_factory()
        except _nidaqmx_errors() as exc:
            raise self._vendor("cannot create a task for", exc) from exc
        try:
            task.do_channels.add_do_chan(self.settings.line,
                                         line_grouping=LineGrouping.CHAN_PER_LINE)
            task.write(not self.settings.active_high, auto_start=True)  # idle level
        except _nidaqmx_errors() as exc:
            task.close()
            raise self._vendor("cannot open digital line", exc) from exc
        self._task = task
        log.info("output %s: TTL %.3g ms on %s", self.name, self.settings.pulse_ms,
                 self.settings.line)

    def fire(self) -> int:
        """One pulse; returns the monotonic time (ns) right after the edge was written."""
        if self._task is None:
            raise TriggerError(f"output {self.name}: fire() before open()")
        active = self.settings.active_high
        try:
            self._task.write(active)
            edge = time.monotonic_ns()
            wait_until(edge + int(self.settings.pulse_ms * 1e6))
            self._task.write(not active)
        except _nidaqmx_errors() as exc:
            raise self._vendor("pulse failed on", exc) from exc
        self.pulses += 1
        return edge

    def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        try:
            task.write(not self.settings.active_high)
        except _nidaqmx_errors() as exc:
            log.warning("output %s: could not return %s to idle: %s", self.name,
                        self.settings.line, exc)
        finally:
            task.close()
