"""Settings of the simulated two-photon rig (table ``[daq.sim]``).

``mouse`` and ``seed`` define the *animal*: which real Sensorium field of view
the neurons are laid out from, their receptive fields, tuning and footprints.
The same settings always give the same animal (so a decoder trained on it
works live). ``session_seed`` and the session/screen knobs (``paced``,
``duration_s``, ``images``, scene lengths, ``stim_rate_hz``, photodiode)
change only what happens in a session; the neuron counts, frame size,
``imaging_rate_hz`` and the neuron and microscope knobs are part of the
animal and its imaging, so keep them as trained (``sim.json`` holds them).

``clips`` turns the rig into a whole calibration rig: it plays a ``cortexcast clips``
folder's playlist and, like a rig's separate programs, announces what it shows to
``stimulus_to`` and its eye tracker's readings to ``eye_to`` over UDP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cortexcast.core.config import path_field

MICE = tuple("ABCDEFGHIJ")
"""The ten Sensorium 2023 mice whose real neuron coordinates ship with the package."""

IMAGE_POOLS = ("train", "validation", "test", "all")


def check_host_port(name: str, value: str, *, empty_ok: bool = False) -> None:
    """``value`` is ``host:port`` (port 1..65535), or "" when ``empty_ok``."""
    if empty_ok and value == "":
        return
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name} must be 'host:port' (e.g. '127.0.0.1:5557')"
                         f"{' or empty' if empty_ok else ''}, got {value!r}")


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo:g}..{hi:g}, got {value!r}")


@dataclass(frozen=True)
class SimSettings:
    # -- the animal ------------------------------------------------------------------------
    mouse: str = "A"
    """Sensorium 2023 mouse (A..J) whose real cortical coordinates lay out the neurons."""
    seed: int = 0
    """Animal seed (>= 0): with ``mouse`` fixes neurons, receptive fields and footprints."""
    n_neurons: int = 7800
    """Number of simulated neurons (100..100000)."""
    soma_diameter_um: float = 10.0
    """Soma diameter (µm, 4..30); footprints are at least ~2.4 px across however small."""

    # -- the session -------------------------------------------------------------------------
    session_seed: int = 1
    """Session seed (>= 0): the movie, behaviour, spikes, shot noise and motion."""
    paced: bool = True
    """Sleep to the monotonic clock (absolute deadlines, no drift); false: as fast as possible."""
    duration_s: float | None = None
    """Stop after this much rig time (s, > 0); None: run until closed (or the clips end)."""
    images: str = "all"
    """Image pool the generated movie uses: "train", "validation" or "test" (neither ever in
    training clips), or "all"."""
    scene_min_s: float = 1.0
    """Shortest scene between cuts (s, 0.1..60)."""
    scene_max_s: float = 4.0
    """Longest scene between cuts (s, >= scene_min_s, <= 60)."""

    clips: str = path_field("")
    """A ``cortexcast clips`` folder: play its ``playlist.csv`` in order (instead of a
    generated movie) and end after the last entry, announcing every flip's clip identity to
    ``stimulus_to`` and the eye tracker's pupil and eye position to ``eye_to`` (UDP JSON, as a
    rig's stimulus and eye-tracking programs do); its sync then carries only ``running``.
    "": the generated movie, no announcements."""
    stimulus_to: str = "127.0.0.1:5557"
    """Where the stand-in stimulus computer sends its clip identities ("host:port"; with
    ``clips``): the ``[daq.stimulus] listen`` address."""
    eye_to: str = "127.0.0.1:5558"
    """Where the stand-in eye tracker sends pupil and eye position ("host:port"; with
    ``clips``): the ``[daq.behavior] listen`` address; "": no eye tracker."""

    # -- microscope ----------------------------------------------------------------------------
    frame_height: int = 512
    """Imaging frame height (px, 32..4096)."""
    frame_width: int = 512
    """Imaging frame width (px, 32..4096)."""
    imaging_rate_hz: float = 30.0
    """Imaging frame rate (Hz, 1..200)."""
    motion_px: float = 0.0
    """Typical rigid motion of the brain (px, 0..20, integer shifts); 0: none."""
    baseline_counts: float = 300.0
    """Median resting brightness of a soma pixel above the dark level (counts, 1..20000)."""
    neuropil_counts: float = 120.0
    """Mean neuropil brightness (counts, 0..20000)."""
    dark_counts: float = 100.0
    """PMT/digitiser offset added to every pixel (counts, 0..20000)."""
    photon_gain: float = 2.0
    """Counts per detected photon (0..100): shot-noise variance = gain × mean; 0: no shot noise."""
    read_noise_counts: float = 4.0
    """Gaussian read noise (counts, 0..1000)."""
    drift_fraction: float = 0.05
    """Amplitude of slow baseline drift (fraction of brightness, 0..0.5)."""
    drift_period_s: float = 120.0
    """Typical period of the slow drift (s, 1..100000)."""

    # -- neurons ---------------------------------------------------------------------------------
    mean_rate_hz: float = 2.0
    """Median mean firing rate (spikes/s, 0.05..50)."""
    running_gain: float = 0.5
    """Mean log-gain increase of visual responses while running (0..3)."""
    shared_variability: float = 0.25
    """Std of the slow shared log-gain fluctuations (trial-to-trial variability, 0..2)."""
    latency_s: float = 0.05
    """Visual response latency (s, 0..0.5)."""
    calcium_rise_s: float = 0.07
    """GCaMP rise time constant (s, 0.001..1)."""
    calcium_decay_s: float = 1.0
    """GCaMP decay time constant (s, 0.05..5)."""
    dff_per_spike: float = 0.25
    """Median ΔF/F of one spike (0.01..5)."""
    complex_fraction: float = 0.30
    """Fraction of phase-invariant complex cells (0..0.9); simple/ON/OFF share the rest."""
    nonvisual_fraction: float = 0.10
    """Fraction of neurons with no visual drive at all (0..0.9)."""
    weak_fraction: float = 0.0
    """Fraction of the visual neurons that are only weakly driven (0..1)."""
    weak_drive: float = 0.3
    """Drive slope of the weakly driven neurons, relative to the others (0..1)."""
    pupil_gain: float = 0.15
    """Mean log-gain increase of responses per unit of pupil z-score (arousal; -1..3)."""
    eye_shift_px: float = 0.0
    """Retinal image shift (stimulus px) per unit of eye position (eye std units, 0..10):
    the neurons see the screen shifted by where the eye points; 0: the eye does not move
    the image."""
    eye_tracking_noise: float = 0.0
    """Noise of the reported pupil centre (eye std units, 0..2); the report is otherwise an
    exact linear function of the eye position."""
    eye_tracking_offset: float = 0.0
    """Constant offset of the reported pupil centre (eye std units, -2..2, both axes): the
    tracker's centre is not the optical axis."""
    eye_rotation_deg: float = 0.0
    """Retinal image rotation (degrees, 0..30) per unit of vertical eye position (torsion
    that goes with gaze); 0: the eye does not rotate the image."""
    retina_blur_px: float = 0.0
    """Gaussian blur of the retinal image (stimulus px, 0..5: optics, defocus); 0: sharp."""
    rf_scale: float = 1.0
    """Size of every receptive field (Gabor wavelength and envelope, centre-surround
    sigmas) relative to the original simulator (0.5..2)."""

    # -- stimulus screen -------------------------------------------------------------------------
    stim_rate_hz: float = 30.0
    """Stimulus frame rate (Hz, 1..240)."""
    monitor_delay_s: float = 0.01
    """Delay from flip command to light on the screen, as the photodiode sees it (s, 0..0.1)."""
    photodiode_samples: int = 10
    """Photodiode samples recorded per imaging frame (1..1000)."""
    photodiode_noise_v: float = 0.02
    """Photodiode noise (V, 0..1)."""

    def __post_init__(self) -> None:
        for name in ("seed", "session_seed", "n_neurons", "frame_height", "frame_width",
                     "photodiode_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if not isinstance(self.paced, bool):
            raise ValueError(f"paced must be true or false, got {self.paced!r}")
        if not isinstance(self.clips, str):
            raise ValueError(f"clips must be a folder path (a string), got {self.clips!r}")
        check_host_port("stimulus_to", self.stimulus_to)
        check_host_port("eye_to", self.eye_to, empty_ok=True)
        if self.mouse not in MICE:
            raise ValueError(f"mouse must be one of {', '.join(MICE)}, got {self.mouse!r}")
        if self.images not in IMAGE_POOLS:
            raise ValueError(f"images must be one of {', '.join(IMAGE_POOLS)}, got {self.images!r}")
        for name in ("seed", "session_seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        _check_range("n_neurons", self.n_neurons, 100, 100_000)
        _check_range("frame_height", self.frame_height, 32, 4096)
        _check_range("frame_width", self.frame_width, 32, 4096)
        _check_range("imaging_rate_hz", self.imaging_rate_hz, 1.0, 200.0)
        _check_range("stim_rate_hz", self.stim_rate_hz, 1.0, 240.0)
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration_s must be > 0 or None, got {self.duration_s}")
        _check_range("scene_min_s", self.scene_min_s, 0.1, 60.0)
        _check_range("scene_max_s", self.scene_max_s, self.scene_min_s, 60.0)
        _check_range("soma_diameter_um", self.soma_diameter_um, 4.0, 30.0)
        _check_range("motion_px", self.motion_px, 0.0, 20.0)
        _check_range("baseline_counts", self.baseline_counts, 1.0, 20000.0)
        _check_range("neuropil_counts", self.neuropil_counts, 0.0, 20000.0)
        _check_range("dark_counts", self.dark_counts, 0.0, 20000.0)
        _check_range("photon_gain", self.photon_gain, 0.0, 100.0)
        _check_range("read_noise_counts", self.read_noise_counts, 0.0, 1000.0)
        _check_range("drift_fraction", self.drift_fraction, 0.0, 0.5)
        _check_range("drift_period_s", self.drift_period_s, 1.0, 100000.0)
        _check_range("mean_rate_hz", self.mean_rate_hz, 0.05, 50.0)
        _check_range("running_gain", self.running_gain, 0.0, 3.0)
        _check_range("shared_variability", self.shared_variability, 0.0, 2.0)
        _check_range("latency_s", self.latency_s, 0.0, 0.5)
        _check_range("calcium_rise_s", self.calcium_rise_s, 0.001, 1.0)
        _check_range("calcium_decay_s", self.calcium_decay_s, 0.05, 5.0)
        _check_range("dff_per_spike", self.dff_per_spike, 0.01, 5.0)
        _check_range("complex_fraction", self.complex_fraction, 0.0, 0.9)
        _check_range("nonvisual_fraction", self.nonvisual_fraction, 0.0, 0.9)
        if self.complex_fraction + self.nonvisual_fraction > 0.95:
            raise ValueError("complex_fraction + nonvisual_fraction must be <= 0.95, got "
                             f"{self.complex_fraction + self.nonvisual_fraction:g}")
        _check_range("weak_fraction", self.weak_fraction, 0.0, 1.0)
        _check_range("weak_drive", self.weak_drive, 0.0, 1.0)
        _check_range("pupil_gain", self.pupil_gain, -1.0, 3.0)
        _check_range("eye_shift_px", self.eye_shift_px, 0.0, 10.0)
        _check_range("eye_tracking_noise", self.eye_tracking_noise, 0.0, 2.0)
        _check_range("eye_tracking_offset", self.eye_tracking_offset, -2.0, 2.0)
        _check_range("eye_rotation_deg", self.eye_rotation_deg, 0.0, 30.0)
        _check_range("retina_blur_px", self.retina_blur_px, 0.0, 5.0)
        _check_range("rf_scale", self.rf_scale, 0.5, 2.0)
        _check_range("monitor_delay_s", self.monitor_delay_s, 0.0, 0.1)
        _check_range("photodiode_samples", self.photodiode_samples, 1, 1000)
        _check_range("photodiode_noise_v", self.photodiode_noise_v, 0.0, 1.0)

    @property
    def mouse_index(self) -> int:
        return MICE.index(self.mouse)
