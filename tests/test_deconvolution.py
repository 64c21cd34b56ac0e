"""Online AR(1) deconvolution: closer to the spikes than ΔF/F, causal, calm on noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cortexcast.decoder.live.deconvolution import (
    INDICATOR_TAU_S, DeconvolutionSettings, OnlineDeconvolver, deconvolve_traces,
)

FPS = 30.0


def _calcium(n: int, t: int, noise_sd: float, seed: int = 0, tau_s: float = 1.25,
             rise_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(spikes, ΔF/F) (T, N): Poisson spikes at ~1 Hz through GCaMP-like kinetics + noise."""
    rng = np.random.default_rng(seed)
    spikes = rng.poisson(1.0 / FPS, (t, n)).astype(np.float32)
    amp = rng.lognormal(math.log(0.25), 0.3, n)
    g = math.exp(-1 / (tau_s * FPS))
    a_rise = 1.0 if rise_s == 0 else 1 - math.exp(-1 / (rise_s * FPS))
    c = np.zeros(n)
    r = np.zeros(n)
    dff = np.empty((t, n))
    for i in range(t):
        c = g * c + spikes[i] * amp
        r += a_rise * (c - r)
        dff[i] = r
    return spikes, (dff + rng.normal(0, noise_sd, dff.shape)).astype(np.float32)


def _run(dff: np.ndarray, settings: DeconvolutionSettings = DeconvolutionSettings()) -> np.ndarray:
    dec = OnlineDeconvolver(dff.shape[1], FPS, settings)
    return np.stack([dec(y) for y in dff])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean(0)
    b = b - b.mean(0)
    return float(np.mean((a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0) + 1e-12)))


@pytest.mark.parametrize("noise_sd,rise_s", [(0.02, 0.0), (0.05, 0.0), (0.02, 0.07)])
def test_recovers_spikes_better_than_dff(noise_sd, rise_s) -> None:
    spikes, dff = _calcium(200, 1500, noise_sd, rise_s=rise_s)
    s = _run(dff, DeconvolutionSettings(tau_s=1.25))
    assert (s >= 0).all() and s.dtype == np.float32
    assert _corr(s, spikes) > _corr(dff, spikes) + 0.1


def test_causal_future_samples_do_not_change_past_output() -> None:
    spikes, dff = _calcium(50, 400, 0.03, seed=1)
    full = _run(dff)
    changed = dff.copy()
    changed[250:] += np.random.default_rng(9).normal(0, 1.0, changed[250:].shape).astype(np.float32)
    part = _run(changed)
    np.testing.assert_array_equal(full[:250], part[:250])
    assert not np.array_equal(full[250:], part[250:])
    np.testing.assert_array_equal(deconvolve_traces(dff, FPS), full)  # offline = online


def test_stable_on_noise() -> None:
    rng = np.random.default_rng(2)
    sd = 0.05
    noise = rng.normal(0, sd, (6000, 300)).astype(np.float32)  # 200 s of spikeless ΔF/F
    dec = OnlineDeconvolver(300, FPS)
    out = np.stack([dec(y) for y in noise])
    assert np.isfinite(out).all()
    assert (out > 0).mean() < 0.03  # few false events (2 SD threshold: ~2.3 % of frames)
    assert out[-3000:].mean() < 0.1 * sd  # and no drift upwards
    np.testing.assert_allclose(dec.noise_sd, sd, rtol=0.15)
    # NaN/inf from a blank ROI do not poison the state
    bad = noise[0].copy()
    bad[:5] = np.nan
    assert np.isfinite(dec(bad)).all() and np.isfinite(dec.c).all()


def test_decay_from_the_indicator_or_tau() -> None:
    s = DeconvolutionSettings(indicator="gcamp6f")
    assert s.ar_coefficient(FPS) == pytest.approx(math.exp(-1 / (INDICATOR_TAU_S["gcamp6f"] * FPS)))
    assert DeconvolutionSettings(tau_s=2.0, indicator="?").ar_coefficient(10.0) == \
        pytest.approx(math.exp(-1 / 20))
    with pytest.raises(ValueError, match="indicator must be one of"):
        DeconvolutionSettings(indicator="rcamp")
    with pytest.raises(ValueError, match="tau_s"):
        DeconvolutionSettings(tau_s=0.0)
    with pytest.raises(ValueError, match="expected 3"):
        OnlineDeconvolver(3, FPS)(np.zeros(4, np.float32))


@pytest.mark.slow
def test_on_the_simulated_rig_deconvolved_extraction_is_closer_to_the_spikes() -> None:
    """Frames -> ΔF/F (ground-truth ROIs) -> deconvolution, against the sim's true spikes."""
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.settings import SimSettings
    from cortexcast.core.events import ImagingFrame
    from cortexcast.decoder.live.extraction import ActivityExtractor

    rig = SimulatedRig(SimSettings(n_neurons=300, frame_height=128, frame_width=128,
                                   paced=False, duration_s=20.0))
    ex = ActivityExtractor(rig.rois(), FPS)
    dff, spikes = [], []
    with rig:
        for ev in rig.events():
            if isinstance(ev, ImagingFrame):
                dff.append(ex(ev.pixels))
                spikes.append(rig.truth["spikes"].astype(np.float32))
    dff_a, spikes_a = np.stack(dff), np.stack(spikes)
    deconv = deconvolve_traces(dff_a, FPS, DeconvolutionSettings(tau_s=1.0))  # the sim's decay
    skip = 90  # the extraction's baseline settles
    assert _corr(deconv[skip:], spikes_a[skip:]) > _corr(dff_a[skip:], spikes_a[skip:]) + 0.03
