"""The realism knobs of the simulator: eye movements, state gain, slow imaging, presets."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app import simulate
from cortexcast.daq.sim.behavior import BehaviorModel
from cortexcast.daq.sim.meta import load_mouse
from cortexcast.daq.sim.neurons import COMPLEX, NONVISUAL, NeuralState
from cortexcast.daq.sim.rig import SimulatedRig
from cortexcast.daq.sim.settings import SimSettings
from cortexcast.daq.sim.stimulus import STIM_SHAPE
from cortexcast.decoder.offline.dataset import SensoriumDataset

SMALL = dict(n_neurons=300, frame_height=128, frame_width=128, paced=False)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cortexcast")
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


def _centroid(img: np.ndarray) -> np.ndarray:
    w = np.clip(img - np.median(img), 0, None)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(w * yy).sum(), (w * xx).sum()]) / w.sum()


@pytest.mark.parametrize("eye", [(1.0, 0.0), (-0.5, 1.5), (0.7, -1.2)])
def test_eye_position_shifts_the_retinal_image_by_eye_shift_px(eye):
    rig = SimulatedRig(SimSettings(**SMALL, eye_shift_px=2.5))
    screen = np.full(STIM_SHAPE, 80, np.uint8)
    screen[16:20, 30:34] = 250  # a bright square centred at (17.5, 31.5)
    retina = rig.retina(screen, np.array(eye))
    gaze_x, gaze_y = 2.5 * np.array(eye)
    # the neurons see screen point p + gaze at retinal point p: the square moves by -gaze
    assert np.allclose(_centroid(retina), [17.5 - gaze_y, 31.5 - gaze_x], atol=0.15)
    assert np.allclose(_centroid(rig.retina(screen, np.zeros(2))), [17.5, 31.5], atol=1e-6)


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_pupil_center_is_a_linear_function_of_the_eye_position(noise):
    meta = load_mouse("A")
    model = BehaviorModel(meta, 1 / 30, np.random.default_rng(3), noise,
                          np.random.default_rng(4))
    samples = [model.step() for _ in range(3000)]
    eye = np.array([s.eye for s in samples])
    seen = np.array([[s.pupil_x, s.pupil_y] for s in samples])
    recovered = (seen - meta.pupil_mean) / meta.pupil_std  # what a decoder can compute
    err = recovered - eye
    assert eye.std(0).min() > 0.3  # the eye really moves (saccades and drift)
    if noise == 0:
        assert np.abs(err).max() < 1e-6
    else:
        assert 0.5 * noise < err.std() < 1.5 * noise


def test_the_moving_eye_changes_the_drive_of_a_still_screen():
    screen = np.full(STIM_SHAPE, 60, np.uint8)
    screen[:, 32:] = 140  # a vertical edge in the middle of the screen
    clips = [np.repeat(screen[None], 240, axis=0)]
    quiet = dict(running_gain=0.0, pupil_gain=0.0, shared_variability=0.0)

    def rate_spread(shift: float) -> float:
        rig = SimulatedRig(SimSettings(**SMALL, **quiet, eye_shift_px=shift), clips=clips)
        rates = []
        with rig:
            for ev in rig.events():
                if type(ev).__name__ == "ImagingFrame":
                    rates.append(rig.truth["rate"].copy())
        pop = rig.population
        near = (pop.cell_type != NONVISUAL) & (np.abs(pop.rf_yx[:, 1] - 32) <= 6)
        r = np.array(rates[60:])[:, near]  # after the onset transient, RFs near the edge
        return float(np.median(r.std(0) / (r.mean(0) + 1e-3)))

    # still: only the small per-neuron pupil gain moves the rates
    still, moving = rate_spread(0.0), rate_spread(4.0)
    assert moving > 5 * still, (still, moving)


def test_gain_follows_running():
    def run_ratio(gain: float) -> float:
        s = SimSettings(**SMALL, running_gain=gain, pupil_gain=0.0, shared_variability=0.0,
                        duration_s=120.0, imaging_rate_hz=10.0, session_seed=5)
        rig = SimulatedRig(s)
        visual = rig.population.cell_type != NONVISUAL
        rates, running = [], []
        with rig:
            for ev in rig.events():
                if type(ev).__name__ == "SyncEvent":
                    rates.append(rig.truth["rate"][visual].mean())
                    running.append(ev.behavior["running"])
        rates, running = np.array(rates), np.array(running)
        assert (running > 10).sum() > 50 and (running < 1).sum() > 50  # runs and rests
        return float(rates[running > 10].mean() / rates[running < 1].mean())

    assert run_ratio(1.0) > 1.5 * run_ratio(0.0)
    assert abs(run_ratio(0.0) - 1.0) < 0.2


def test_state_gain_is_multiplicative_per_neuron():
    rig = SimulatedRig(SimSettings(**SMALL, running_gain=1.0))
    pop = rig.population
    drive = rig.bank(np.full(STIM_SHAPE, 120, np.uint8)).copy()
    rates = []
    for run in (0.0, 1.0):
        st = NeuralState(pop, rig.latency_frames)
        for _ in range(5):
            st.step(drive, run, 0.0, np.zeros(2, np.float32), rig.dt_neural, 0.9, 0.5,
                    np.random.default_rng(0))
        rates.append(st.rate.astype(np.float64))
    ok = rates[0] > 1e-3
    assert np.allclose(rates[1][ok] / rates[0][ok], np.exp(pop.beta_run[ok]), rtol=1e-3)


def test_cell_type_knobs():
    pop = SimulatedRig(SimSettings(**{**SMALL, "n_neurons": 2000}, complex_fraction=0.6,
                                   nonvisual_fraction=0.2)).population
    assert abs((pop.cell_type == COMPLEX).mean() - 0.6) < 0.05
    assert abs((pop.cell_type == NONVISUAL).mean() - 0.2) < 0.04
    base = SimulatedRig(SimSettings(**{**SMALL, "n_neurons": 2000})).population
    weak = SimulatedRig(SimSettings(**{**SMALL, "n_neurons": 2000}, weak_fraction=0.5,
                                    weak_drive=0.2)).population
    assert np.array_equal(base.cell_type, weak.cell_type)  # same animal otherwise
    ratio = weak.slope[base.slope > 0] / base.slope[base.slope > 0]
    assert set(np.round(np.unique(ratio), 6)) == {0.2, 1.0}
    assert abs((ratio < 1).mean() - 0.5) < 0.05
    with pytest.raises(ValueError, match="complex_fraction"):
        SimSettings(complex_fraction=0.9, nonvisual_fraction=0.5)


def test_slow_imaging_runs_the_neurons_at_the_stimulus_rate():
    rig = SimulatedRig(SimSettings(**SMALL, imaging_rate_hz=8.0))
    assert rig.substeps == 4 and rig.dt_neural <= 1 / 30
    assert SimulatedRig(SimSettings(**SMALL)).substeps == 1


def test_eight_hz_imaging_gives_held_responses(tmp_path: Path):
    out = tmp_path / "slow"
    assert cli(["--out", str(out), "--preset", "easy", "--neurons", "300", "--height", "128",
                "--width", "128", "--trials", "3", "--test-trials", "1", "--frames", "120",
                "--oracle-clips", "0", "--warmup-s", "1", "--imaging-rate-hz", "8"]) == 0
    ds = SensoriumDataset(out)
    for tid in ds.trial_ids():
        r = ds.responses(tid)
        changes = np.flatnonzero(np.any(np.diff(r, axis=0) != 0, axis=1))
        # one new value per imaging frame: 120 frames at 30 Hz = 4 s = 32 imaging frames
        assert 28 <= changes.size <= 33, changes.size
        assert np.all(np.diff(changes) >= 3)  # each held for 3-4 stimulus frames
        assert (ds.behavior(tid)[:, 0] > 0).all()  # no frame left empty, even the first
        eye = ds.pupil_center(tid)
        assert np.flatnonzero(np.any(np.diff(eye, axis=0) != 0, axis=1)).size <= 33
    assert json.loads((out / "sim.json").read_text())["imaging_rate_hz"] == 8.0


def test_presets_config_and_flags(tmp_path: Path, capsys):
    easy = simulate.sim_settings("easy")
    assert easy == SimSettings(paced=False)  # the original simulator
    real = simulate.sim_settings("realistic")
    assert real.imaging_rate_hz < 30 and real.eye_shift_px > 0
    for key, value in simulate.PRESETS["realistic"].items():
        assert getattr(real, key) == value
    toml = tmp_path / "sim.toml"
    toml.write_text("[sim]\neye_shift_px = 1.5\nweak_fraction = 0.1\nmouse = \"B\"\n")
    s = simulate.sim_settings("realistic", simulate._config_table(str(toml)),
                              {"weak_fraction": 0.2})
    assert (s.eye_shift_px, s.weak_fraction, s.mouse) == (1.5, 0.2, "B")
    assert s.imaging_rate_hz == real.imaging_rate_hz
    bad = tmp_path / "bad.toml"
    bad.write_text("[sim]\neye_shift = 1.5\n")
    assert cli(["--out", str(tmp_path / "x"), "--config", str(bad)]) == 2
    assert "unknown key 'eye_shift'" in capsys.readouterr().err
    assert cli(["--out", str(tmp_path / "x"), "--eye-shift-px", "50"]) == 2
    assert "eye_shift_px" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_sim_json_records_every_knob(tmp_path: Path):
    out = tmp_path / "d"
    assert cli(["--out", str(out), "--neurons", "300", "--height", "128", "--width", "128",
                "--trials", "1", "--test-trials", "1", "--frames", "40", "--oracle-clips", "0",
                "--warmup-s", "0", "--weak-drive", "0.25"]) == 0
    recorded = json.loads((out / "sim.json").read_text())
    assert set(recorded) == {f.name for f in dataclasses.fields(SimSettings)}
    s = SimSettings(**recorded)  # the same animal can be run live from it
    assert s.weak_drive == 0.25 and s.eye_shift_px == simulate.PRESETS["realistic"]["eye_shift_px"]
