"""Settings of the NI-DAQmx sync source (table ``[daq.ni]``); importing this needs no nidaqmx."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class NiSettings:
    backend: Literal["nidaqmx", "simulated"] = "nidaqmx"
    """"nidaqmx": the real DAQ. "simulated": the same sync lines computed in real time
    (daq/ni/synthetic.py: frame clock at sim_frame_rate_hz, photodiode flips at stim_rate_hz
    after sim_monitor_delay_s) to try a rig config without the hardware."""
    sim_frame_rate_hz: float = 30.0
    sim_monitor_delay_s: float = 0.02
    device: str = "Dev1"
    """NI device name as NI MAX shows it (e.g. "Dev1", "PXI1Slot2")."""
    frame_clock: str = "ai0"
    """Analog input wired to the microscope's frame clock (one pulse per imaging frame).
    Not read when frame_counter is set."""
    frame_counter: str = ""
    """Count frame-clock edges with this counter instead (e.g. "ctr0"), sampled on the
    analog inputs' sample clock: catches pulses shorter than one analog sample."""
    frame_counter_terminal: str = ""
    """Input terminal of the frame clock for the counter (e.g. "PFI8"); "" = the counter's
    default source terminal (see the device pinout in NI MAX)."""
    photodiode: str = "ai1"
    """Analog input wired to the photodiode on the stimulus monitor's sync square."""
    vsync: str = ""
    """Optional analog input wired to the stimulus computer's flip/vsync line (measures the
    monitor's delay); "" when not wired."""
    terminal: Literal["DEFAULT", "RSE", "NRSE", "DIFF", "PSEUDO_DIFF"] = "RSE"
    """Input terminal configuration of the three inputs."""
    min_v: float = -10.0
    max_v: float = 10.0
    """Input range of the analog inputs (V)."""
    rate_hz: float = 10000.0
    """Hardware sample clock of the analog inputs."""
    block_samples: int = 500
    """Samples per channel read per every-N-samples callback (500 at 10 kHz = 50 ms)."""
    buffer_s: float = 5.0
    """Size of the DAQmx input buffer (s of samples); a reader that falls further behind than
    this loses samples and the source reports a buffer overflow."""
    frame_threshold_v: float = 2.5
    frame_hysteresis_v: float = 0.5
    """Frame clock edge: rising above threshold + hysteresis/2 after being below
    threshold - hysteresis/2 (a Schmitt trigger, so noise does not add frames)."""
    photodiode_threshold_v: float = 0.6
    photodiode_hysteresis_v: float = 0.2
    """Photodiode transitions (either direction) with the same Schmitt rule."""
    vsync_threshold_v: float = 2.5
    vsync_hysteresis_v: float = 0.5
    stim_frames_per_transition: int = 1
    """The stimulus program toggles the sync square every this many stimulus frames
    (1: every frame). Frames between transitions are counted at stim_rate_hz."""
    stim_rate_hz: float = 30.0
    """Stimulus monitor frame rate (used when stim_frames_per_transition > 1)."""
    max_monitor_delay_s: float = 0.1
    """A photodiode transition is paired with the latest vsync edge at most this long before."""
    first_frame: int = 0
    """Imaging frame index of the first frame-clock pulse counted (match the frame source)."""
    read_timeout_s: float = 10.0
    """Read timeout inside the callback and the longest wait for a block before the source
    reports the DAQ as stalled."""

    def __post_init__(self) -> None:
        if not self.device:
            raise ValueError("device is required (e.g. 'Dev1', see NI MAX)")
        if not (self.frame_clock or self.frame_counter) or not self.photodiode:
            raise ValueError("photodiode and frame_clock (or frame_counter) are required "
                             "(e.g. 'ai1', 'ai0')")
        if not 0 < self.rate_hz <= 2e6:
            raise ValueError(f"rate_hz must be in (0, 2e6], got {self.rate_hz}")
        if self.block_samples < 1:
            raise ValueError("block_samples must be >= 1")
        if self.buffer_s * self.rate_hz < 2 * self.block_samples:
            raise ValueError("buffer_s must hold at least two blocks")
        if self.min_v >= self.max_v:
            raise ValueError("min_v must be < max_v")
        for name in ("frame_hysteresis_v", "photodiode_hysteresis_v", "vsync_hysteresis_v"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.stim_frames_per_transition < 1:
            raise ValueError("stim_frames_per_transition must be >= 1")
        if self.sim_frame_rate_hz <= 0 or self.sim_monitor_delay_s < 0:
            raise ValueError("sim_frame_rate_hz must be > 0 and sim_monitor_delay_s >= 0")
        if self.stim_rate_hz <= 0 or self.max_monitor_delay_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("stim_rate_hz, max_monitor_delay_s and read_timeout_s must be > 0")

    @property
    def channels(self) -> tuple[str, ...]:
        """Analog channels in read order: [frame clock,] photodiode[, vsync]."""
        names = (() if self.frame_counter else (self.frame_clock,)) + (self.photodiode,) \
            + ((self.vsync,) if self.vsync else ())
        return tuple(f"{self.device}/{c}" for c in names)

    @property
    def rows(self) -> int:
        """Rows of a block the sync builder takes: frame signal, photodiode[, vsync]."""
        return 3 if self.vsync else 2
