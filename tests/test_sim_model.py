"""The parts of the simulated animal: stimulus, receptive fields, layout, behaviour, calcium."""

from __future__ import annotations

import numpy as np
import pytest

from cortexcast.daq.sim import stimulus
from cortexcast.daq.sim.behavior import BehaviorModel
from cortexcast.daq.sim.layout import build_layout, mosaic_grid
from cortexcast.daq.sim.meta import META_PATH, load_mouse
from cortexcast.daq.sim.neurons import COMPLEX, FilterBank, NeuralState, SIMPLE
from cortexcast.daq.sim.rig import SimulatedRig
from cortexcast.daq.sim.settings import MICE, SimSettings


def test_packaged_metadata_has_every_mouse_and_is_small():
    assert META_PATH.stat().st_size < 2_000_000
    for m in MICE:
        meta = load_mouse(m)
        assert meta.coords.shape[1] == 3 and 7000 < meta.coords.shape[0] < 9000
        assert meta.resp_mean.shape == meta.resp_std.shape == (meta.coords.shape[0],)
        assert meta.behavior_mean.shape == meta.pupil_mean.shape == (2,)
        assert 50 < meta.video_mean < 110


def test_image_pools_are_disjoint_and_load_offline():
    pools = [set(stimulus.image_names(p)) for p in ("train", "validation", "test")]
    assert all(not a & b for i, a in enumerate(pools) for b in pools[i + 1:])
    assert set().union(*pools) == set(stimulus.image_names("all"))
    assert len(stimulus.TEST_IMAGES) >= 4 and len(stimulus.TRAIN_IMAGES) >= 10
    assert len(stimulus.VALIDATION_IMAGES) >= 2
    with pytest.raises(ValueError, match="image pool"):
        stimulus.image_names("holdout")
    for img in stimulus.load_pool("all"):
        assert min(img.levels[0].shape) == 144 and img.levels[0].dtype == np.float32


def test_movies_cut_between_scenes_every_one_to_four_seconds():
    gen = stimulus.MovieGenerator(stimulus.load_pool("test"), np.random.default_rng(3), 30.0)
    scene_lengths, current, names = [], 0, set()
    prev_scene = None
    for _ in range(30 * 40):
        frame, name, k = gen.next_frame()
        assert frame.shape == (36, 64) and frame.dtype == np.uint8
        names.add(name)
        if k == 0 and prev_scene is not None:
            scene_lengths.append(current)
            current = 0
        current += 1
        prev_scene = name
    assert names <= set(stimulus.TEST_IMAGES)
    assert min(scene_lengths) >= 30 and max(scene_lengths) <= 120
    assert len(scene_lengths) >= 8


def test_make_clips_is_reproducible_and_names_its_images():
    a, names_a = stimulus.make_clips("train", 2, 60, [7, 1])
    b, _ = stimulus.make_clips("train", 2, 60, [7, 1])
    c, _ = stimulus.make_clips("train", 2, 60, [8, 1])
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], a[1])
    assert all(set(n) <= set(stimulus.TRAIN_IMAGES) and n for n in names_a)
    # pans and zooms: consecutive frames of a scene differ a little, not a lot
    d = np.abs(np.diff(a[0][:20].astype(float), axis=0)).mean()
    assert d < 40
    assert 40 < a[0].mean() < 130


def test_filter_bank_responds_where_the_light_is():
    bank = FilterBank()
    for y, x in ((18, 32), (0, 0), (35, 63), (5, 50)):
        img = np.full((36, 64), 80, np.uint8)
        img[y, x] = 200
        out = bank(img).reshape(bank.n_maps + 1, 36, 64)
        for m in (0, bank.dog_index[0]):
            assert np.unravel_index(np.abs(out[m]).argmax(), (36, 64)) == (y, x)
        assert not out[bank.zero_map].any()
    uniform = bank(np.full((36, 64), 200, np.uint8)).reshape(bank.n_maps + 1, 36, 64)
    assert np.abs(uniform[:2 * 8 * 2, 17, 32]).max() < 1e-3  # Gabors ignore uniform light


def test_mosaic_and_layout():
    assert mosaic_grid(10, 512, 512)[2] == 128
    assert mosaic_grid(1, 128, 128) == (1, 1, 128)
    meta = load_mouse("A")
    lay = build_layout(meta, 7800, (512, 512), 10.0, np.random.default_rng(0))
    assert lay.n_neurons == 7800 and lay.n_tiles == 10  # 7800 > 7440 real: denser planes
    assert 4.0 < lay.um_per_px < 7.0
    assert lay.footprints.shape == (7800, 512 * 512)
    small = build_layout(meta, 300, (128, 128), 10.0, np.random.default_rng(0))
    assert small.n_tiles == 1 and len(set(small.coords_um[:, 2])) == 1
    big = build_layout(meta, 30000, (512, 512), 10.0, np.random.default_rng(0))
    assert big.n_tiles > 10 and big.coords_um[:, 2].max() > 425
    with pytest.raises(ValueError, match="too small"):
        build_layout(meta, 100000, (32, 32), 10.0, np.random.default_rng(0))


def test_retinotopy_is_ordered():
    rig = SimulatedRig(SimSettings(n_neurons=2000, frame_height=256, frame_width=256))
    xy = rig.layout.coords_um[:, :2]
    yx = rig.population.rf_yx.astype(float)
    # RF position is a smooth function of cortical position: strongly correlated
    r = max(abs(np.corrcoef(xy[:, 0], yx[:, 1])[0, 1]), abs(np.corrcoef(xy[:, 1], yx[:, 1])[0, 1]))
    assert r > 0.8
    types = rig.population.cell_type
    assert (types == SIMPLE).mean() > 0.2 and (types == COMPLEX).mean() > 0.2


def test_behavior_follows_each_mouse():
    means = {}
    for m in ("A", "B"):
        model = BehaviorModel(load_mouse(m), 1 / 30, np.random.default_rng(0))
        run = np.array([model.step().running for _ in range(30 * 600)])
        means[m] = run.mean()
    assert means["A"] > 3 * means["B"]  # mouse B hardly ran in the real data
    assert 1.0 < means["A"] < 15.0


def test_firing_rates_and_calcium_are_realistic():
    rig = SimSettings(n_neurons=500, frame_height=128, frame_width=128, paced=False,
                      duration_s=20.0)
    sim = SimulatedRig(rig)
    rates, spikes = [], 0
    with sim:
        for ev in sim.events():
            if ev.__class__.__name__ == "ImagingFrame":
                rates.append(sim.truth["rate"])
                spikes += sim.truth["spikes"].sum()
    mean_rate = np.mean(rates, axis=0)
    assert 0.5 < np.median(mean_rate) < 6.0
    assert spikes / (500 * 20.0) == pytest.approx(np.mean(mean_rate), rel=0.2)
    # one spike: ΔF/F rises within ~calcium_rise_s and decays with calcium_decay_s
    state = NeuralState(sim.population, 0)
    dt = 1 / 30
    decay, rise = np.exp(-dt / rig.calcium_decay_s), 1 - np.exp(-dt / rig.calcium_rise_s)
    trace = []
    for k in range(90):
        state.indicator(np.full(500, 1 if k == 0 else 0), decay, rise)
        trace.append(state.dff[0])
    trace = np.array(trace)
    peak = int(trace.argmax())
    assert peak <= 6
    assert trace[peak] == pytest.approx(sim.population.dff_amp[0], rel=0.3)
    later = trace[peak + 30] / trace[peak]  # one second later
    assert later == pytest.approx(np.exp(-1.0 / rig.calcium_decay_s), rel=0.15)
    # many spikes saturate
    state.indicator(np.full(500, 200), decay, 1.0)
    assert state.dff[0] < 20 * sim.population.dff_amp[0]
