"""The simulated V1 population: receptive fields, temporal kernels, spikes and calcium.

Each stimulus frame is filtered once by a small bank of receptive-field
shapes (Gabors at 8 orientations × 2 spatial frequencies in quadrature
pairs, and ON/OFF centre-surround fields at 2 sizes) with one FFT; a neuron
reads its field's output at its retinotopic position, so a frame costs one
FFT plus a gather, whatever the number of neurons.

Per neuron (all vectorised over neurons):

* simple cell: ``cos φ · even + sin φ · odd`` (phase φ); complex cell:
  ``sqrt(even² + odd²)``; ON / OFF cell: ± centre-surround; ~10 % of cells are
  not visually driven;
* a biphasic temporal kernel (fast minus a fraction of slow low-pass) and a
  response latency;
* a softplus spiking nonlinearity standardised per neuron on a calibration
  movie, so the mean rate follows the real neuron's mean response in
  Sensorium 2023 and its sparseness follows that neuron's coefficient of
  variation; a gain set by running, pupil and two shared slow latents, and
  Poisson spikes (trial-to-trial variability);
* GCaMP: calcium rises by one unit per spike and decays with
  ``calcium_decay_s``; ΔF/F = a · c / (1 + c / c_sat) followed with
  ``calcium_rise_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from cortexcast.daq.sim.stimulus import STIM_SHAPE

ORIENTATIONS = 8
WAVELENGTHS_PX = (8.0, 14.0)
DOG_SIGMAS_PX = (1.5, 3.0)
SIMPLE, COMPLEX, ON, OFF, NONVISUAL = range(5)
TYPE_NAMES = ("simple", "complex", "on", "off", "nonvisual")
TYPE_FRACTIONS = (0.32, 0.30, 0.14, 0.14, 0.10)
CALCIUM_SATURATION = 15.0  # spikes in the calcium pool at which ΔF/F is half-way saturated
STIM_MEAN, STIM_STD = 80.0, 57.0  # contrast normalisation of stimulus frames


class FilterBank:
    """Receptive-field shapes applied to a whole stimulus frame at once.

    ``__call__(frame)`` returns (n_maps + 1) * 36 * 64 float32 values
    (flattened); the last map is all zeros (the "odd" partner of cells that
    have none).
    """

    def __init__(self, scale: float = 1.0) -> None:
        """``scale`` multiplies every wavelength and sigma (receptive-field size)."""
        h, w = STIM_SHAPE
        kernels, self.gabor_index = [], {}
        wavelengths = tuple(scale * lam for lam in WAVELENGTHS_PX)
        dog_sigmas = tuple(scale * sc for sc in DOG_SIGMAS_PX)
        radius = int(np.ceil(2.5 * 0.4 * max(wavelengths)))
        size = 2 * radius + 1
        y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float64)
        for o in range(ORIENTATIONS):
            th = np.pi * o / ORIENTATIONS
            xr = x * np.cos(th) + y * np.sin(th)
            for f, lam in enumerate(wavelengths):
                sig = 0.4 * lam
                env = np.exp(-(x * x + y * y) / (2 * sig * sig))
                even = env * np.cos(2 * np.pi * xr / lam)
                even -= env * even.sum() / env.sum()  # no response to uniform light
                odd = env * np.sin(2 * np.pi * xr / lam)
                self.gabor_index[(o, f)] = len(kernels)
                kernels += [even, odd]
        self.dog_index = {}
        for d, sc in enumerate(dog_sigmas):
            r2 = x * x + y * y
            centre = np.exp(-r2 / (2 * sc * sc))
            surround = np.exp(-r2 / (2 * (3 * sc) ** 2))
            self.dog_index[d] = len(kernels)
            kernels.append(centre / centre.sum() - 0.85 * surround / surround.sum())
        self.n_maps = len(kernels)
        self.zero_map = self.n_maps
        self.rf_sigma = np.array([0.4 * lam for _ in range(ORIENTATIONS)
                                  for lam in wavelengths for _ in range(2)]
                                 + [3 * s * 0.6 for s in dog_sigmas] + [0.0])
        k = np.stack([kk / np.linalg.norm(kk) for kk in kernels])
        # big enough that the circular correlation never wraps into the frame
        self._shape = (sfft.next_fast_len(h + size - 1, real=True),
                       sfft.next_fast_len(w + size - 1, real=True))
        padded = np.zeros((self.n_maps, *self._shape))
        padded[:, :size, :size] = k[:, ::-1, ::-1]  # correlation, not convolution
        self._kf = sfft.rfft2(padded).astype(np.complex64)
        self._radius = radius
        self._frame = np.zeros(self._shape, np.float32)
        self._out = np.zeros((self.n_maps + 1, h, w), np.float32)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        h, w = STIM_SHAPE
        self._frame[:h, :w] = (frame.astype(np.float32) - STIM_MEAN) / STIM_STD
        conv = sfft.irfft2(sfft.rfft2(self._frame)[None] * self._kf, s=self._shape)
        r = self._radius  # output pixel p sits at p + radius
        self._out[:-1] = conv[:, r:r + h, r:r + w]
        return self._out.reshape(-1)


@dataclass(frozen=True)
class Population:
    """Fixed per-neuron parameters of one animal (arrays of length N)."""

    cell_type: np.ndarray
    rf_yx: np.ndarray  # (N, 2) int receptive-field centre in stimulus pixels
    rf_sigma: np.ndarray  # (N,) receptive-field envelope sigma (stimulus px)
    gather: np.ndarray  # (2, N) flat indices into the filter-bank output
    c_even: np.ndarray  # linear weights of the even / odd outputs
    c_odd: np.ndarray
    energy: np.ndarray  # weight of sqrt(even² + odd²) (complex cells)
    a_fast: np.ndarray  # temporal kernel: per-frame smoothing factors
    a_slow: np.ndarray
    biphasic: np.ndarray
    drive_mean: np.ndarray  # standardisation from the calibration movie
    drive_std: np.ndarray
    slope: np.ndarray  # u = slope * (x - mean) / std + bias
    bias: np.ndarray
    rate_scale: np.ndarray  # Hz per unit softplus
    beta_run: np.ndarray
    beta_pupil: np.ndarray
    loadings: np.ndarray  # (N, 2) shared latent loadings
    dff_amp: np.ndarray  # ΔF/F per spike

    @property
    def n(self) -> int:
        return int(self.cell_type.shape[0])


def retinotopy(coords_um: np.ndarray, all_coords_um: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """RF centres (row, col) in the 36×64 stimulus, a smooth map of cortical (x, y)."""
    h, w = STIM_SHAPE
    ang = rng.uniform(-0.3, 0.3)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    ref = all_coords_um[:, :2] @ rot.T
    lo, hi = ref.min(axis=0), ref.max(axis=0)
    uv = (coords_um[:, :2] @ rot.T - lo) / np.maximum(hi - lo, 1.0)
    flip = rng.random(2) < 0.5
    uv = np.where(flip, 1.0 - uv, uv)
    col_span = w * rng.uniform(0.5, 0.62)
    row_span = h * rng.uniform(0.55, 0.68)
    col = (w - col_span) / 2 + rng.normal(0, 2) + uv[:, 0] * col_span
    row = (h - row_span) / 2 + rng.normal(0, 1) + uv[:, 1] * row_span
    yx = np.stack([row, col], axis=1) + rng.normal(0.0, 1.5, size=(len(uv), 2))
    yx = np.rint(yx).astype(np.int64)
    yx[:, 0] = np.clip(yx[:, 0], 0, h - 1)
    yx[:, 1] = np.clip(yx[:, 1], 0, w - 1)
    return yx


def make_population(bank: FilterBank, rf_yx: np.ndarray, resp_mean: np.ndarray,
                    resp_std: np.ndarray, *, mean_rate_hz: float, running_gain: float,
                    shared_variability: float, dff_per_spike: float, dt: float,
                    rng: np.random.Generator, complex_fraction: float = TYPE_FRACTIONS[COMPLEX],
                    nonvisual_fraction: float = TYPE_FRACTIONS[NONVISUAL],
                    weak_fraction: float = 0.0, weak_drive: float = 1.0,
                    pupil_gain: float = 0.15) -> Population:
    """Draw every neuron's tuning; the standardisation is filled in by :func:`calibrate`.

    With the default keyword arguments the draws are exactly those of the original
    simulator (the new knobs only ever add draws after the original ones).
    """
    n = rf_yx.shape[0]
    h, w = STIM_SHAPE
    cell = rng.choice(len(TYPE_FRACTIONS), size=n,
                      p=type_fractions(complex_fraction, nonvisual_fraction))
    ori = rng.integers(ORIENTATIONS, size=n)
    sf = rng.integers(len(WAVELENGTHS_PX), size=n)
    dog = rng.integers(len(DOG_SIGMAS_PX), size=n)
    phase = rng.uniform(0, 2 * np.pi, n)
    gab = np.array([bank.gabor_index[(int(o), int(f))] for o, f in zip(ori, sf)])
    dogm = np.array([bank.dog_index[int(d)] for d in dog])
    is_gabor = (cell == SIMPLE) | (cell == COMPLEX)
    m_even = np.where(is_gabor, gab, np.where(cell == NONVISUAL, bank.zero_map, dogm))
    m_odd = np.where(is_gabor, gab + 1, bank.zero_map)
    pix = rf_yx[:, 0] * w + rf_yx[:, 1]
    gather = np.stack([m_even * h * w + pix, m_odd * h * w + pix])
    c_even = np.select([cell == SIMPLE, cell == ON, cell == OFF], [np.cos(phase), 1.0, -1.0], 0.0)
    c_odd = np.where(cell == SIMPLE, np.sin(phase), 0.0)
    energy = (cell == COMPLEX).astype(np.float64)
    tau_fast = rng.uniform(0.03, 0.08, n)
    tau_slow = rng.uniform(0.15, 0.4, n)
    # Real mean responses (heavy-tailed) set the rates; their CV sets the sparseness.
    ref = np.median(resp_mean)
    rate = mean_rate_hz * np.clip(resp_mean / ref, 0.1, 10.0)
    cv = resp_std / np.maximum(resp_mean, 1e-6)
    bias = np.clip(1.0 - 1.2 * np.log(np.maximum(cv, 1e-3)), -3.5, 0.5)
    slope = np.where(cell == NONVISUAL, 0.0, rng.uniform(1.2, 2.0, n))
    beta_run = rng.normal(running_gain, 0.5 * running_gain + 1e-9, n)
    beta_run *= np.where(rng.random(n) < 0.15, -0.5, 1.0)  # a minority is suppressed
    pop = Population(
        cell_type=cell, rf_yx=rf_yx, rf_sigma=bank.rf_sigma[m_even], gather=gather,
        c_even=c_even, c_odd=c_odd, energy=energy,
        a_fast=1 - np.exp(-dt / tau_fast), a_slow=1 - np.exp(-dt / tau_slow),
        biphasic=rng.uniform(0.2, 0.8, n),
        drive_mean=np.zeros(n), drive_std=np.ones(n), slope=slope, bias=bias,
        rate_scale=rate,  # divided by the calibrated mean softplus in calibrate()
        beta_run=beta_run, beta_pupil=rng.normal(pupil_gain, 0.15, n),
        loadings=rng.normal(0.0, shared_variability / np.sqrt(2), (n, 2)),
        dff_amp=dff_per_spike * rng.lognormal(0.0, 0.3, n),
    )
    if weak_fraction > 0:  # drawn last: the other draws stay those of the original animal
        weak = rng.random(n) < weak_fraction
        pop = replace(pop, slope=np.where(weak, weak_drive * slope, slope))
    return pop


def type_fractions(complex_fraction: float, nonvisual_fraction: float) -> tuple[float, ...]:
    """Probabilities of (simple, complex, ON, OFF, non-visual); the default ones exactly
    when the knobs are at their defaults, else simple/ON/OFF share the rest in proportion."""
    if (complex_fraction, nonvisual_fraction) == (TYPE_FRACTIONS[COMPLEX],
                                                  TYPE_FRACTIONS[NONVISUAL]):
        return TYPE_FRACTIONS
    rest = 1.0 - complex_fraction - nonvisual_fraction
    base = TYPE_FRACTIONS[SIMPLE] + TYPE_FRACTIONS[ON] + TYPE_FRACTIONS[OFF]
    p = [TYPE_FRACTIONS[SIMPLE] / base * rest, complex_fraction,
         TYPE_FRACTIONS[ON] / base * rest, TYPE_FRACTIONS[OFF] / base * rest,
         nonvisual_fraction]
    return tuple(float(x) / sum(p) for x in p)


class NeuralState:
    """The time-varying part: temporal-kernel, latency, calcium and ΔF/F state."""

    def __init__(self, pop: Population, latency_frames: int) -> None:
        n = pop.n
        f32 = np.float32
        self.pop = pop
        self._p = {k: getattr(pop, k).astype(f32) for k in (
            "c_even", "c_odd", "energy", "a_fast", "a_slow", "biphasic", "slope", "bias",
            "rate_scale", "beta_run", "beta_pupil", "dff_amp")}
        self._p["inv_std"] = (1.0 / pop.drive_std).astype(f32)
        self._p["mean"] = pop.drive_mean.astype(f32)
        self._load = pop.loadings.astype(f32)
        self.fast = np.zeros((2, n), f32)
        self.slow = np.zeros((2, n), f32)
        self._delay = np.zeros((latency_frames + 1, 2, n), f32)
        self._k = 0
        self.calcium = np.zeros(n, f32)
        self.dff = np.zeros(n, f32)
        self.rate = np.zeros(n, f32)
        self.spikes = np.zeros(n, np.int64)

    def drive(self, bank_out: np.ndarray) -> np.ndarray:
        """Visual drive x (N,) for one imaging frame's stimulus (before standardisation)."""
        p = self._p
        d = self._delay
        d[self._k] = bank_out[self.pop.gather]
        self._k = (self._k + 1) % d.shape[0]
        v = d[self._k]  # the oldest entry: latency_frames ago
        self.fast += p["a_fast"] * (v - self.fast)
        self.slow += p["a_slow"] * (v - self.slow)
        y = self.fast - p["biphasic"] * self.slow
        x = p["c_even"] * y[0] + p["c_odd"] * y[1]
        x += p["energy"] * np.sqrt(y[0] * y[0] + y[1] * y[1])
        return x

    def step(self, bank_out: np.ndarray, run: float, pupil_z: float, latent: np.ndarray,
             dt: float, decay: float, rise: float, rng: np.random.Generator) -> None:
        """Advance one imaging frame: rates, Poisson spikes, calcium, ΔF/F."""
        p = self._p
        u = (self.drive(bank_out) - p["mean"]) * p["inv_std"] * p["slope"] + p["bias"]
        log_gain = p["beta_run"] * run + p["beta_pupil"] * pupil_z + self._load @ latent
        self.rate = p["rate_scale"] * np.logaddexp(0, u) * np.exp(log_gain)
        self.spikes = rng.poisson(self.rate * dt)
        self.indicator(self.spikes, decay, rise)

    def indicator(self, spikes: np.ndarray, decay: float, rise: float) -> None:
        """GCaMP: calcium jumps by one per spike and decays; ΔF/F saturates and lags it."""
        self.calcium *= decay
        self.calcium += spikes
        target = self._p["dff_amp"] * self.calcium / (1 + self.calcium / CALCIUM_SATURATION)
        self.dff += rise * (target - self.dff)


def calibrate(pop: Population, bank: FilterBank, frames: np.ndarray,
              latency_frames: int) -> Population:
    """Standardise every neuron's drive and set its rate scale on a calibration movie."""
    state = NeuralState(pop, latency_frames)
    xs = np.stack([state.drive(bank(f)) for f in frames])[min(30, len(frames) // 4):]
    mean = xs.mean(axis=0).astype(np.float64)
    std = xs.std(axis=0).astype(np.float64)
    std[std < 1e-6] = 1.0
    u = (xs - mean) / std * pop.slope + pop.bias
    mean_sp = np.logaddexp(0, u).mean(axis=0)
    return replace(pop, drive_mean=mean, drive_std=std,
                   rate_scale=pop.rate_scale / np.maximum(mean_sp, 1e-6))


def coverage_mask(pop: Population, threshold: float = 0.25) -> np.ndarray:
    """36×64 bool: where the visually driven neurons' receptive fields lie."""
    h, w = STIM_SHAPE
    density = np.zeros((h, w))
    visual = pop.cell_type != NONVISUAL
    for sig in np.unique(pop.rf_sigma[visual]):
        sel = visual & (pop.rf_sigma == sig)
        hist = np.zeros((h, w))
        np.add.at(hist, (pop.rf_yx[sel, 0], pop.rf_yx[sel, 1]), 1.0)
        density += ndimage.gaussian_filter(hist, sig, mode="constant")
    if density.max() <= 0:
        return np.zeros((h, w), bool)
    return density >= threshold * density.max()
