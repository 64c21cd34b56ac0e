"""The NI sync source through the real callback path, on create_autospec fakes of nidaqmx.

The fake task and reader are autospecs of the real nidaqmx classes, so a misspelled or
wrongly-called nidaqmx method fails here; they play a recorded-like voltage trace (frame
clock, photodiode with a monitor delay, vsync, noise) into the callback the source registers.
"""

from __future__ import annotations

import os
import threading
from unittest import mock

import nidaqmx
import nidaqmx.errors
import numpy as np
import pytest
from nidaqmx.stream_readers import AnalogMultiChannelReader, CounterReader
from nidaqmx.task import InStream, Timing
from nidaqmx.task.channels import CIChannel
from nidaqmx.task.collections import AIChannelCollection, CIChannelCollection

from cortexcast.daq.ni.settings import NiSettings
from cortexcast.daq.ni.source import NiSyncSource
from cortexcast.daq.ni.synthetic import RigTrace, expected_stim_frames, rig_trace
from cortexcast.daq.source import AcquisitionError

RATE = 10000.0
BLOCK = 500


class FakeDaq:
    """Plays ``trace`` block by block into the registered every-N-samples callback.

    ``overflow_at``: sample at which the read fails with DAQmx -200279 (buffer overflow);
    the next task then resumes at ``resume_at`` (the samples between are lost). ``clock``
    is the fake monotonic time: the end of the last block delivered.
    """

    def __init__(self, trace: RigTrace, overflow_at: int | None = None,
                 resume_at: int | None = None, fail_code: int | None = None,
                 counter: bool = False) -> None:
        self.trace, self.overflow_at, self.resume_at = trace, overflow_at, resume_at
        self.fail_code = fail_code
        self.counter = counter  # analog rows then start at the photodiode
        n = trace.samples.shape[1]
        self.counts = np.searchsorted(trace.frame_starts, np.arange(n), side="right")
        self.pos = 0
        self.clock = 0.0
        self.tasks: list = []
        self.threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._read_from = 0

    def task(self):
        task = mock.create_autospec(nidaqmx.Task, instance=True)
        task.ai_channels = mock.create_autospec(AIChannelCollection, instance=True)
        task.ci_channels = mock.create_autospec(CIChannelCollection, instance=True)
        task.ci_channels.add_ci_count_edges_chan.return_value = \
            mock.create_autospec(CIChannel, instance=True)
        task.timing = mock.create_autospec(Timing, instance=True)
        task.in_stream = mock.create_autospec(InStream, instance=True)
        state: dict = {}
        task.register_every_n_samples_acquired_into_buffer_event.side_effect = \
            lambda n, cb: state.update(n=n, cb=cb)
        task.start.side_effect = lambda: self._start(state) if "cb" in state else None
        task.stop.side_effect = lambda: self._stop.set()
        task.close.side_effect = self._closed
        self.tasks.append(task)
        return task

    def reader(self, in_stream):
        assert in_stream is self.tasks[-1].in_stream
        reader = mock.create_autospec(AnalogMultiChannelReader, instance=True)
        reader.read_many_sample.side_effect = self._read
        return reader

    def _read(self, data, number_of_samples_per_channel=-1, timeout=10.0):
        a = self._read_from
        if self.fail_code is not None:
            raise nidaqmx.errors.DaqReadError("Device was removed.", self.fail_code, 0)
        if self.overflow_at is not None and a >= self.overflow_at:
            self.overflow_at = None
            raise nidaqmx.errors.DaqReadError(
                "The application is not able to keep up with the hardware acquisition.",
                -200279, 0)
        rows = slice(1, 1 + data.shape[0]) if self.counter else slice(0, data.shape[0])
        data[:] = self.trace.samples[rows, a:a + number_of_samples_per_channel]
        self.clock = (a + number_of_samples_per_channel) / RATE
        return number_of_samples_per_channel

    def _closed(self) -> None:
        if self.resume_at is not None:  # time passes while the source restarts the task
            self.pos = self.resume_at
            self.clock = self.resume_at / RATE
            self.resume_at = None

    def counter_reader(self, in_stream):
        assert in_stream is self.tasks[-1].in_stream
        reader = mock.create_autospec(CounterReader, instance=True)

        def read(data, number_of_samples_per_channel=-1, timeout=10.0):
            a = self._read_from
            data[:] = self.counts[a:a + number_of_samples_per_channel]
            return number_of_samples_per_channel

        reader.read_many_sample_uint32.side_effect = read
        return reader

    def _start(self, state: dict) -> None:
        self._stop.clear()

        def play() -> None:
            n = state["n"]
            while self.pos + n <= self.trace.samples.shape[1] and not self._stop.is_set():
                self._read_from = self.pos
                overflowing = self.overflow_at is not None and self.pos >= self.overflow_at
                state["cb"](None, 1, n, None)
                self.pos += n
                if overflowing:
                    return  # DAQmx stops delivering after the error; the source restarts

        th = threading.Thread(target=play, daemon=True)
        self.threads.append(th)
        th.start()


def _source(fake: FakeDaq, **kw) -> NiSyncSource:
    s = NiSettings(device="Dev1", vsync="ai2", rate_hz=RATE, block_samples=BLOCK,
                   read_timeout_s=5.0, **kw)
    return NiSyncSource(s, task_factory=fake.task, reader_factory=fake.reader,
                        monotonic=lambda: fake.clock)


def _collect(src: NiSyncSource, n: int) -> list:
    got = []
    with src:
        for ev in src.events():
            got.append(ev)
            if len(got) >= n:
                break
    return got


def test_fake_task_is_configured_and_plays_into_the_callback() -> None:
    tr = rig_trace(2.0, monitor_delay_s=0.025)
    fake = FakeDaq(tr)
    src = _source(fake)
    n = len(tr.frame_starts) - 2  # all closed frames that full blocks cover
    events = _collect(src, n)
    task = fake.tasks[0]
    names = [c.args[0] for c in task.ai_channels.add_ai_voltage_chan.call_args_list]
    assert names == ["Dev1/ai0", "Dev1/ai1", "Dev1/ai2"]
    assert task.timing.cfg_samp_clk_timing.call_args.args == (RATE,)
    task.start.assert_called_once_with()
    task.close.assert_called_once_with()  # closed on exit
    assert [e.imaging_frame for e in events] == list(range(n))
    assert [e.stim_frame for e in events] == expected_stim_frames(tr)[:n]
    assert src.status()["ni_monitor_delay_ms"] == pytest.approx(25.0, abs=1.5)
    assert src.status()["ni_overflows"] == 0


def test_buffer_overflow_is_reported_counted_and_numbering_survives(caplog) -> None:
    tr = rig_trace(3.0, seed=2)
    fake = FakeDaq(tr, overflow_at=10000, resume_at=14000)
    src = _source(fake)
    truth = {int(s): i for i, s in enumerate(tr.frame_starts)}
    last_full = (tr.samples.shape[1] // BLOCK) * BLOCK
    expect_last = max(i for s, i in truth.items() if s < last_full) - 1
    with caplog.at_level("ERROR"):
        events = []
        with src:
            for ev in src.events():
                events.append(ev)
                if ev.imaging_frame >= expect_last:
                    break
    assert len(fake.tasks) == 2  # restarted after the overflow
    assert "buffer overflow" in caplog.text and "-200279" in caplog.text
    for e in events:  # every frame published keeps its true number and stimulus
        i = truth[int(round(e.t * RATE))]
        assert e.imaging_frame == i and e.stim_frame == expected_stim_frames(tr)[i]
    lost = set(range(expect_last + 1)) - {e.imaging_frame for e in events}
    st = src.status()
    assert st["ni_overflows"] == 1 and st["ni_gaps"] == 1
    assert st["ni_lost_frames"] == len(lost) > 0  # reported, not silently renumbered


def test_missing_device_is_a_clear_acquisition_error() -> None:
    fake = FakeDaq(rig_trace(0.2))

    def task():
        t = fake.task()
        t.ai_channels.add_ai_voltage_chan.side_effect = nidaqmx.errors.DaqError(
            "Device identifier is invalid.", -200220)
        return t

    src = NiSyncSource(NiSettings(device="Dev9"), task_factory=task, reader_factory=fake.reader)
    with pytest.raises(AcquisitionError, match=r"not found.*-200220.*\[daq.ni\] device") as ei:
        src.__enter__()
    assert isinstance(ei.value.__cause__, nidaqmx.errors.DaqError)
    fake.tasks[0].close.assert_called_once_with()  # the half-made task is released


def test_other_read_errors_end_the_source_with_our_error() -> None:
    fake = FakeDaq(rig_trace(1.0), fail_code=-201003)
    with _source(fake) as src, pytest.raises(AcquisitionError, match="-201003") as ei:
        for _ in src.events():
            pass
    assert isinstance(ei.value.__cause__, nidaqmx.errors.DaqReadError)


def test_a_stalled_device_times_out_clearly() -> None:
    fake = FakeDaq(rig_trace(0.01))  # shorter than one block: no callback ever comes
    s = NiSettings(rate_hz=RATE, block_samples=BLOCK, read_timeout_s=0.3)
    src = NiSyncSource(s, task_factory=fake.task, reader_factory=fake.reader)
    with src, pytest.raises(AcquisitionError, match="no samples"):
        next(iter(src.events()))


@pytest.mark.hardware
def test_real_ni_device_reads_the_sync_lines() -> None:
    """On a rig: CORTEXCAST_NI_DEVICE (default Dev1), frame clock on ai0, photodiode on ai1,
    with the microscope imaging. Expects frame-clock pulses within 5 s."""
    s = NiSettings(device=os.environ.get("CORTEXCAST_NI_DEVICE", "Dev1"),
                   frame_clock=os.environ.get("CORTEXCAST_NI_FRAME_CLOCK", "ai0"),
                   photodiode=os.environ.get("CORTEXCAST_NI_PHOTODIODE", "ai1"),
                   read_timeout_s=5.0)
    with NiSyncSource(s) as src:
        first = next(iter(src.events()))
    assert first.imaging_frame == 0 and first.photodiode is not None
    assert np.isfinite(first.photodiode).all()


def test_the_fakes_are_strict() -> None:
    """A misspelled or mis-called nidaqmx method fails on these fakes, as on the real ones."""
    fake = FakeDaq(rig_trace(0.1))
    task = fake.task()
    with pytest.raises(AttributeError):
        task.ai_channels.add_ai_voltage_channel("Dev1/ai0")  # the real name: ..._chan
    with pytest.raises(TypeError):
        task.timing.cfg_samp_clk_timing(rate=1000.0, sample_mod="x")
    reader = fake.reader(task.in_stream)
    with pytest.raises(TypeError):
        reader.read_many_sample(np.zeros((2, 4)), n_samples=4)


@pytest.mark.parametrize("counter", ["", "ctr0"])
def test_simulated_backend_streams_the_sync_lines_in_real_time(counter: str) -> None:
    s = NiSettings(backend="simulated", vsync="ai2", block_samples=200, read_timeout_s=5.0,
                   sim_monitor_delay_s=0.03, frame_counter=counter)
    src = NiSyncSource(s)
    events = _collect(src, 8)
    assert [e.imaging_frame for e in events] == list(range(8))
    assert all(e.photodiode is not None and 300 <= e.photodiode.size <= 340 for e in events)
    stims = [e.stim_frame for e in events]
    assert stims == sorted(stims) and stims[-1] >= 4
    assert src.status()["ni_monitor_delay_ms"] == pytest.approx(30.0, abs=0.5)


def test_frame_counter_mode_counts_edges_on_the_ai_sample_clock() -> None:
    tr = rig_trace(2.0, monitor_delay_s=0.02)
    fake = FakeDaq(tr, counter=True)
    s = NiSettings(device="Dev1", frame_counter="ctr0", frame_counter_terminal="PFI8",
                   vsync="ai2", rate_hz=RATE, block_samples=BLOCK, read_timeout_s=5.0)
    src = NiSyncSource(s, task_factory=fake.task, reader_factory=fake.reader,
                       counter_reader_factory=fake.counter_reader, monotonic=lambda: fake.clock)
    n = len(tr.frame_starts) - 2
    events = _collect(src, n)
    ctask, atask = fake.tasks
    ctask.ci_channels.add_ci_count_edges_chan.assert_called_once()
    assert ctask.ci_channels.add_ci_count_edges_chan.call_args.args == ("Dev1/ctr0",)
    chan = ctask.ci_channels.add_ci_count_edges_chan.return_value
    assert chan.ci_count_edges_term == "/Dev1/PFI8"
    assert ctask.timing.cfg_samp_clk_timing.call_args.kwargs["source"] == "/Dev1/ai/SampleClock"
    names = [c.args[0] for c in atask.ai_channels.add_ai_voltage_chan.call_args_list]
    assert names == ["Dev1/ai1", "Dev1/ai2"]  # no analog frame clock in this mode
    assert ctask.start.call_count == 1 and atask.start.call_count == 1
    assert [e.imaging_frame for e in events] == list(range(n))
    np.testing.assert_array_equal([round(e.t * RATE) for e in events], tr.frame_starts[:n])
    assert [e.stim_frame for e in events] == expected_stim_frames(tr)[:n]
    ctask.close.assert_called_once_with()
