"""Rigid motion correction: known shifts are found (sub-pixel too) and undone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cortexcast.decoder.live.motion import (
    FrameShifter, MotionCorrector, MotionError, MotionSettings, PhaseCorrelator, load_reference,
)

H, W = 128, 160


def _image(seed: int = 0) -> np.ndarray:
    """A field of view: smooth neuropil texture plus bright somata."""
    rng = np.random.default_rng(seed)
    img = 300 + 60 * ndimage.gaussian_filter(rng.normal(size=(H, W)), 3) / 0.1
    yy, xx = np.mgrid[:H, :W]
    for y, x in rng.uniform(0, [H, W], size=(60, 2)):
        img += 400 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0 ** 2))
    return img.astype(np.float32)


def _noisy(img: np.ndarray, rng: np.random.Generator, sd: float = 15.0) -> np.ndarray:
    return np.clip(img + rng.normal(0, sd, img.shape), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("shift", [(0.0, 0.0), (3.0, -5.0), (1.3, -2.6), (-0.4, 0.75),
                                   (-7.25, 10.5)])
def test_phase_correlation_recovers_known_shifts(shift) -> None:
    ref = _image()
    pc = PhaseCorrelator(ref, MotionSettings(max_shift_px=15))
    moved = ndimage.shift(ref, shift, order=3, mode="nearest")  # content moves by +shift
    dy, dx, peak = pc.shift_of(_noisy(moved, np.random.default_rng(1)))
    assert dy == pytest.approx(shift[0], abs=0.1)
    assert dx == pytest.approx(shift[1], abs=0.1)
    assert peak > 0.01


def test_shifts_beyond_the_limit_are_not_reported() -> None:
    ref = _image()
    pc = PhaseCorrelator(ref, MotionSettings(max_shift_px=4))
    dy, dx, _ = pc.shift_of(ndimage.shift(ref, (9, 0), order=1, mode="nearest"))
    assert abs(dy) <= 4.5 and abs(dx) <= 4.5


def test_frame_shifter_undoes_a_shift() -> None:
    ref = _image()
    for shift in [(2.0, -3.0), (1.5, 0.25)]:
        moved = ndimage.shift(ref, shift, order=1, mode="nearest")
        back = FrameShifter((H, W), 10)(moved, *shift)
        inner = (slice(8, -8), slice(8, -8))
        err = np.abs(back[inner] - ref[inner]).mean() / ref.std()
        before = np.abs(moved[inner] - ref[inner]).mean() / ref.std()
        assert back.dtype == np.float32 and back.shape == (H, W)
        assert err < 0.2 * before


def test_corrector_with_a_reference_aligns_frames() -> None:
    ref = _image()
    mc = MotionCorrector((H, W), MotionSettings(enabled=True), reference=ref)
    rng = np.random.default_rng(2)
    moved = _noisy(ndimage.shift(ref, (-2.5, 4.0), order=3, mode="nearest"), rng)
    out = mc(moved)
    assert mc.shift == pytest.approx((-2.5, 4.0), abs=0.1)
    inner = (slice(10, -10), slice(10, -10))
    assert np.corrcoef(out[inner].ravel(), ref[inner].ravel())[0, 1] > \
        np.corrcoef(moved[inner].ravel().astype(float), ref[inner].ravel())[0, 1] + 0.05


def test_online_reference_from_the_first_frames() -> None:
    ref = _image()
    rng = np.random.default_rng(3)
    mc = MotionCorrector((H, W), MotionSettings(enabled=True, reference_frames=20))
    shifts = rng.integers(-3, 4, size=(40, 2)).astype(float)
    for i, s in enumerate(shifts):
        frame = _noisy(ndimage.shift(ref, s, order=1, mode="nearest"), rng)
        out = mc(frame)
        if i < 20:
            assert out is frame  # passes through until the provisional reference exists
        else:
            assert mc.ready and out.dtype == np.float32
        assert mc.final == (i == 39)
    # Shifts are now relative to the built reference: a constant offset from the truth.
    found = []
    for s in shifts[:10]:
        mc(_noisy(ndimage.shift(ref, s, order=1, mode="nearest"), rng))
        found.append(mc.shift)
    offset = np.asarray(found) - shifts[:10]
    assert np.abs(offset - offset.mean(axis=0)).max() < 0.25
    assert np.abs(offset.mean(axis=0)).max() < 1.5  # centred near the frames' mean position


def test_reference_files_and_size_mismatch(tmp_path) -> None:
    import tifffile

    ref = _image()
    np.save(tmp_path / "ref.npy", ref)
    tifffile.imwrite(tmp_path / "ref.tif", np.stack([ref, ref]))
    np.testing.assert_allclose(load_reference(tmp_path / "ref.npy"), ref)
    np.testing.assert_allclose(load_reference(tmp_path / "ref.tif"), ref, rtol=1e-6)
    with pytest.raises(MotionError, match="does not exist"):
        load_reference(tmp_path / "nope.npy")
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(MotionError, match="2-D"):
        load_reference(tmp_path / "bad.npy")
    with pytest.raises(MotionError, match=r"ref.npy is 128x160 but .* 64x64"):
        MotionCorrector((64, 64), MotionSettings(), load_reference(tmp_path / "ref.npy"),
                        source=str(tmp_path / "ref.npy"))


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_shift_px"):
        MotionSettings(max_shift_px=0)
    with pytest.raises(ValueError, match="reference_frames"):
        MotionSettings(reference_frames=0)
