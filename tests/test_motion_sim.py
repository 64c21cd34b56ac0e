"""Motion correction on the simulated rig: it finds the brain's shifts and makes the
extracted ΔF/F follow the true ΔF/F more closely than without correction."""

from __future__ import annotations

import numpy as np
import pytest

from cortexcast.daq.sim.rig import SimulatedRig
from cortexcast.daq.sim.settings import SimSettings
from cortexcast.core.events import ImagingFrame
from cortexcast.decoder.live.extraction import ActivityExtractor
from cortexcast.decoder.live.motion import MotionCorrector, MotionSettings

SIM = dict(n_neurons=300, frame_height=128, frame_width=128, paced=False, duration_s=12.0)


def _session(**kw) -> tuple[list[np.ndarray], list[tuple[int, int]], list[np.ndarray], object]:
    rig = SimulatedRig(SimSettings(**{**SIM, **kw}))
    frames, shifts, truth = [], [], []
    with rig:
        for ev in rig.events():
            if isinstance(ev, ImagingFrame):
                frames.append(ev.pixels)
                shifts.append(tuple(ev.meta["shift"]))
                truth.append(rig.truth["dff"])
    return frames, shifts, truth, rig.rois()


def _mean_corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean(0)
    b = b - b.mean(0)
    r = (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0) + 1e-12)
    return float(np.nanmean(r))


@pytest.fixture(scope="module")
def moving():
    return _session(motion_px=3.0)


def test_sim_shifts_are_recovered(moving) -> None:
    frames, shifts, _, _ = moving
    still, _, _, _ = _session(motion_px=0.0, duration_s=2.0)
    reference = np.mean(np.stack(still), axis=0)  # like suite2p's meanImg of the same FOV
    mc = MotionCorrector(frames[0].shape, MotionSettings(enabled=True), reference)
    found = []
    for f in frames:
        mc(f)
        found.append(mc.shift)
    found = np.asarray(found)
    true = -np.asarray(shifts, float)  # the sim crops its canvas at +shift: content moves by -shift
    assert np.abs(true).max() >= 2  # the session really moves
    assert np.mean(np.abs(found - true) < 0.5) > 0.95


def test_correction_improves_extraction_on_a_moving_sim(moving) -> None:
    frames, _, truth, rois = moving
    true = np.stack(truth)

    def extract(corrector: MotionCorrector | None) -> np.ndarray:
        ex = ActivityExtractor(rois, 30.0)
        out = []
        for f in frames:
            out.append(ex(corrector(f) if corrector is not None else f))
        return np.stack(out)

    skip = 90  # past the online reference (60 frames) and the baseline's settling
    plain = _mean_corr(extract(None)[skip:], true[skip:])
    mc = MotionCorrector(frames[0].shape, MotionSettings(enabled=True, reference_frames=60))
    corrected = _mean_corr(extract(mc)[skip:], true[skip:])
    assert corrected > plain + 0.2, (plain, corrected)
