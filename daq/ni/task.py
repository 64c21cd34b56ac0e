"""The thin nidaqmx layer: one continuous analog-input task read in blocks, and error mapping.

Everything nidaqmx-specific lives here (imported lazily, so the daq process runs without the
NI driver unless ``sync`` names "ni"). Tests swap ``task_factory`` / ``reader_factory`` for
``create_autospec`` fakes of the real classes, so a misspelled call fails.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from cortexcast.daq.ni.settings import NiSettings
from cortexcast.daq.source import AcquisitionError

log = logging.getLogger(__name__)

#: DAQmx error codes that mean "samples were lost because the reader fell behind".
OVERFLOW_CODES = frozenset({-200279, -200010, -200361, -209829, -200283, -200004})
#: DAQmx error codes that mean "the device / channel named in the config is not there".
MISSING_DEVICE_CODES = frozenset({-200220, -201003, -50300, -200170})


class DaqOverflow(AcquisitionError):
    """The DAQmx buffer overflowed: samples were lost (the source restarts and counts a gap)."""


def list_devices() -> list[str]:
    """Names of the NI devices on this computer ([] when none or no driver)."""
    try:
        import nidaqmx.system

        return [d.name for d in nidaqmx.system.System.local().devices]
    except Exception:  # noqa: BLE001 - a listing for an error message must never raise
        return []


def map_daq_error(exc: BaseException, settings: NiSettings) -> AcquisitionError:
    """Our AcquisitionError for a nidaqmx exception, with what to check (vendor error chained
    by the caller's ``raise ... from``)."""
    import nidaqmx.errors as nierr

    if isinstance(exc, nierr.DaqNotFoundError):
        return AcquisitionError("NI-DAQmx driver not found: install NI-DAQmx on this computer "
                                "(or remove 'ni' from [daq] sync)")
    if isinstance(exc, nierr.DaqNotSupportedError):
        return AcquisitionError(f"NI-DAQmx is not supported on this platform: {exc}")
    code = getattr(exc, "error_code", None)
    if code in OVERFLOW_CODES:
        return DaqOverflow(
            f"NI DAQ {settings.device}: buffer overflow (DAQmx error {code}): samples were "
            f"overwritten before they were read; the sync for the frames in the gap is lost")
    if code in MISSING_DEVICE_CODES:
        present = list_devices()
        return AcquisitionError(
            f"NI DAQ: device or channel not found for {', '.join(settings.channels)} "
            f"(DAQmx error {code}); devices present: {', '.join(present) or 'none'}; "
            f"check [daq.ni] device and channels against NI MAX")
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return AcquisitionError(f"NI DAQ {settings.device}: DAQmx error {code}: {first_line}")


class NiAnalogInput:
    """Continuous hardware-timed analog input of the sync channels, delivered in blocks.

    ``on_block(samples)`` gets a (channels, block_samples) float64 array from DAQmx's
    callback thread; ``on_error(exc)`` gets a nidaqmx exception raised while reading.
    """

    def __init__(self, settings: NiSettings, on_block: Callable[[np.ndarray], None],
                 on_error: Callable[[BaseException], None], *,
                 task_factory: Callable[[], Any] | None = None,
                 reader_factory: Callable[[Any], Any] | None = None,
                 counter_reader_factory: Callable[[Any], Any] | None = None) -> None:
        self.s = settings
        self.on_block, self.on_error = on_block, on_error
        self._task_factory, self._reader_factory = task_factory, reader_factory
        self._counter_reader_factory = counter_reader_factory
        self._task: Any = None
        self._reader: Any = None
        self._counter_task: Any = None
        self._counter_reader: Any = None

    def open(self) -> None:
        """Create, configure and start the task; AcquisitionError (vendor error chained)."""
        import nidaqmx
        import nidaqmx.errors as nierr
        from nidaqmx.constants import AcquisitionType, TerminalConfiguration
        from nidaqmx.stream_readers import AnalogMultiChannelReader

        s = self.s
        buffer = int(round(s.buffer_s * s.rate_hz))
        try:
            if s.frame_counter:
                self._open_counter(buffer)
            task = (self._task_factory or nidaqmx.Task)()
            self._task = task
            for chan in s.channels:
                task.ai_channels.add_ai_voltage_chan(
                    chan, terminal_config=TerminalConfiguration[s.terminal],
                    min_val=s.min_v, max_val=s.max_v)
            task.timing.cfg_samp_clk_timing(s.rate_hz, sample_mode=AcquisitionType.CONTINUOUS,
                                            samps_per_chan=buffer)
            task.in_stream.input_buf_size = buffer
            self._reader = (self._reader_factory or AnalogMultiChannelReader)(task.in_stream)
            task.register_every_n_samples_acquired_into_buffer_event(s.block_samples,
                                                                     self._callback)
            if self._counter_task is not None:
                self._counter_task.start()  # armed first: it samples on the AI sample clock
            task.start()
        except (nierr.Error, OSError) as exc:
            self.close()
            raise map_daq_error(exc, s) from exc
        log.info("NI DAQ %s: reading %s at %g Hz in blocks of %d", s.device,
                 ", ".join(s.channels), s.rate_hz, s.block_samples)

    def _open_counter(self, buffer: int) -> None:
        """A counter task counting frame-clock edges, one count per analog sample."""
        import nidaqmx
        from nidaqmx.constants import AcquisitionType, Edge
        from nidaqmx.stream_readers import CounterReader

        s = self.s
        ctask = (self._task_factory or nidaqmx.Task)()
        self._counter_task = ctask
        chan = ctask.ci_channels.add_ci_count_edges_chan(f"{s.device}/{s.frame_counter}",
                                                         edge=Edge.RISING)
        if s.frame_counter_terminal:
            chan.ci_count_edges_term = f"/{s.device}/{s.frame_counter_terminal}"
        ctask.timing.cfg_samp_clk_timing(s.rate_hz, source=f"/{s.device}/ai/SampleClock",
                                         sample_mode=AcquisitionType.CONTINUOUS,
                                         samps_per_chan=buffer)
        self._counter_reader = (self._counter_reader_factory or CounterReader)(ctask.in_stream)

    def _callback(self, task_handle: object, event_type: int, n: int, data: object) -> int:
        """DAQmx's every-N-samples callback: read the block and hand it on (never raises).

        The block's rows are what the sync builder takes: the frame signal (clock volts, or
        the counter's edge count), the photodiode, [vsync]."""
        import nidaqmx.errors as nierr

        counter = self._counter_reader is not None
        buf = np.empty((self.s.rows, n), dtype=np.float64)
        try:
            self._reader.read_many_sample(buf[1:] if counter else buf,
                                          number_of_samples_per_channel=n,
                                          timeout=self.s.read_timeout_s)
            if counter:
                counts = np.empty(n, dtype=np.uint32)
                self._counter_reader.read_many_sample_uint32(
                    counts, number_of_samples_per_channel=n, timeout=self.s.read_timeout_s)
                buf[0] = counts
        except nierr.Error as exc:
            self.on_error(exc)
            return 0
        self.on_block(buf)
        return 0

    def close(self) -> None:
        """Stop and release the task (idempotent; errors while closing are only logged)."""
        import nidaqmx.errors as nierr

        tasks = (self._task, self._counter_task)
        self._task = self._counter_task = None
        for task in tasks:
            if task is None:
                continue
            for step in ("stop", "close"):
                try:
                    getattr(task, step)()
                except nierr.Error as exc:
                    log.warning("NI DAQ %s: %s failed while closing: %s", self.s.device, step,
                                exc)
