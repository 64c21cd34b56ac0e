"""PixelDecoder's optional inputs: behaviour beside activity, and re-standardisation of a
session's activity onto the scale the model was trained on."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cortexcast.decoder.live.model_card import ModelError
from cortexcast.decoder.offline.streaming import dataset_session_stats, decoder_for_dataset, stream_trial
from cortexcast.decoder.live.pixel_decoder import PixelDecoder
from cortexcast.decoder.training.synthetic import write_linear_model, write_synthetic_dataset

N, W, L = 30, 5, 2


@pytest.fixture(scope="module")
def beh_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_linear_model(tmp_path_factory.mktemp("beh") / "b.onnx", neurons=N, window=W,
                              lag=L, behavior=True)


def _acts(t: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(1, 1, (t, N)).astype(np.float32),
            (np.array([5, 2, 0, 0]) + rng.normal(0, 2, (t, 4))).astype(np.float32))


def test_behavior_window_follows_activity(beh_model: Path) -> None:
    dec = PixelDecoder(beh_model)
    assert dec.has_behavior and dec.behavior_keys == ("pupil", "running", "pupil_x", "pupil_y")
    act, beh = _acts()
    pad_a = np.concatenate([np.zeros((W - 1, N), np.float32), act])
    pad_b = np.concatenate([np.zeros((W - 1, 4), np.float32), beh])
    for k in range(len(act)):
        got = dec.push(act[k], beh[k])
        np.testing.assert_allclose(got, dec.decode_window(pad_a[k: k + W], pad_b[k: k + W]),
                                   atol=1e-4)
    other = PixelDecoder(beh_model)
    for k in range(len(act)):
        last = other.push(act[k], beh[k] + (10.0 if k == len(act) - 1 else 0.0))
    assert np.abs(last - got).max() > 1.0  # the newest behaviour row reaches the output


def test_missing_behavior_is_the_card_mean_logged_once(beh_model: Path, caplog) -> None:
    act, _ = _acts()
    mean = np.array([5, 2, 0, 0], np.float32)
    dec, ref = PixelDecoder(beh_model), PixelDecoder(beh_model)
    with caplog.at_level(logging.WARNING, logger="decoder"):
        for k in range(8):
            np.testing.assert_allclose(dec.push(act[k]), ref.push(act[k], mean), atol=1e-5)
    assert sum("no behaviour given" in r.message for r in caplog.records) == 1
    assert dec.behavior_filled == 8 * 4 and ref.behavior_filled == 0
    part = np.array([7.0, np.nan, 1.0, np.nan], np.float32)  # e.g. no running wheel
    np.testing.assert_allclose(dec.push(act[9], part),
                               ref.push(act[9], np.array([7, 2, 1, 0], np.float32)), atol=1e-5)
    assert dec.behavior_vector({"running": 3.5, "pupil": 8}).tolist()[:2] == [8.0, 3.5]
    assert np.isnan(dec.behavior_vector({"running": 3.5})[2])
    with pytest.raises(ModelError, match=r"behaviour has shape \(2,\)"):
        dec.push(act[0], np.zeros(2))


def test_models_without_behavior_ignore_it(tmp_path: Path) -> None:
    plain = write_linear_model(tmp_path / "p.onnx", neurons=N, window=W, lag=L)
    dec, ref = PixelDecoder(plain), PixelDecoder(plain)
    act, beh = _acts()
    assert not dec.has_behavior and dec.behavior_vector({"running": 1.0}) is None
    np.testing.assert_array_equal(dec.push(act[0], beh[0]), ref.push(act[0]))


def test_behavior_model_needs_a_mean(tmp_path: Path, beh_model: Path) -> None:
    import shutil

    from cortexcast.decoder.live.model_card import ModelCard, load_card, save_card

    m = Path(shutil.copy(beh_model, tmp_path / "nomean.onnx"))
    card = load_card(beh_model)
    save_card(ModelCard(neurons=N, window=W, lag=L, extra={"behavior_inputs": list(
        card.extra["behavior_inputs"])}), m)
    with pytest.raises(ModelError, match="behavior_mean"):
        PixelDecoder(m)
    save_card(ModelCard(neurons=N, window=W + 1, lag=L, extra=card.extra), m)
    with pytest.raises(ModelError, match="shape"):
        PixelDecoder(m)


def test_session_stats_map_another_scale_onto_the_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    t_mean, t_std = rng.uniform(0, 2, N), rng.uniform(0.5, 2, N)
    model = write_linear_model(tmp_path / "z.onnx", neurons=N, window=W, lag=L,
                               norm=(t_mean, t_std))
    z = rng.normal(size=(12, N))
    train_scale = (t_mean + t_std * z).astype(np.float32)
    s_mean, s_std = rng.uniform(-1, 5, N), rng.uniform(0.1, 9, N)
    session_scale = (s_mean + s_std * z).astype(np.float32)  # same activity, another scale
    ref = PixelDecoder(model)
    mapped = PixelDecoder(model, session_stats=(s_mean, s_std))
    plain = PixelDecoder(model)
    assert mapped.restandardising and not ref.restandardising
    for k in range(len(z)):
        want = ref.push(train_scale[k])
        np.testing.assert_allclose(mapped.push(session_scale[k]), want, atol=2e-3)
        got_plain = plain.push(session_scale[k])
    assert np.abs(got_plain - want).max() > 1.0  # without it the scale is wrong
    same = PixelDecoder(model, session_stats=(t_mean, t_std))
    assert not same.restandardising  # the training session itself: untouched
    with pytest.raises(ModelError, match="no z.norm.npz|2 means"):
        PixelDecoder(model, session_stats=(s_mean[:2], s_std[:2]))
    bare = write_linear_model(tmp_path / "bare.onnx", neurons=N, window=W, lag=L)
    with pytest.raises(ModelError, match="no bare.norm.npz"):
        PixelDecoder(bare, session_stats=(s_mean, s_std))


def test_padding_rows_are_zeros_in_the_models_space(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    model = write_linear_model(tmp_path / "z.onnx", neurons=N, window=W, lag=L, behavior=True,
                               norm=(rng.uniform(0, 2, N), rng.uniform(0.5, 2, N)))
    dec = PixelDecoder(model, session_stats=(rng.uniform(3, 4, N), rng.uniform(2, 3, N)))
    act, beh = _acts(3)
    for k in range(3):
        dec.push(act[k], beh[k])
    out = dec.push_padding()
    win = dec._ring[dec._pos + 1: dec._pos + 1 + W]
    assert not win[-1].any() and not dec._beh_ring[dec._pos + 1: dec._pos + 1 + W][-1].any()
    np.testing.assert_allclose(out, dec.decode_window(win, dec._beh_ring[
        dec._pos + 1: dec._pos + 1 + W]), atol=1e-4)


def test_dataset_helpers_and_stream_trial(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "mouse", neurons=N, statistics=True)
    from cortexcast.decoder.offline.dataset import SensoriumDataset

    ds = SensoriumDataset(data)
    mean, std = dataset_session_stats(ds)
    st = ds.statistics("responses")
    np.testing.assert_allclose(mean, st["mean"]) and np.testing.assert_allclose(std, st["std"])
    tid = ds.trial_ids("oracle")[0]
    beh = ds.behavior_rows(tid)
    assert beh.shape == (ds.length(tid), 4)
    np.testing.assert_array_equal(beh[:, 2:], ds.pupil_center(tid))
    # the model trained on this session: identity; on a rescaled copy: re-standardised
    model = write_linear_model(tmp_path / "m.onnx", neurons=N, window=W, lag=L, behavior=True,
                               norm=(mean, std))
    assert not decoder_for_dataset(model, ds).restandardising
    resp = ds.responses(tid)
    out = stream_trial(PixelDecoder(model), resp, beh)
    assert out.shape == (ds.length(tid), 36, 64)
    dec = PixelDecoder(model)
    for k in range(L + 1):
        last = dec.push(resp[k], beh[k])
    np.testing.assert_array_equal(out[0], last)
    with pytest.raises(ModelError, match="behaviour has 3 rows"):
        stream_trial(dec, resp, beh[:3])


def test_read_session_stats_and_the_live_setting(tmp_path: Path) -> None:
    from cortexcast.decoder.offline.streaming import read_session_stats
    from cortexcast.decoder.live.process import DecoderSettings, FrameDecoder
    from cortexcast.core.rois import from_pixel_lists, save_rois

    rng = np.random.default_rng(5)
    assert read_session_stats("") is None
    np.savez(tmp_path / "s.npz", resp_mean=np.ones(N), resp_std=np.full(N, 2.0))
    m, s = read_session_stats(tmp_path / "s.npz")
    assert m.shape == s.shape == (N,) and s[0] == 2.0
    np.savez(tmp_path / "bad.npz", x=np.ones(3))
    with pytest.raises(ModelError, match="expected arrays resp_mean and resp_std, found x"):
        read_session_stats(tmp_path / "bad.npz")
    with pytest.raises(ModelError, match="do not exist"):
        read_session_stats(tmp_path / "nope.npz")
    data = write_synthetic_dataset(tmp_path / "mouse", neurons=N, statistics=True)
    np.testing.assert_allclose(read_session_stats(data)[0],
                               np.load(data / "meta/statistics/responses/all/mean.npy"))
    # the decoder process's setting reaches the model
    save_rois(tmp_path / "rois.npz", from_pixel_lists(
        [rng.integers(0, 16, 3) for _ in range(N)], [rng.integers(0, 16, 3) for _ in range(N)],
        None, (16, 16), block_px=8))
    model = write_linear_model(tmp_path / "z.onnx", neurons=N, window=W, lag=L,
                               norm=(np.zeros(N), np.ones(N)))
    dec = FrameDecoder(DecoderSettings(rois=str(tmp_path / "rois.npz"), model=str(model),
                                       session_stats=str(tmp_path / "s.npz")))
    assert dec.pixels.restandardising
