"""The extraction math on frames whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from cortexcast.decoder.live.extraction import ActivityExtractor, ExtractionSettings
from cortexcast.core.rois import ROIError, from_pixel_lists, load_rois, save_rois

H, W = 64, 64


def _square_rois():
    """Two 3x3 somata, far apart, with uniform weights."""
    ys = [np.repeat(np.arange(10, 13), 3), np.repeat(np.arange(40, 43), 3)]
    xs = [np.tile(np.arange(10, 13), 3), np.tile(np.arange(50, 53), 3)]
    return from_pixel_lists(ys, xs, None, (H, W), block_px=16)


def test_masks_are_row_normalised_and_neuropil_excludes_somata() -> None:
    rois = _square_rois()
    np.testing.assert_allclose(np.asarray(rois.masks.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(rois.interp.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    soma_pixels = set(rois.masks.indices.tolist())
    assert soma_pixels.isdisjoint(rois.blocks.indices.tolist())


def test_fluorescence_is_soma_mean_minus_r_times_neuropil() -> None:
    rois = _square_rois()
    frame = np.full((H, W), 100, np.uint16)  # neuropil 100 everywhere
    frame[10:13, 10:13] = 400  # neuron 0
    frame[40:43, 50:53] = 250  # neuron 1
    ex = ActivityExtractor(rois, 30.0, ExtractionSettings(neuropil_coef=0.7))
    np.testing.assert_allclose(ex.fluorescence(frame), [400 - 70, 250 - 70], rtol=1e-5)


def test_dff_of_a_transient_over_a_steady_baseline() -> None:
    rois = _square_rois()
    ex = ActivityExtractor(rois, 30.0, ExtractionSettings(neuropil_coef=0.0))
    base = np.full((H, W), 200, np.uint16)
    for _ in range(60):
        dff = ex(base)
    np.testing.assert_allclose(dff, 0.0, atol=1e-6)
    spike = base.copy()
    spike[10:13, 10:13] = 300  # +50 % in neuron 0 only
    dff = ex(spike)
    assert dff[0] == pytest.approx(0.5, rel=0.02)
    assert dff[1] == pytest.approx(0.0, abs=1e-6)


def test_baseline_follows_slow_drift_but_not_transients() -> None:
    rois = _square_rois()
    ex = ActivityExtractor(rois, 30.0, ExtractionSettings(neuropil_coef=0.0, baseline_rise_s=5.0))
    level = 200.0
    for _ in range(30 * 60):  # a minute of slow upward drift: +50 %
        level += 100 / (30 * 60)
        dff = ex(np.full((H, W), level, np.uint16))
    assert abs(dff[0]) < 0.05  # the baseline kept up with the drift


def test_wrong_frame_shape_is_a_clear_error() -> None:
    ex = ActivityExtractor(_square_rois(), 30.0)
    with pytest.raises(ROIError, match="64, 64"):
        ex(np.zeros((32, 32), np.uint16))


def test_roi_file_round_trip_and_bad_files(tmp_path) -> None:
    rois = _square_rois()
    save_rois(tmp_path / "r.npz", rois)
    back = load_rois(tmp_path / "r.npz", block_px=16)
    assert (back.masks != rois.masks).nnz == 0 and back.frame_shape == (H, W)
    with pytest.raises(ROIError, match="does not exist"):
        load_rois(tmp_path / "missing.npz")
    np.savez(tmp_path / "junk.npz", a=np.zeros(3))
    with pytest.raises(ROIError, match="cannot read"):
        load_rois(tmp_path / "junk.npz")


def test_roi_outside_frame_is_rejected() -> None:
    with pytest.raises(ROIError, match="outside"):
        from_pixel_lists([np.array([70])], [np.array([1])], None, (H, W))
