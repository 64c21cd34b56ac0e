"""The real-time rule for the trained decoders: the reconstruction of frame t uses responses
(and behaviour) up to frame t + L only.

Checked on the torch model (every window of a padded trial) and on the exported ONNX graph
streamed through the live path (:func:`cortexcast.decoder.live.pixel_decoder.stream_trial`), for a model
with every learned part switched on (gain, residual, eye shift, two members) and for one
made by ``cortexcast train``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cortexcast.decoder.live.model_card import ModelCard, load_card, save_card  # noqa: E402
from cortexcast.decoder.offline.streaming import stream_trial  # noqa: E402
from cortexcast.decoder.live.pixel_decoder import PixelDecoder  # noqa: E402
from cortexcast.decoder.training.features import FeatureSet, FrontEnd  # noqa: E402
from cortexcast.decoder.training.residual import (  # noqa: E402
    ResidualDecoder, ResidualShape, export_residual,
)
from cortexcast.decoder.training.windows import pad_responses, windows_of  # noqa: E402

N, W, L, K, T = 24, 6, 2, 8, 30
T_CUT = 12


def random_model(seed: int = 0) -> ResidualDecoder:
    """A decoder with every part switched on: per-neuron gain, eye shift, two members whose
    zero-initialised output layers are made non-zero."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    s = ResidualShape(N, W, L, K, 12, row_features=8, hidden=16, members=2, eye_shift_px=2.5)
    front = FrontEnd(rng.normal(1, 0.2, N), rng.uniform(0.5, 2, N), np.array([10, 1, 0, 0.0]),
                     np.array([2, 1, 1, 1.0]), rng.normal(0, 0.3, (2, N)).astype(np.float32),
                     np.linalg.qr(rng.normal(size=(N, K)))[0])
    m = ResidualDecoder(s, front, feat_mean=np.zeros(K), feat_std=np.ones(K),
                        lin_weight=rng.normal(0, 3, (W * K, 12)), lin_bias=np.zeros(12),
                        pix_mean=np.full(36 * 64, 100.0),
                        pix_basis=np.linalg.qr(rng.normal(size=(36 * 64, 12)))[0] * 40)
    with torch.no_grad():
        for member in m.members:
            member.out.weight.normal_(0, 0.5)
            member.gain[2].weight.normal_(0, 0.5)
    return m.eval()


def trial(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    resp = rng.normal(1, 1, (T, N)).astype(np.float32)
    beh = (np.array([10, 1, 0, 0]) + rng.normal(0, 1, (T, 4))).astype(np.float32)
    return resp, beh


def perturb_after(resp: np.ndarray, beh: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray]:
    """Change every response and behaviour value of frames > row."""
    r, b = resp.copy(), beh.copy()
    r[row + 1:] += 5.0
    b[row + 1:] += 3.0
    return r, b


def torch_trial(model: ResidualDecoder, resp: np.ndarray, beh: np.ndarray) -> np.ndarray:
    """Every frame of a trial from the torch model, windows built as in training."""
    padded = pad_responses(resp, W, L)
    beh_pad = np.zeros((T + W - 1, 4), np.float32)
    beh_pad[W - 1 - L: W - 1 - L + T] = beh
    frames = np.arange(T)
    with torch.no_grad():
        return model(torch.from_numpy(windows_of(padded, W, frames)),
                     torch.from_numpy(windows_of(beh_pad, W, frames))).numpy()


def check_rule(decode, resp: np.ndarray, beh: np.ndarray) -> None:
    before = decode(resp, beh)
    after = decode(*perturb_after(resp, beh, T_CUT + L))
    assert before.shape == after.shape == (T, 36, 64)
    np.testing.assert_array_equal(after[: T_CUT + 1], before[: T_CUT + 1])
    # frame t + 1 sees response t + 1 + L: the check above can fail
    assert np.abs(after[T_CUT + 1] - before[T_CUT + 1]).max() > 1e-3


def test_torch_model_is_causal() -> None:
    model = random_model()
    resp, beh = trial(1)
    check_rule(lambda r, b: torch_trial(model, r, b), resp, beh)


def test_behavior_alone_is_causal() -> None:
    """Perturbing only behaviour after t + L leaves frames <= t unchanged (gain, eye shift)."""
    model = random_model(3)
    resp, beh = trial(4)
    before = torch_trial(model, resp, beh)
    b2 = beh.copy()
    b2[T_CUT + L + 1:] += 3.0
    after = torch_trial(model, resp, b2)
    np.testing.assert_array_equal(after[: T_CUT + 1], before[: T_CUT + 1])
    assert np.abs(after[T_CUT + 1] - before[T_CUT + 1]).max() > 1e-3


def test_exported_onnx_is_causal_through_the_live_path(tmp_path: Path) -> None:
    model = random_model(5)
    path = tmp_path / "m.onnx"
    export_residual(model, path)
    save_card(ModelCard(neurons=N, window=W, lag=L, extra={
        "behavior_inputs": ["pupil", "running", "pupil_x", "pupil_y"],
        "behavior_mean": [10.0, 1.0, 0.0, 0.0]}), path)
    dec = PixelDecoder(path)
    assert dec.has_behavior
    resp, beh = trial(6)
    live = stream_trial(dec, resp, beh)
    # the live path and torch agree, so the torch check covers the graph too
    np.testing.assert_allclose(live, torch_trial(model, resp, beh), atol=1e-2)
    check_rule(lambda r, b: stream_trial(dec, r, b), resp, beh)


def test_trained_model_is_causal(tmp_path: Path) -> None:
    from cortexcast.decoder.training.train import TrainSettings, train
    from cortexcast.decoder.training.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "mouse", neurons=N,
                                   tiers={"train": 6, "oracle": 2}, length=40, padded=40)
    out = tmp_path / "m.onnx"
    train(TrainSettings(data=str(data), out=str(out), window=W, lag=L, time_budget_s=30,
                        ensemble=2, epochs=2, readout=8, pixels=16, eye_shifts=(0.0, 2.0),
                        device="cpu", progress=False))
    card = load_card(out)
    assert card.extra["behavior_inputs"] == ["pupil", "running", "pupil_x", "pupil_y"]
    dec = PixelDecoder(out)
    resp, beh = trial(7)
    check_rule(lambda r, b: stream_trial(dec, r, b), resp, beh)


def test_feature_windows_start_at_each_frame() -> None:
    """The training cache's window of frame t starts at padded row t (row of frame t - W + 1 +
    L), the same rows :func:`windows_of` gives the live-equivalent path."""
    fs = FeatureSet(np.zeros((2 * (T + W - 1), K), np.float32), np.zeros((0, 4), np.float32),
                    np.zeros((2 * T, 4), np.float32),
                    [(0, 0, T), (T + W - 1, T, T)], [0, 1])
    starts = fs.window_starts()
    assert starts[0] == 0 and starts[T - 1] == T - 1 and starts[T] == T + W - 1
