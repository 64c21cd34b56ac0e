"""ONNX export of the ridge baseline (:mod:`cortexcast.decoder.training.ridge`), checked against numpy.

The graph folds normalisation, PCA and the low-rank lag weights into three MatMuls::

    activity (1, W, N) -> (W, N) @ A (N, K) -> (1, W·K) @ U (W·K, R) -> @ V (R, H·W) + b

so a frame costs W·N·K + W·K·R + R·H·W multiply-adds instead of W·N·K + W·K·H·W with the
full lag→pixel matrix (R = ``pixel_components``, see :func:`reduced_rank`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cortexcast.decoder.live.model_card import ModelCard, ModelError
from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.training.common import ONNX_TOLERANCE, save_beside
from cortexcast.decoder.training.ridge_fit import LinearFrontEnd, RidgeFit, trial_design
from cortexcast.decoder.training.windows import Normalisation, pad_responses, windows_of

log = logging.getLogger("decoder.ridge")


def reduced_rank(fit: RidgeFit, j: int, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-``rank`` version of ``fit.solution(j)``: (U (D, R), V (R, P), intercept (P,)).

    Reduced-rank ridge: the fitted training values (X - x̄) B span the pixels through the
    covariance Bᵀ C B; its top R eigenvectors V are the pixel axes that carry most of the
    *predicted* variance, and (B V) Vᵀ is the ridge fit onto those axes (ridge is linear in y).
    With B = E diag(g) proj, g = 1 / (evals + penalty): Bᵀ C B = projᵀ diag(evals g²) proj, so
    no D×P weight product is needed. R >= min(D, P) reproduces the full solution.
    """
    d, p = fit.proj.shape
    g = 1.0 / (fit.evals + fit.penalty(j))
    r = min(rank, d, p)
    scaled = fit.proj * (np.sqrt(fit.evals) * g)[:, None]  # (D, P): cov = scaledᵀ scaled
    if r >= p:
        v = np.eye(p)
    elif p <= d:
        ev, vec = np.linalg.eigh(scaled.T @ scaled)
        v = vec[:, np.argsort(ev)[::-1][:r]]  # (P, R)
    else:  # fewer features than pixels: right singular vectors from the small side
        _, _, vt = np.linalg.svd(scaled, full_matrices=False)
        v = vt[:r].T
    u = fit.evecs @ ((fit.proj @ v) * g[:, None])  # B V: (D, R)
    vt = np.ascontiguousarray(v.T)
    return u, vt, fit.y_mean - (fit.x_mean @ u) @ vt


def build_onnx(front: LinearFrontEnd, lag_weights: np.ndarray, pixel_basis: np.ndarray,
               bias: np.ndarray, window: int, height: int, width: int):
    """activity (1, W, N) -> PCA rows (W, K) -> (1, W·K) @ U (W·K, R) @ V (R, H·W) + b."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n, k = front.a.shape
    # the per-row constant c of the front end, pushed through the lag weights into the bias
    bias_all = bias + (np.tile(front.c, window) @ lag_weights) @ pixel_basis
    inits = [
        numpy_helper.from_array(np.array([window, n], np.int64), "rows_shape"),
        numpy_helper.from_array(np.ascontiguousarray(front.a, np.float32), "pca"),
        numpy_helper.from_array(np.array([1, window * k], np.int64), "flat_shape"),
        numpy_helper.from_array(np.ascontiguousarray(lag_weights, np.float32), "lag_weights"),
        numpy_helper.from_array(np.ascontiguousarray(pixel_basis, np.float32), "pixel_basis"),
        numpy_helper.from_array(bias_all.astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([1, height, width], np.int64), "frame_shape"),
    ]
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["activity", "rows_shape"], ["rows"]),
         helper.make_node("MatMul", ["rows", "pca"], ["components"]),
         helper.make_node("Reshape", ["components", "flat_shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "lag_weights"], ["latent"]),
         helper.make_node("MatMul", ["latent", "pixel_basis"], ["mm"]),
         helper.make_node("Add", ["mm", "bias"], ["pixels"]),
         helper.make_node("Reshape", ["pixels", "frame_shape"], ["frame"])],
        "ridge_window_decoder",
        [helper.make_tensor_value_info("activity", TensorProto.FLOAT, [1, window, n])],
        [helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, height, width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="cortexcast-ridge")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export_ridge(ds: SensoriumDataset, window: int, lag: int, seed: int, out: Path,
                 val_ids: list[int], mask: np.ndarray, front: LinearFrontEnd,
                 lag_weights: np.ndarray,
                 pixel_basis: np.ndarray, bias: np.ndarray, norm: Normalisation,
                 train_ids: list[int], info: dict[str, Any]) -> ModelCard:
    """Write the graph, check it with onnxruntime against numpy on held-out windows, then the
    card, mask and ``<stem>.norm.npz``; nothing is written if the check fails."""
    import onnx
    import onnxruntime as ort

    h, w = ds.frame_shape
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.onnx")
    onnx.save(build_onnx(front, lag_weights, pixel_basis, bias, window, h, w), str(tmp))
    rng = np.random.default_rng(seed + 1)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(tmp), sess_options=opts, providers=["CPUExecutionProvider"])
    diff, probes = 0.0, 0
    for tid in val_ids[:4]:
        padded = pad_responses(ds.responses(tid), window, lag)
        frames = rng.choice(ds.length(tid), size=min(8, ds.length(tid)), replace=False)
        design = trial_design(ds, tid, front, window, lag)[frames].astype(np.float64)
        ref = (design @ lag_weights) @ pixel_basis + bias
        for win, r in zip(windows_of(padded, window, frames), ref):
            got = sess.run(["frame"], {"activity": win[None].astype(np.float32)})[0]
            diff = max(diff, float(np.max(np.abs(got.reshape(-1) - r))))
            probes += 1
    log.info("onnxruntime vs numpy on %d held-out windows: max |diff| = %.3g", probes, diff)
    if not diff <= ONNX_TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"onnxruntime and numpy disagree by {diff:.3g} (> {ONNX_TOLERANCE:.3g})"
                         " on held-out input; the export is not trustworthy, nothing written")
    tmp.replace(out)
    b_mean, b_std = ds.behavior_statistics(train_ids)
    info["extra"]["behavior_mean"] = [float(v) for v in b_mean]
    card = ModelCard(neurons=ds.n_neurons, window=window, lag=lag, height=h, width=w,
                     onnx_max_abs_diff=diff, **info)
    save_beside(out, card, mask, norm.resp_mean, norm.safe_std(), b_mean, b_std)
    return card

