"""Ridge baseline (decoder/training/ridge.py): closed form, alpha on validation, ONNX, causality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cortexcast.decoder.offline.dataset import DatasetError  # noqa: E402
from cortexcast.decoder.offline.evaluate import evaluate  # noqa: E402
from cortexcast.decoder.live.metric import clip_correlation  # noqa: E402
from cortexcast.decoder.live.model_card import load_card  # noqa: E402
from cortexcast.decoder.training.ridge import RidgeSettings, fit_ridge, train_ridge  # noqa: E402
from cortexcast.decoder.training.ridge_export import reduced_rank  # noqa: E402
from cortexcast.decoder.training.synthetic import write_synthetic_dataset  # noqa: E402
from cortexcast.decoder.training.windows import pad_responses, windows_of  # noqa: E402

H, W = 36, 64


def _linear_dataset(root: Path, *, neurons: int = 24, lag: int = 1, noise: float = 0.0,
                    tiers: dict[str, int] | None = None, length: int = 60, seed: int = 0,
                    statistics: bool = True) -> tuple[Path, np.ndarray]:
    """Video frame t = 100 + responses[t + lag] @ M (a known linear map, optional pixel noise)."""
    rng = np.random.default_rng(seed)
    m = rng.normal(0.0, 6.0, (neurons, H * W))
    tiers = tiers or {"train": 12, "oracle": 2, "final_test_main": 2}
    names = np.array([t for t, k in tiers.items() for _ in range(k)])
    for sub in ("data/videos", "data/responses", "data/behavior", "data/pupil_center",
                "meta/trials"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    all_resp = []
    for tid in range(len(names)):
        resp = rng.normal(0.0, 1.5, (length + lag, neurons)).astype(np.float32)
        resp[length:] = 0.0  # after the trial: the zero rows ridge pads with
        video = 100.0 + resp[lag: lag + length] @ m
        video += noise * rng.standard_normal(video.shape)
        r = resp[:length]
        np.save(root / f"data/responses/{tid}.npy", r.T.astype(np.float32))
        np.save(root / f"data/videos/{tid}.npy",
                np.moveaxis(video.reshape(length, H, W), 0, -1).astype(np.float32))
        for kind in ("behavior", "pupil_center"):
            np.save(root / f"data/{kind}/{tid}.npy", rng.normal(size=(2, length)).astype(
                np.float32))
        all_resp.append(r)
    np.save(root / "meta/trials/tiers.npy", names)
    if statistics:
        r = np.concatenate(all_resp)
        for var, mean, std in (("responses", r.mean(0), r.std(0)),
                               ("videos", np.float32(100), np.float32(50))):
            d = root / "meta/statistics" / var / "all"
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / "mean.npy", np.asarray(mean, np.float32))
            np.save(d / "std.npy", np.asarray(std, np.float32))
    return root, m


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _decode(sess, responses: np.ndarray, window: int, lag: int) -> np.ndarray:
    padded = pad_responses(responses, window, lag)
    wins = windows_of(padded, window, range(len(responses)))
    return np.stack([sess.run(["frame"], {"activity": w[None]})[0][0] for w in wins])


def test_fit_ridge_recovers_weights_and_intercept():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6)) + 3.0
    b = rng.normal(size=(6, 4))
    y = x @ b + np.array([1.0, -2.0, 0.5, 7.0])
    fit = fit_ridge(x.T @ x, x.T @ y, x.sum(0), y.sum(0), len(x), (1e-9, 10.0))
    w, c = fit.solution(0)
    assert np.allclose(w, b, atol=1e-5) and np.allclose(c, [1.0, -2.0, 0.5, 7.0], atol=1e-4)
    w_big, _ = fit.solution(1)
    assert np.linalg.norm(w_big) < 0.9 * np.linalg.norm(b)  # a larger alpha shrinks
    with pytest.raises(ValueError, match="alphas"):
        fit_ridge(x.T @ x, x.T @ y, x.sum(0), y.sum(0), len(x), (0.0,))


def test_recovers_a_known_linear_map_on_held_out_trials(tmp_path: Path):
    data, _ = _linear_dataset(tmp_path / "lin", lag=1)
    out = tmp_path / "m" / "ridge.onnx"
    res = train_ridge(RidgeSettings(data=str(data), out=str(out), window=3, lag=1,
                                    components=24, alphas=(1e-6, 1.0), progress=False))
    assert res.model_path == out and out.is_file()
    tiers = np.load(data / "meta/trials/tiers.npy")
    test = np.flatnonzero(tiers == "final_test_main")

    def corr(model: Path, window: int, lag: int) -> float:
        sess = _session(model)
        rs = []
        for tid in test:
            raw = np.load(data / f"data/responses/{tid}.npy").T
            vid = np.moveaxis(np.load(data / f"data/videos/{tid}.npy"), -1, 0)
            rs.append(np.corrcoef(_decode(sess, raw, window, lag).ravel(), vid.ravel())[0, 1])
        return float(np.mean(rs))

    assert corr(out, 3, 1) > 0.9999
    assert evaluate(data, "final_test_main", model_path=out).mean > 0.9  # the metric agrees
    # the wrong lag cannot see the frame that carries the map
    out0 = tmp_path / "m" / "lag0.onnx"
    train_ridge(RidgeSettings(data=str(data), out=str(out0), window=1, lag=0, components=24,
                              alphas=(1e-6,), progress=False))
    assert corr(out0, 1, 0) < 0.3


@pytest.mark.parametrize("rank", [256, 5])
def test_onnx_equals_an_independent_numpy_ridge(tmp_path: Path, rank: int):
    """All components = a rotation, so the PCA ridge equals ridge on z-scored responses; at
    rank >= W·K (32 here) the factored weights are exact, below it they are the independent
    reduced-rank fit: the full fit projected on the top principal axes of its training fit."""
    data, _ = _linear_dataset(tmp_path / "lin", neurons=16, noise=40.0, lag=1)
    window, lag, alpha = 2, 1, 0.5
    out = tmp_path / "ridge.onnx"
    train_ridge(RidgeSettings(data=str(data), out=str(out), window=window, lag=lag,
                              components=16, alphas=(alpha,), pixel_components=rank,
                              progress=False))
    tiers = np.load(data / "meta/trials/tiers.npy")
    mean = np.load(data / "meta/statistics/responses/all/mean.npy").astype(np.float64)
    std = np.load(data / "meta/statistics/responses/all/std.npy").astype(np.float64)

    def design(tid: int) -> np.ndarray:
        raw = np.load(data / f"data/responses/{tid}.npy").T
        z = (pad_responses(raw, window, lag) - mean) / std
        return np.stack([z[t: t + window].ravel() for t in range(raw.shape[0])])

    def video(tid: int) -> np.ndarray:
        return np.moveaxis(np.load(data / f"data/videos/{tid}.npy"), -1, 0).reshape(-1, H * W)

    train = np.flatnonzero(tiers == "train")
    x = np.concatenate([design(t) for t in train])
    y = np.concatenate([video(t) for t in train])
    xc, yc = x - x.mean(0), y - y.mean(0)
    c = xc.T @ xc
    b = np.linalg.solve(c + alpha * np.trace(c) / c.shape[0] * np.eye(c.shape[0]), xc.T @ yc)
    proj = np.eye(H * W)
    if rank < x.shape[1]:
        v = np.linalg.svd(xc @ b, full_matrices=False)[2][:rank]
        proj = v.T @ v
    sess = _session(out)
    assert load_card(out).extra["training"]["pixel_components"] == min(rank, x.shape[1])
    for tid in np.flatnonzero(tiers == "final_test_main"):
        raw = np.load(data / f"data/responses/{tid}.npy").T
        full = design(tid) @ b + y.mean(0) - x.mean(0) @ b
        want = (y.mean(0) + (design(tid) - x.mean(0)) @ b @ proj).reshape(-1, H, W)
        got = _decode(sess, raw, window, lag)
        assert np.max(np.abs(got - want)) < 0.05, np.max(np.abs(got - want))
        if rank < x.shape[1]:  # the cut is real, not the full model
            assert np.max(np.abs(got.reshape(len(full), -1) - full)) > 1.0
    norm = np.load(out.with_suffix(".norm.npz"))
    assert np.allclose(norm["resp_mean"], mean) and np.allclose(norm["resp_std"], std)
    assert norm["behavior_mean"].shape == (4,) and norm["behavior_std"].shape == (4,)


@pytest.mark.parametrize("features, pixels", [(30, 50), (60, 20)])
def test_reduced_rank_matches_the_full_ridge_closely(features: int, pixels: int):
    """A few strong pixel modes plus weak noise: rank 6 reproduces the full ridge's
    predictions within 1 %, beats cutting the weight matrix by SVD, and full rank is exact."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(800, features)) @ rng.normal(size=(features, features)) + 2.0
    modes = rng.normal(size=(6, pixels)) * np.array([10, 8, 6, 5, 4, 3])[:, None]
    y = x @ rng.normal(size=(features, 6)) @ modes + 0.3 * rng.normal(size=(800, pixels)) + 50
    fit = fit_ridge(x.T @ x, x.T @ y, x.sum(0), y.sum(0), len(x), (1e-3,))
    b, c = fit.solution(0)
    full = x @ b + c
    u, v, c6 = reduced_rank(fit, 0, 6)
    assert u.shape == (features, 6) and v.shape == (6, pixels)
    cut = x @ u @ v + c6
    # V spans the top principal axes of the full fit's training predictions (computed directly)
    axes = np.linalg.svd(full - full.mean(0), full_matrices=False)[2][:6]
    assert np.allclose(v.T @ v, axes.T @ axes, atol=1e-6)
    err = np.linalg.norm(cut - full) / np.linalg.norm(full - full.mean(0))
    assert err < 0.01, err
    uu, ss, vt = np.linalg.svd(b, full_matrices=False)  # the naive cut of the weights
    naive = x @ (uu[:, :6] * ss[:6]) @ vt[:6] + c
    naive_err = np.linalg.norm(naive - full) / np.linalg.norm(full - full.mean(0))
    assert err <= naive_err + 1e-9
    u1, v1, c1 = reduced_rank(fit, 0, 10_000)
    assert u1.shape[1] == min(features, pixels)
    assert np.allclose(x @ u1 @ v1 + c1, full, atol=1e-6 * np.abs(full).max())
    u2, v2, c2 = reduced_rank(fit, 0, 2)  # a harsh cut is visibly worse
    assert np.linalg.norm(x @ u2 @ v2 + c2 - full) > 5 * np.linalg.norm(cut - full)


def test_alpha_is_chosen_on_the_validation_trials(tmp_path: Path):
    data = write_synthetic_dataset(tmp_path / "syn", neurons=80, noise=3.0,
                                   tiers={"train": 6, "oracle": 3, "final_test_main": 2},
                                   statistics=True, eval_mask=True)
    out = tmp_path / "ridge.onnx"
    alphas = (1e-4, 1e-2, 1.0, 100.0)
    res = train_ridge(RidgeSettings(data=str(data), out=str(out), components=40,
                                    alphas=alphas, progress=False))
    card = load_card(out)
    hist = card.extra["training"]["history"]
    assert [h["alpha"] for h in hist] == list(alphas)
    best = max(hist, key=lambda h: h["val_r"])
    assert card.extra["training"]["alpha"] == best["alpha"]
    assert card.extra["training"]["method"] == "ridge"
    assert f"alpha {best['alpha']:g}" in card.method and "ridge" in card.method
    assert len({round(h["val_r"], 6) for h in hist}) > 1  # the grid is really scored
    # the stored score is the model's own validation score, recomputed here
    sess = _session(out)
    tiers = np.load(data / "meta/trials/tiers.npy")
    mask = np.load(out.with_suffix(".mask.npy"))
    rs = []
    for tid in np.flatnonzero(tiers == "oracle"):
        raw = np.load(data / f"data/responses/{tid}.npy")[:, :80].T
        vid = np.moveaxis(np.load(data / f"data/videos/{tid}.npy")[:, :, :80], -1, 0)
        rs.append(clip_correlation(_decode(sess, raw, card.window, card.lag), vid, mask))
    assert card.validation_score == pytest.approx(float(np.mean(rs)), abs=1e-3)
    assert res.card.data_used["validation"] == "oracle"
    assert card.extra["activity_kind"] in ("dff", "deconvolved")


def test_without_an_oracle_tier_a_seeded_tenth_of_train_validates(tmp_path: Path):
    data = write_synthetic_dataset(tmp_path / "syn", neurons=30,
                                   tiers={"train": 20, "final_test_main": 2})
    card = train_ridge(RidgeSettings(data=str(data), out=str(tmp_path / "r.onnx"),
                                     components=10, progress=False)).card
    assert card.data_used["validation"] == "2 trials held out of train"
    assert card.data_used["train_trials"] == 18


def test_reconstruction_is_causal(tmp_path: Path):
    data, _ = _linear_dataset(tmp_path / "lin", lag=2)
    out = tmp_path / "ridge.onnx"
    window, lag = 6, 2
    train_ridge(RidgeSettings(data=str(data), out=str(out), window=window, lag=lag,
                              components=12, progress=False))
    sess = _session(out)
    raw = np.load(data / "data/responses/0.npy").T
    t = 25
    base = _decode(sess, raw, window, lag)
    changed = raw.copy()
    changed[t + lag + 1:] += 50.0
    after = _decode(sess, changed, window, lag)
    assert np.array_equal(base[: t + 1], after[: t + 1])
    assert not np.allclose(base[t + 1:], after[t + 1:])


def test_clear_errors(tmp_path: Path):
    ok = dict(data=str(tmp_path), out=str(tmp_path / "r.onnx"))
    with pytest.raises(ValueError, match="lag"):
        RidgeSettings(**ok, window=3, lag=3)
    with pytest.raises(ValueError, match="window"):
        RidgeSettings(**ok, window=11)
    with pytest.raises(ValueError, match="alphas"):
        RidgeSettings(**ok, alphas=(-1.0,))
    with pytest.raises(ValueError, match="components"):
        RidgeSettings(**ok, components=0)
    with pytest.raises(ValueError, match="pixel_components"):
        RidgeSettings(**ok, pixel_components=0)
    with pytest.raises(ValueError, match=r"\.onnx"):
        RidgeSettings(data=str(tmp_path), out=str(tmp_path / "r.bin"))
    with pytest.raises(DatasetError, match="not a dataset"):
        train_ridge(RidgeSettings(**ok, progress=False))
    data = write_synthetic_dataset(tmp_path / "syn", neurons=20,
                                   tiers={"train": 3, "final_test_main": 1},
                                   withheld=("train",))
    with pytest.raises(DatasetError, match="no trials with responses"):
        train_ridge(RidgeSettings(data=str(data), out=str(tmp_path / "r.onnx"),
                                  progress=False))
    assert not (tmp_path / "r.onnx").exists()


def test_card_describes_the_model(tmp_path: Path):
    data = write_synthetic_dataset(tmp_path / "syn", neurons=30, statistics=True)
    (data / "sim.json").write_text(json.dumps({"seed": 3}))
    out = tmp_path / "r.onnx"
    card = train_ridge(RidgeSettings(data=str(data), out=str(out), components=8, lag=5,
                                     progress=False)).card
    assert card.neurons == 30 and card.window == 10 and card.lag == 5
    assert "lag 5 (given)" in card.method and card.extra["training"]["window_choice"] is None
    assert "8 PCA components" in card.method and "rank 80" in card.method  # 10 x 8 < 256
    assert card.extra["simulation"] == {"seed": 3}
    assert card.extra["training"]["components"] == 8
    assert len(card.extra["behavior_mean"]) == 4
    sess = _session(out)
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, list(inp.shape)) == ("activity", [1, 10, 30])
    assert (outp.name, list(outp.shape)) == ("frame", [1, 36, 64])


def test_window_gram_equals_the_product_of_the_design():
    from cortexcast.decoder.training.ridge import window_gram, windows_flat

    f = np.random.default_rng(2).normal(size=(40 + 4, 3))
    x = windows_flat(f, 40, 5)
    assert np.allclose(window_gram(f, 40, 5), x.T @ x)
