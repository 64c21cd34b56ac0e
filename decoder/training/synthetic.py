"""Stand-ins for tests and smoke runs: a tiny dataset and a random linear model.

:func:`write_synthetic_dataset` writes a tiny linear-Gaussian dataset in the
Sensorium 2023 layout; :func:`write_linear_model` an ONNX model with its card,
made without torch.

The dataset is not the simulator (``cortexcast simulate`` is): a smooth random movie, neurons
with Gaussian receptive fields in the centre of the screen whose response at
frame t is a noisy linear function of the movie at frame ``t - delay``. Small
enough to train on in seconds, and decodable only where the fields lie.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

DEFAULT_TIERS = {"train": 16, "oracle": 3, "final_test_main": 3, "live_test_main": 2}


def write_synthetic_dataset(
    root: str | Path, *, neurons: int = 60, tiers: dict[str, int] | None = None,
    length: int = 80, padded: int = 100, delay: int = 2, noise: float = 0.3,
    withheld: tuple[str, ...] = ("live_test_main",), statistics: bool = False,
    eval_mask: bool = False, seed: int = 0, height: int = 36, width: int = 64,
) -> Path:
    """Write the folder; trials of ``withheld`` tiers get no response files."""
    from cortexcast.decoder.offline.sensorium_writer import SensoriumWriter

    rng = np.random.default_rng(seed)
    root = Path(root)
    out = SensoriumWriter(root)
    yy, xx = np.mgrid[0:height, 0:width]
    cy = rng.uniform(height * 0.25, height * 0.75, neurons)
    cx = rng.uniform(width * 0.25, width * 0.75, neurons)
    rf = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2)
                / (2 * 4.0**2))
    rf *= rng.choice([-1.0, 1.0], neurons)[:, None, None]
    rf /= np.linalg.norm(rf.reshape(neurons, -1), axis=1)[:, None, None]
    rf_flat = rf.reshape(neurons, -1)
    tier_list = [t for t, n in (tiers or DEFAULT_TIERS).items() for _ in range(n)]
    order = rng.permutation(len(tier_list))  # trial ids carry no time order
    tier_names = np.asarray([tier_list[i] for i in order])
    all_resp = []
    for tid, tier in enumerate(tier_names):
        movie = gaussian_filter(rng.standard_normal((length + delay, height, width)), (2, 4, 4))
        movie = np.clip(80 + 50 * (movie - movie.mean()) / movie.std(), 0, 255)
        drive = ((movie - 80) / 50).reshape(length + delay, -1) @ rf_flat.T  # (T + d, N)
        video = np.full((height, width, padded), np.nan, np.float32)
        video[:, :, :length] = np.moveaxis(movie[delay:], 0, -1)
        # response at t reflects the movie at t - delay (movie[delay:] is the video)
        resp = 1.0 + 2.0 * drive[:length] + noise * rng.standard_normal((length, neurons))
        full = np.full((neurons, padded), np.nan, np.float32)
        full[:, :length] = resp.T
        if tier not in withheld:
            all_resp.append(resp)
        beh = []
        for _ in ("behavior", "pupil_center"):
            b = np.full((2, padded), np.nan, np.float32)
            b[:, :length] = rng.normal(size=(2, length))
            beh.append(b)
        out.trial(tid, video, None if tier in withheld else full, *beh)
    out.trials_meta(tier_names)
    coords = np.stack([cx * 10, cy * 10, rng.uniform(200, 400, neurons)], 1)
    out.neurons(np.arange(neurons), coords.astype(np.float32))
    if statistics and all_resp:
        r = np.concatenate(all_resp)
        out.statistics("responses", r.mean(0), r.std(0))
        out.statistics("videos", 80, 50)
    if eval_mask:
        out.eval_mask(np.abs(rf).sum(0) > 0.05 * np.abs(rf).sum(0).max())
    return root


def write_linear_model(path: str | Path, *, neurons: int, window: int = 10, lag: int = 5,
                       height: int = 36, width: int = 64, seed: int = 0,
                       card_neurons: int | None = None, behavior: bool = False,
                       components: int | None = None,
                       norm: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """A random linear ONNX model (window -> frame) with its card, without torch.

    A stand-in for a trained model where only the plumbing matters (timing,
    errors, streaming). ``card_neurons`` writes a deliberately wrong card.
    ``behavior`` adds the optional ``"behavior"`` input (1, W, 4), used
    linearly, and the card's ``behavior_inputs``/``behavior_mean``.
    ``components`` shapes it like ridge (each row projected onto that many
    components, then window -> pixels), which is also what a realistic
    per-frame cost at thousands of neurons needs. ``norm = (resp_mean,
    resp_std)`` writes ``<stem>.norm.npz`` (the statistics it was "trained"
    with) and z-scores the activity inside the graph with them.
    Needs the ``onnx`` package (a dev/train extra).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cortexcast.core.behavior import BEHAVIOR_KEYS
    from cortexcast.decoder.live.model_card import ModelCard, save_card
    from cortexcast.decoder.live.pixel_decoder import save_training_stats

    rng = np.random.default_rng(seed)
    f32 = np.float32
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    x = "activity"
    if norm is not None:
        mean, std = (np.asarray(v, np.float64).ravel() for v in norm)
        nodes += [helper.make_node("Sub", [x, const("resp_mean", mean.astype(f32))], ["centred"]),
                  helper.make_node("Mul", ["centred", const(
                      "resp_scale", (1.0 / np.maximum(std, 1e-6)).astype(f32))], ["z"])]
        x = "z"
    width_in = neurons
    if components is not None:
        proj = rng.normal(0, 1.0 / np.sqrt(neurons), (neurons, components)).astype(f32)
        nodes.append(helper.make_node("MatMul", [x, const("components", proj)], ["pcs"]))
        x, width_in = "pcs", components
    w = rng.normal(0, 1.0 / np.sqrt(window * width_in), (window * width_in, height * width))
    nodes += [helper.make_node("Reshape", [x, const("flat_shape", np.array(
                  [1, window * width_in], np.int64))], ["flat"]),
              helper.make_node("MatMul", ["flat", const("weight", w.astype(f32))], ["mm"]),
              helper.make_node("Add", ["mm", const("bias", np.full(height * width, 80.0, f32))],
                               ["lin"])]
    out = "lin"
    inputs = [helper.make_tensor_value_info("activity", TensorProto.FLOAT,
                                            [1, window, neurons])]
    extra: dict = {}
    if behavior:
        beh_mean = np.array([5.0, 2.0, 0.0, 0.0], f32)
        wb = rng.normal(0, 10.0 / np.sqrt(window * 4), (window * 4, height * width)).astype(f32)
        nodes += [helper.make_node("Sub", ["behavior", const("beh_mean", beh_mean)], ["bc"]),
                  helper.make_node("Reshape", ["bc", const("beh_flat_shape", np.array(
                      [1, window * 4], np.int64))], ["bflat"]),
                  helper.make_node("MatMul", ["bflat", const("beh_weight", wb)], ["bmm"]),
                  helper.make_node("Add", ["lin", "bmm"], ["lin_b"])]
        out = "lin_b"
        inputs.append(helper.make_tensor_value_info("behavior", TensorProto.FLOAT,
                                                    [1, window, 4]))
        extra = {"behavior_inputs": list(BEHAVIOR_KEYS),
                 "behavior_mean": beh_mean.tolist()}
    nodes.append(helper.make_node("Reshape", [out, const("frame_shape", np.array(
        [1, height, width], np.int64))], ["frame"]))
    graph = helper.make_graph(
        nodes, "linear_window_decoder", inputs,
        [helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, height, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    if norm is not None:
        save_training_stats(path, norm[0], norm[1], np.array([5.0, 2.0, 0.0, 0.0], f32),
                            np.ones(4, f32))
    save_card(ModelCard(neurons=card_neurons or neurons, window=window, lag=lag, height=height,
                        width=width, method="random linear (test stand-in)", extra=extra), path)
    return path
