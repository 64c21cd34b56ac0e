"""Closed-loop rules as plain objects fed with arrays (no sockets, no devices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cortexcast.core.config import ConfigError, settings_from_table
from cortexcast.decoder.closed_loop.process import ClosedLoop, LoopSettings, firing_record, latency_ms
from cortexcast.decoder.closed_loop.rules import (
    BrightnessRule, CorrelationRule, RuleError, RuleSettings, build_rule, rect_mask,
)
from cortexcast.stream.message import Message

SHAPE = (36, 64)
rng = np.random.default_rng(7)
TARGET = rng.normal(128, 40, SHAPE)
OTHER = rng.normal(128, 40, SHAPE)  # ~uncorrelated with TARGET


def feed(rule, frames, dt: float = 1 / 32):
    """Indices of the frames on which the rule fired."""
    return [i for i, f in enumerate(frames) if rule.update(f, i * dt) is not None]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_correlation_fires_on_exactly_the_kth_matching_frame(k: int) -> None:
    rule = CorrelationRule("r", "out", TARGET, threshold=0.8, frames=k, refractory_s=100)
    noisy = [TARGET + rng.normal(0, 5, SHAPE) for _ in range(k + 3)]
    assert feed(rule, [OTHER, OTHER] + noisy) == [2 + k - 1]
    assert rule.fired == 1


def test_a_non_matching_frame_restarts_the_count() -> None:
    rule = CorrelationRule("r", "out", TARGET, threshold=0.8, frames=3, refractory_s=0)
    frames = [TARGET, TARGET, OTHER, TARGET, TARGET, TARGET]
    assert feed(rule, frames) == [5]


def test_correlation_value_is_pearson_and_scale_free() -> None:
    rule = CorrelationRule("r", "out", TARGET, threshold=0.5)
    assert rule.value(3 * TARGET + 10) == pytest.approx(1.0)
    assert rule.value(-TARGET) == pytest.approx(-1.0)
    expected = np.corrcoef(TARGET.ravel(), OTHER.ravel())[0, 1]
    assert rule.value(OTHER) == pytest.approx(expected)


def test_correlation_over_a_mask_ignores_the_rest() -> None:
    mask = rect_mask((0, 18, 0, 64))
    frame = TARGET.copy()
    frame[18:] = OTHER[18:]  # only the masked half matches
    assert CorrelationRule("r", "o", TARGET, 0.9, mask=mask).value(frame) == pytest.approx(1.0)
    assert CorrelationRule("r", "o", TARGET, 0.9).value(frame) < 0.9


def test_refractory_period_is_respected() -> None:
    # dt = 1/8 s (exact in binary), k = 2, refractory 0.5 s: fire at frame 1 (t = 0.125);
    # frames until t < 0.625 do not count, so frames 5 and 6 make the next firing, at 6.
    rule = CorrelationRule("r", "out", TARGET, threshold=0.5, frames=2, refractory_s=0.5)
    assert feed(rule, [TARGET] * 13, dt=0.125) == [1, 6, 11]


def test_a_clock_restart_ends_the_refractory_period() -> None:
    rule = CorrelationRule("r", "out", TARGET, threshold=0.5, frames=1, refractory_s=60)
    assert rule.update(TARGET, 100.0) is not None
    assert rule.update(TARGET, 101.0) is None  # refractory
    assert rule.update(TARGET, 0.0) is not None  # a new acquisition restarted the rig clock


def test_zero_refractory_fires_every_k_frames() -> None:
    rule = BrightnessRule("b", "o", rect_mask((0, 36, 0, 64)), threshold=10, frames=3,
                          refractory_s=0)
    assert feed(rule, [np.full(SHAPE, 50.0)] * 9) == [2, 5, 8]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_never_fires_on_non_finite_input(bad: float) -> None:
    corr = CorrelationRule("r", "o", TARGET, threshold=-1.0, frames=1, refractory_s=0)
    bright_above = BrightnessRule("a", "o", rect_mask((0, 36, 0, 64)), -1e9, refractory_s=0)
    bright_below = BrightnessRule("b", "o", rect_mask((0, 36, 0, 64)), 1e9, refractory_s=0,
                                  direction="below")
    one_bad = TARGET.copy()
    one_bad[3, 4] = bad
    for rule in (corr, bright_above, bright_below):
        assert feed(rule, [one_bad, np.full(SHAPE, bad)] * 5) == [], rule.name


def test_nan_breaks_a_streak() -> None:
    rule = BrightnessRule("b", "o", rect_mask((10, 20, 10, 20)), threshold=100, frames=2,
                          refractory_s=0)
    hot, nan = np.full(SHAPE, 200.0), np.full(SHAPE, np.nan)
    assert feed(rule, [hot, nan, hot, nan, hot, hot]) == [5]


def test_flat_frame_has_no_correlation_and_does_not_fire() -> None:
    rule = CorrelationRule("r", "o", TARGET, threshold=-1.0, refractory_s=0)
    assert np.isnan(rule.value(np.full(SHAPE, 7.0)))
    assert feed(rule, [np.full(SHAPE, 7.0)] * 3) == []


def test_brightness_region_above_and_below() -> None:
    region = (5, 10, 20, 30)
    frame = np.zeros(SHAPE)
    frame[5:10, 20:30] = 180.0
    above = BrightnessRule("a", "o", rect_mask(region), threshold=150)
    below = BrightnessRule("b", "o", rect_mask(region), threshold=150, direction="below")
    assert above.value(frame) == pytest.approx(180.0)
    assert above.update(frame, 0.0) is not None and below.update(frame, 0.0) is None
    assert below.update(np.zeros(SHAPE), 5.0) is not None


def test_rules_from_settings_read_png_and_npy(tmp_path: Path) -> None:
    target = (np.arange(36 * 64).reshape(SHAPE) % 251).astype(np.uint8)
    Image.fromarray(target).save(tmp_path / "target.png")
    mask = np.zeros(SHAPE, bool)
    mask[:, :32] = True
    np.save(tmp_path / "left.npy", mask)
    corr = build_rule(RuleSettings("c", "o", "correlation", 0.9, target=str(tmp_path / "target.png")))
    assert corr.value(target.astype(np.float32)) == pytest.approx(1.0)
    bright = build_rule(RuleSettings("b", "o", "brightness", 50.0, mask=str(tmp_path / "left.npy")))
    frame = np.zeros(SHAPE)
    frame[:, :32] = 60
    assert bright.value(frame) == pytest.approx(60.0)


def test_bad_rule_files_name_the_rule_and_file(tmp_path: Path) -> None:
    np.save(tmp_path / "small.npy", np.zeros((10, 10)))
    np.save(tmp_path / "flat.npy", np.ones(SHAPE))
    with pytest.raises(RuleError, match=r"rule 'c'.*small\.npy.*\(36, 64\)"):
        build_rule(RuleSettings("c", "o", "correlation", 0.5, target=str(tmp_path / "small.npy")))
    with pytest.raises(RuleError, match="flat"):
        build_rule(RuleSettings("c", "o", "correlation", 0.5, target=str(tmp_path / "flat.npy")))
    with pytest.raises(RuleError, match="does not exist"):
        build_rule(RuleSettings("c", "o", "correlation", 0.5, target=str(tmp_path / "no.png")))


def _loop_table(**rule) -> dict:
    base = {"name": "r", "output": "ttl", "kind": "brightness", "threshold": 10.0,
            "rect": [0, 36, 0, 64]}
    return {"outputs": [{"name": "ttl", "kind": "log"}], "rules": [{**base, **rule}]}


@pytest.mark.parametrize("change, message", [
    ({"output": "laser"}, "output 'laser', which is not among"),
    ({"rect": [0, 40, 0, 64]}, "outside the 36x64 frame"),
    ({"frames": 0}, "frames must be >= 1"),
    ({"kind": "correlation", "rect": []}, "needs target"),
    ({"threshold": float("nan")}, "finite"),
    ({"kind": "brightness", "rect": [], "mask": ""}, "exactly one of rect"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_loop_settings_are_validated(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_table(LoopSettings, _loop_table(**change), "rig.toml: [loop]")


def test_closed_loop_object_hands_firings_to_outputs_with_stamps() -> None:
    submitted = []
    rule = BrightnessRule("b", "ttl", rect_mask((0, 36, 0, 64)), threshold=100, frames=2,
                          refractory_s=0)
    loop = ClosedLoop([rule], lambda out, p: submitted.append((out, p)) or True)
    hot = np.full(SHAPE, 150, np.float32)
    fired = []
    for i in range(4):
        msg = Message("reconstruction", "reconstruction", i, "decoder", i / 30, (hot,),
                      (("daq.acq", 1_000_000 * i), ("daq.pub", 1_000_000 * i + 500_000)),
                      {"imaging_frame": 10 + i, "stim_frame": 5 + i})
        fired += loop.on_reconstruction(msg)
    assert [p["imaging_frame"] for p in fired] == [11, 13]
    assert [o for o, _ in submitted] == ["ttl", "ttl"]
    p = fired[0]
    assert p["queued"] and p["stamps"][-1][0] == "loop.decide"
    rec = firing_record(p, p["stamps"][-1][1] + 2_000_000, None)
    assert rec["ok"] and rec["stamps"]["loop.out"] > rec["stamps"]["loop.decide"]
    assert rec["latency_ms"]["decision_to_output"] == pytest.approx(2.0)
    assert rec["latency_ms"]["frame_to_output"] == pytest.approx(
        (rec["stamps"]["loop.out"] - 1_000_000) / 1e6)


def test_latency_falls_back_to_the_publish_stamp() -> None:
    lat = latency_ms({"daq.pub": 0, "loop.decide": 3_000_000}, 4_000_000)
    assert lat["frame_to_output"] == 4.0 and lat["frame_to_decision"] == 3.0
    assert latency_ms({}, None)["frame_to_output"] is None
