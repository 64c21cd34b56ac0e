"""The pixel correlation on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cortexcast.decoder.live.metric import (
    estimate_eval_mask, mean_over_clips, per_clip_correlation, pixel_correlation,
)

RAW = dict(sigma=(0, 0, 0))  # no smoothing: exact answers


def movie(seed: int, t: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.standard_normal((t, 36, 64)), (1, 2, 2)) * 50 + 80


def test_identical_is_one_and_negated_is_minus_one() -> None:
    x = movie(0)
    assert pixel_correlation(x, x, None, **RAW) == pytest.approx(1.0)
    assert pixel_correlation(-x, x, None, **RAW) == pytest.approx(-1.0)
    # with the default smoothing a smooth movie still correlates almost perfectly
    r = pixel_correlation(x, x, None)
    assert 0.97 < r < 1.0
    assert pixel_correlation(-x, x, None) == pytest.approx(-r)
    # affine changes of the reconstruction do not matter
    assert pixel_correlation(3 * x + 7, x, None) == pytest.approx(r)


def test_independent_noise_is_near_zero() -> None:
    rs = [movie(1 + i) for i in range(4)]
    ts = [movie(10 + i) for i in range(4)]
    assert abs(pixel_correlation(rs, ts, None)) < 0.05


def test_mask_is_respected() -> None:
    x = movie(2)
    mask = np.zeros((36, 64), bool)
    mask[10:25, 20:40] = True
    recon = x.copy()
    recon[:, ~mask] = np.random.default_rng(0).normal(size=(300, int((~mask).sum())))
    assert pixel_correlation(recon, x, mask, **RAW) == pytest.approx(1.0)
    assert pixel_correlation(recon, x, None, **RAW) < 0.9
    with pytest.raises(ValueError, match="no pixel"):
        pixel_correlation(x, x, np.zeros((36, 64), bool))
    with pytest.raises(ValueError, match="mask is"):
        pixel_correlation(x, x, np.ones((10, 10), bool))


def test_frames_outside_start_stop_are_ignored() -> None:
    x = movie(3, t=330)
    recon = x.copy()
    rng = np.random.default_rng(1)
    recon[:30] = rng.normal(size=(30, 36, 64))
    recon[300:] = rng.normal(size=(30, 36, 64))
    assert pixel_correlation(recon, x, None, **RAW) == pytest.approx(1.0)
    assert pixel_correlation(recon, x, None, **RAW, start=0, stop=330) < 0.9
    # short clips use what exists of the range; clips shorter than start cannot be scored
    assert pixel_correlation(x[:100], x[:100], None, **RAW) == pytest.approx(1.0)
    assert np.isnan(per_clip_correlation(x[:20], x[:20], None)[0])


def test_smoothing_applies_to_the_reconstruction_only() -> None:
    rng = np.random.default_rng(4)
    recon, target = rng.normal(size=(2, 120, 36, 64))
    target = target + recon
    mask = np.zeros((36, 64), bool)
    mask[5:30, 10:50] = True
    got = pixel_correlation(recon, target, mask, sigma=(0.5, 1.0, 2.0))
    sm = gaussian_filter(recon, (0.5, 1.0, 2.0))
    want = np.corrcoef(sm[30:300][:, mask].ravel(), target[30:300][:, mask].ravel())[0, 1]
    assert got == pytest.approx(want, abs=1e-12)
    # white noise against itself: smoothing the reconstruction alone lowers r below 1
    assert pixel_correlation(recon, recon, mask) < 0.99
    assert pixel_correlation(recon, recon, mask, **RAW) == pytest.approx(1.0)


def test_nan_rules() -> None:
    x = movie(5, t=120)
    flat = np.full_like(x, 80.0)
    assert np.isnan(per_clip_correlation(x, flat, None)[0])   # constant target: undefined
    assert per_clip_correlation(flat, x, None)[0] == 0.0      # constant reconstruction: 0
    # NaN padding after a trial's end (as in the dataset) is left out
    padded = np.concatenate([x, np.full((40, 36, 64), np.nan)])
    recon = np.concatenate([x, np.zeros((40, 36, 64))])
    assert pixel_correlation(recon, padded, None, **RAW) == pytest.approx(1.0)
    # clips that cannot be scored are left out of the mean; none scored -> NaN
    per = per_clip_correlation([x, x], [x, flat], None, **RAW)
    assert per[0] == pytest.approx(1.0) and np.isnan(per[1])
    assert pixel_correlation([x, x], [x, flat], None, **RAW) == pytest.approx(1.0)
    assert np.isnan(pixel_correlation(x, flat, None))
    assert mean_over_clips([0.5, float("nan"), 0.7]) == pytest.approx(0.6)


def test_input_forms() -> None:
    a, b = movie(6, t=60), movie(7, t=60)
    stack = np.stack([a, b])
    assert per_clip_correlation(stack, stack, None).shape == (2,)
    assert pixel_correlation([a, b], [a, b], None) == pixel_correlation(stack, stack, None)
    with pytest.raises(ValueError, match="2 reconstructions but 1 targets"):
        per_clip_correlation([a, b], [a], None)
    with pytest.raises(ValueError, match="clip 0"):
        per_clip_correlation(a, b[:50], None)


def test_estimate_eval_mask_finds_the_receptive_fields() -> None:
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[0:36, 0:64]
    centres = [(rng.uniform(12, 24), rng.uniform(20, 44)) for _ in range(40)]
    rf = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0) for cy, cx in centres])
    videos, responses = [], []
    for i in range(6):
        v = rng.normal(80, 50, (200, 36, 64))
        drive = (v - 80).reshape(200, -1) @ rf.reshape(40, -1).T
        resp = np.zeros_like(drive)
        resp[3:] = drive[:-3]  # responses follow the stimulus by 3 frames
        videos.append(v)
        responses.append(resp + rng.normal(0, drive.std(), drive.shape))
    mask = estimate_eval_mask(zip(responses, videos))
    assert mask.shape == (36, 64) and mask.dtype == bool
    assert mask[18, 32] and not mask[0, 0] and not mask[35, 63]
    box = np.zeros((36, 64), bool)
    box[6:31, 12:53] = True
    assert mask[box].sum() / mask.sum() > 0.95
    # nothing learnable (no response variance) -> every pixel
    assert estimate_eval_mask([(np.zeros((200, 40)), videos[0])]).all()
