"""A family of simulated mice: the simulator's assumptions as distributions (issue 12).

One :class:`SimSettings` is one set of assumptions; a decoder tuned on it can win by
modelling them. :func:`sample_mouse` draws a whole animal and its recording from broad
distributions instead, most important first:

* eye movements: a third of the mice barely move the image (shift 0–0.5 px per eye std),
  the rest shift it 1–7 px, half of those also rotate it (2–15° per eye std of vertical
  position), and the retinal image is blurred by 0–1.5 px (optics);
* the eye tracker: pupil-centre offset (−0.5..0.5 eye std) and noise (0–0.3);
* receptive fields: size ×0.7–1.5, complex-cell fraction 0.15–0.65;
* indicator kinetics: GCaMP6s-, 6f- or 8m-like rise / decay time constants (each ±20 %)
  and ΔF/F per spike;
* imaging rate 6–30 Hz (log-uniform);
* noise correlations: shared latent log-gain fluctuations, std 0.1–1.2;
* visual drive: non-visual fraction 0.05–0.5, weakly driven 0–0.8 of the rest (drive
  0.1–0.6), running and pupil gains, mean rates, latency;
* 2,000–8,000 neurons, 30–240 training trials, any of the ten Sensorium layouts.

Seeds: ``SUITE_SEEDS`` (10_000..10_999) are what ``cortexcast suite`` draws by default and
were never looked at in development; development used ``DEV_SEEDS`` (900..999) only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from cortexcast.daq.sim.settings import MICE, SimSettings

DEV_SEEDS = range(900, 1000)
"""Family seeds used while developing the suite and the ridge (never report on these)."""
SUITE_SEEDS = range(10_000, 11_000)
"""Family seeds the suite uses by default (``--seed 10000`` = mice 10000, 10001, …)."""

INDICATORS: dict[str, tuple[float, float, float]] = {
    # name: (rise s, decay s, median ΔF/F per spike)
    "GCaMP6s": (0.18, 1.5, 0.25),
    "GCaMP6f": (0.05, 0.4, 0.12),
    "GCaMP8m": (0.02, 0.3, 0.3),
}


@dataclass(frozen=True)
class FamilyMouse:
    """One draw: the animal and its imaging, and how many training trials it gets."""

    seed: int
    settings: SimSettings
    trials: int
    indicator: str
    eye_model: str
    """'still' (the image barely moves), 'shift' or 'shift+rotate'."""

    def describe(self) -> dict[str, Any]:
        keys = ("mouse", "seed", "n_neurons", "imaging_rate_hz", "eye_shift_px",
                "eye_rotation_deg", "retina_blur_px", "eye_tracking_offset",
                "eye_tracking_noise", "rf_scale", "complex_fraction", "nonvisual_fraction",
                "weak_fraction", "weak_drive", "shared_variability", "calcium_rise_s",
                "calcium_decay_s", "dff_per_spike", "running_gain", "pupil_gain",
                "mean_rate_hz", "latency_s")
        s = dataclasses.asdict(self.settings)
        return {"family_seed": self.seed, "trials": self.trials, "indicator": self.indicator,
                "eye_model": self.eye_model,
                **{k: (round(s[k], 4) if isinstance(s[k], float) else s[k]) for k in keys}}


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def sample_mouse(seed: int, *, max_neurons: int | None = None,
                 max_trials: int | None = None, **fixed: Any) -> FamilyMouse:
    """Draw mouse ``seed`` of the family (deterministic per seed).

    ``max_neurons`` / ``max_trials`` cap the draws (small suites) without changing any other
    draw; ``fixed`` overrides SimSettings fields after the draw (e.g. frame size).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng([int(seed), 1212])
    kw: dict[str, Any] = {}
    # eye movements: the assumption the live decoder leans on most
    u = rng.random()
    if u < 1 / 3:
        eye_model = "still"
        kw["eye_shift_px"] = rng.uniform(0.0, 0.5)
        kw["eye_rotation_deg"] = 0.0
    else:
        kw["eye_shift_px"] = rng.uniform(1.0, 7.0)
        rotate = rng.random() < 0.5
        eye_model = "shift+rotate" if rotate else "shift"
        kw["eye_rotation_deg"] = rng.uniform(2.0, 15.0) if rotate else 0.0
    kw["retina_blur_px"] = rng.uniform(0.0, 1.5)
    kw["eye_tracking_offset"] = rng.uniform(-0.5, 0.5)
    kw["eye_tracking_noise"] = rng.uniform(0.0, 0.3)
    # receptive fields
    kw["rf_scale"] = _loguniform(rng, 0.7, 1.5)
    kw["complex_fraction"] = rng.uniform(0.15, 0.65)
    # indicator kinetics
    indicator = str(rng.choice(list(INDICATORS)))
    rise, decay, dff = INDICATORS[indicator]
    kw["calcium_rise_s"] = rise * rng.uniform(0.8, 1.2)
    kw["calcium_decay_s"] = decay * rng.uniform(0.8, 1.2)
    kw["dff_per_spike"] = dff * rng.uniform(0.7, 1.4)
    # imaging, noise correlations, drive
    kw["imaging_rate_hz"] = round(_loguniform(rng, 6.0, 30.0), 2)
    kw["shared_variability"] = rng.uniform(0.1, 1.2)
    kw["nonvisual_fraction"] = rng.uniform(0.05, 0.5)
    kw["nonvisual_fraction"] = min(kw["nonvisual_fraction"], 0.95 - kw["complex_fraction"])
    kw["weak_fraction"] = rng.uniform(0.0, 0.8)
    kw["weak_drive"] = rng.uniform(0.1, 0.6)
    kw["running_gain"] = rng.uniform(0.2, 1.2)
    kw["pupil_gain"] = rng.uniform(0.0, 0.6)
    kw["mean_rate_hz"] = _loguniform(rng, 0.7, 4.0)
    kw["latency_s"] = rng.uniform(0.03, 0.09)
    # size of the recording
    n_neurons = int(rng.integers(2000, 8001))
    trials = int(np.rint(_loguniform(rng, 30, 240)))
    mouse = str(rng.choice(list(MICE)))
    animal_seed = int(rng.integers(0, 2**31 - 1))
    session_seed = int(rng.integers(0, 2**31 - 1))
    if max_neurons is not None:
        n_neurons = min(n_neurons, max_neurons)
    if max_trials is not None:
        trials = min(trials, max_trials)
    settings = SimSettings(mouse=mouse, seed=animal_seed, session_seed=session_seed,
                           n_neurons=n_neurons, paced=False,
                           **{k: (float(v) if isinstance(v, (float, np.floating)) else v)
                              for k, v in kw.items()})
    if fixed:
        settings = dataclasses.replace(settings, **fixed)
    return FamilyMouse(int(seed), settings, trials, indicator, eye_model)
