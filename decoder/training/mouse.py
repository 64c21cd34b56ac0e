"""One mouse's part of ``cortexcast train --method decoder``: data, fit, export.

:func:`prepare_mouse` does everything up to the ridge branch (dataset checks, mask, front
end, feature caches); :func:`fit_and_export` trains the members and writes the model.
The several-mice trainer (:mod:`cortexcast.decoder.training.multi_mouse`) reuses both halves.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cortexcast.core.behavior import BEHAVIOR_KEYS
from cortexcast.decoder.live.model_card import ModelCard, ModelError
from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.offline.evaluate import choose_mask
from cortexcast.decoder.training.common import (
    ONNX_TOLERANCE, TrainResult, TrainSettings, activity_kind, dataset_extra, save_beside,
    split_trials, split_validation,
)
from cortexcast.decoder.training.core_file import Core, start_from_core
from cortexcast.decoder.training.features import (
    FeatureSet, FrontEnd, check_trials, fit_front, fit_gain, fit_pixel_basis, has_behavior,
    trial_behavior,
)
from cortexcast.decoder.training.fit import (
    Cache, FitOptions, FitReport, RidgeBranch, fit_members, fit_ridge_branch,
)
from cortexcast.decoder.training.front_choice import choose_front, feature_sets
from cortexcast.decoder.training.lag_choice import WindowChoice, resolve_window
from cortexcast.decoder.training.neuron_weights import fit_neuron_weights
from cortexcast.decoder.training.residual import ResidualDecoder, ResidualShape, export_residual
from cortexcast.decoder.training.windows import Normalisation, normalisation, pad_responses, windows_of

log = logging.getLogger("cortexcast.decoder.training.train")


@dataclass
class Mouse:
    """Everything about one dataset that training needs, up to the ridge branch."""

    ds: SensoriumDataset
    train_ids: list[int]
    val_ids: list[int]
    val_desc: str
    mask: np.ndarray
    mask_desc: str
    norm: Normalisation
    behavior: bool
    front: FrontEnd
    pix_mean: np.ndarray
    pix_basis: np.ndarray
    train: FeatureSet
    val: FeatureSet
    """The early-stopping split of the validation trials (alpha, eye shift, epochs)."""
    select: FeatureSet
    """The selection split (branches kept only where they win here); ``val`` itself when
    the validation trials show one clip only."""
    ridge: RidgeBranch
    prep_s: float
    settings: TrainSettings
    """The settings with window and lag resolved (chosen on validation unless given)."""
    window_choice: WindowChoice | None = None
    gain_choice: dict[str, Any] = dataclasses.field(default_factory=dict)
    weight_choice: dict[str, Any] = dataclasses.field(default_factory=dict)


def prepare_mouse(data: str, s: TrainSettings, device: torch.device,
                  frame_basis: tuple[np.ndarray, np.ndarray] | None = None) -> Mouse:
    """Dataset checks, mask, front end, feature caches and the ridge branch of one mouse
    (``frame_basis``: (mean, basis) to use instead of this mouse's own frame PCs)."""
    t0 = time.monotonic()
    ds = SensoriumDataset(data)
    if ds.n_neurons < 1:
        raise DatasetError(f"{ds.root}: no neurons in the responses")
    check_trials(ds, s.train_tier)
    train_ids, val_ids, val_desc = split_trials(ds, s.train_tier, s.val_tier, s.seed,
                                                s.train_trials)
    mask, mask_desc = choose_mask(ds)
    norm = normalisation(ds, train_ids)
    behavior = s.behavior and has_behavior(ds, train_ids + val_ids)
    if s.behavior and not behavior:
        log.warning("%s: behaviour or pupil_center missing for some trials; training without "
                    "behaviour (the graph will have no 'behavior' input)", ds.root)
    beh_mean, beh_std = ds.behavior_statistics(train_ids)
    gain = (fit_gain(ds, train_ids, beh_mean, beh_std) if behavior and s.gain
            else np.zeros((2, ds.n_neurons), np.float32))
    pix_mean, basis = frame_basis or fit_pixel_basis(ds, train_ids, s.pixels)
    weights = (fit_neuron_weights(ds, train_ids, norm, frame_basis=(pix_mean, basis))
               if s.neuron_weights else None)

    def fit(g: np.ndarray, weighted: bool) -> FrontEnd:
        return fit_front(ds, train_ids, norm, beh_mean, beh_std, g, s.readout, s.pca_frames,
                         s.seed, weights.weights if weighted and weights is not None else None)

    front = fit(gain, True)

    def features(tid: int, window: int, lag: int) -> np.ndarray:
        beh = trial_behavior(ds, tid, window, lag, front.beh_mean)
        return front(pad_responses(ds.responses(tid), window, lag), beh)

    s, choice = resolve_window(s, ds, train_ids, val_ids, features, mask, s.alphas,
                               say=lambda msg: log.info("%s", msg),
                               frame_basis=(pix_mean, basis))
    if choice is not None:
        log.info("%s (%.0f s)", choice.describe(), time.monotonic() - t0)
    stop_ids, select_ids = split_validation(ds, val_ids)
    split = (train_ids, stop_ids, select_ids)
    gain_choice: dict[str, Any] = {"kept": False, "why": "no behaviour" if not behavior
                                   else "switched off (--no-gain)" if not s.gain else
                                   "no neuron's gain could be fitted"}
    known = None
    if np.any(front.gain):
        variants = {"gain": front, "no gain": fit(np.zeros_like(gain), True)}
        kept, known, scores = choose_front(ds, s, variants, "no gain", split, mask, pix_mean,
                                           basis)
        front = variants[kept]
        log.info("behavioural gain: selection r %.4f with, %.4f without: %s", scores["gain"],
                 scores["no gain"], "kept" if kept == "gain" else "not kept")
        gain_choice = {"kept": kept == "gain", "selection_scores": scores,
                       "why": "ridge branch with vs without the correction on the selection "
                              "split; kept only if better by 2 standard errors of the paired "
                              "difference"}
    weight_choice: dict[str, Any] = {"kept": False, "why": "switched off (--no-neuron-weights)"}
    if weights is not None:
        variants = {"weighted": front, "unweighted": fit(front.gain, False)}
        kept, known, scores = choose_front(ds, s, variants, "weighted", split, mask, pix_mean,
                                           basis, None if known is None else {"weighted": known})
        front = variants[kept]
        log.info("neuron weights: selection r %.4f weighted, %.4f unweighted: %s",
                 scores["weighted"], scores["unweighted"],
                 "kept" if kept == "weighted" else "not kept")
        weight_choice = {"kept": kept == "weighted", "selection_scores": scores,
                         "reliability": weights.summary(),
                         "why": "ridge branch on the weighted vs the unweighted population's "
                                "axes on the selection split; unweighted only if better by 2 "
                                "standard errors of the paired difference"}
    train, val, select = known[0] if known else feature_sets(ds, s, front, split)
    shifts = s.eye_shifts if behavior else (0.0,)
    ridge = fit_ridge_branch(train, val, select, front, s.window, s.lag, s.alphas,
                             s.default_alpha, shifts, mask, ds.frame_shape, pix_mean, basis)
    prep = time.monotonic() - t0
    log.info("%s | train %d trials (%d frames), validation: %s, mask: %s (%d px), "
             "normalisation: %s, %d components, %d frame PCs, behaviour: %s, ridge branch r "
             "%.4f (alpha %g, eye shift %g px/z); prepared in %.0f s", ds, len(train_ids),
             train.frames, val_desc, mask_desc, int(mask.sum()), norm.source,
             front.axes.shape[1], basis.shape[1], behavior, ridge.val_score, ridge.alpha,
             ridge.shift_px, prep)
    return Mouse(ds, train_ids, val_ids, val_desc, mask, mask_desc, norm, behavior, front,
                 pix_mean, basis, train, val, select, ridge, prep, s, choice, gain_choice,
                 weight_choice)


def build_model(m: Mouse, s: TrainSettings, members: int) -> ResidualDecoder:
    h, w = m.ds.frame_shape
    shape = ResidualShape(m.ds.n_neurons, s.window, s.lag, m.front.axes.shape[1],
                          m.pix_basis.shape[1], h, w, s.row_features, s.hidden, s.dropout,
                          members, m.behavior, float(m.ridge.shift_px),
                          bool(np.any(m.front.gain)))
    f = m.train.feats
    return ResidualDecoder(shape, m.front, feat_mean=f.mean(0), feat_std=f.std(0),
                           lin_weight=m.ridge.weight, lin_bias=m.ridge.bias,
                           pix_mean=m.pix_mean, pix_basis=m.pix_basis)


def fit_options(s: TrainSettings) -> FitOptions:
    return FitOptions(epochs=s.epochs, patience=s.patience, lr=s.lr,
                      weight_decay=s.weight_decay, batch=s.batch, corr_weight=s.corr_weight,
                      feature_noise=s.feature_noise, seed=s.seed)


def fit_and_export(m: Mouse, device: torch.device, t0: float,
                   core: Core | None = None) -> TrainResult:
    """Train the members and export, with the mouse's settings (window and lag resolved);
    ``core``: the members start from a core pretrained on other mice (``train --core``)."""
    s = m.settings
    model = build_model(m, s, s.ensemble).to(device)
    groups = None if core is None else start_from_core(model, core, s.lr, s.core_lr_scale)
    train_c = Cache(model, m.train, m.front, device, targets=True)
    val_c = Cache(model, m.val, m.front, device, targets=False)
    sel_c = val_c if m.select is m.val else Cache(model, m.select, m.front, device, False)
    deadline = None if s.time_budget_s is None else t0 + s.time_budget_s
    bar = _progress(s)
    report = fit_members(model, train_c, val_c, sel_c, m.mask, fit_options(s), deadline, bar,
                         groups=groups, pretrained=core is not None)
    train_time = time.monotonic() - t0
    info = card_info(m, s, model, report, device, train_time)
    if core is not None:
        info["method"] += (f"; members started from the core {s.core} (pretrained on "
                           f"{len(core.meta.mice)} mice), core lr x {s.core_lr_scale:g}")
        info["extra"]["training"]["core"] = {
            "path": str(Path(s.core).resolve()), "pretrained_on": list(core.meta.mice),
            "lr_scale": s.core_lr_scale}
    card = export_checked(model, m, s, Path(s.out), info)
    log.info("validation r: ridge %.4f, members %s, ensemble %.4f; %.0f s; wrote %s",
             report.ridge_score, ", ".join(f"{x:.4f}" for x in report.member_scores),
             report.ensemble_score, train_time, s.out)
    return TrainResult(Path(s.out), card, max(report.member_epochs), report.epochs_run,
                       report.history)


def _progress(s: TrainSettings):
    def tick(row: dict) -> None:
        if s.progress:
            print(f"epoch {row['epoch']}: loss {row['loss']:.4f}, mean member val r "
                  f"{row['val_r']:.4f}, {row['time_s']:.0f} s", flush=True)
        log.debug("epoch %s", row)
    return tick


def card_info(m: Mouse, s: TrainSettings, model: ResidualDecoder, r: FitReport,
              device: torch.device, train_time: float) -> dict[str, Any]:
    n = len(model.members)
    method = "ensemble" if n > 1 else "decoder"
    extra: dict[str, Any] = {
        **dataset_extra(m.ds), **s.extra,
        "activity_kind": activity_kind(m.ds, m.train_ids),
        "behavior_mean": [float(v) for v in m.front.beh_mean],
        "training": {
            "method": method, "members": n, "member_validation_scores": r.member_scores,
            "member_best_epochs": r.member_epochs, "ensemble_validation_score":
                r.ensemble_score, "ridge_branch_validation_score": r.ridge_score,
            "ridge_alpha": m.ridge.alpha, "eye_shift_px_per_z": m.ridge.shift_px,
            "ridge_grid_scores": m.ridge.scores, "components": model.s.components,
            "frame_components": model.s.pixels,
            "gain_corrected": bool(np.any(m.front.gain)),
            "epochs_run": r.epochs_run, "device": str(device), "seed": s.seed,
            "shape": model.s.to_dict(), "prepare_s": round(m.prep_s, 1),
            "history": r.history, "choices": choices(m, r)},
    }
    if model.s.behavior:
        extra["behavior_inputs"] = list(BEHAVIOR_KEYS)
    score = r.selection.get("ensemble", r.ensemble_score)
    members = "" if r.members_kept else "; nonlinear members not kept (did not beat ridge)"
    weighted = ("; z-scored neurons weighted by their cross-validated encoding correlation "
                "(+0.05) before the PCA" if m.weight_choice.get("kept") else "")
    return {
        "method": f"{model.s.describe()}{weighted}; loss MSE + {s.corr_weight:g} x (1 - r); "
                  f"AdamW lr {s.lr:g}; each member early-stopped on {m.val_desc}{members}",
        "validation_score": score if np.isfinite(score) else None,
        "training_time_s": round(train_time, 2),
        "data_used": {"folder": str(Path(m.ds.root).resolve()), "train_tier": s.train_tier,
                      "train_trials": len(m.train_ids), "train_frames": m.train.frames,
                      "validation": m.val_desc, "validation_trials": len(m.val_ids),
                      "eval_mask": m.mask_desc, "normalisation": m.norm.source},
        "extra": extra,
    }


def choices(m: Mouse, r: FitReport) -> dict[str, Any]:
    """What was chosen and why: the validation scores of every candidate (issue 12)."""
    split = ("one validation clip: no independent selection split" if m.select is m.val else
             f"early stopping, alpha and eye-shift search on {len(m.val.ids)} validation "
             f"trials; branch selection on {len(m.select.ids)} others (other clips)")
    return {
        "validation_split": split,
        "window_lag": (m.window_choice.to_dict() if m.window_choice is not None
                       else {"window": m.settings.window, "lag": m.settings.lag,
                             "given": True}),
        "eye_shift": {"kept_px_per_z": m.ridge.shift_px, "selection_scores": m.ridge.selection},
        "gain": m.gain_choice,
        "neuron_weights": m.weight_choice,
        "members": {"kept": r.members_kept, "selection_scores": r.selection,
                    "early_stopping_scores": {"ensemble": r.ensemble_score,
                                              "ridge": r.ridge_score}},
        "validation_score_is": "the final model on the selection split",
    }


def probe_windows(m: Mouse, s: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """Held-out (n, W, N) activity and (n, W, 4) behaviour windows for the export check."""
    rng = np.random.default_rng(s.seed + 1)
    acts, behs = [], []
    for tid in m.val_ids[:4]:
        t = m.ds.length(tid)
        frames = rng.choice(t, size=min(8, t), replace=False)
        acts.append(windows_of(pad_responses(m.ds.responses(tid), s.window, s.lag), s.window,
                               frames))
        behs.append(windows_of(trial_behavior(m.ds, tid, s.window, s.lag, m.front.beh_mean),
                               s.window, frames))
    return np.concatenate(acts), np.concatenate(behs)


def onnx_max_diff(model: ResidualDecoder, path: Path, acts: np.ndarray,
                  behs: np.ndarray) -> float:
    """Max |onnxruntime - torch| on (n, W, N) windows (and behaviour), both on the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    model = model.cpu().eval()
    beh = model.s.behavior
    with torch.no_grad():
        ref = model(torch.as_tensor(acts), torch.as_tensor(behs) if beh else None).numpy()
    worst = 0.0
    for i in range(len(acts)):
        feed = {"activity": np.ascontiguousarray(acts[i: i + 1], np.float32)}
        if beh:
            feed["behavior"] = np.ascontiguousarray(behs[i: i + 1], np.float32)
        got = sess.run(["frame"], feed)[0]
        worst = max(worst, float(np.max(np.abs(got[0] - ref[i]))))
    return worst


def export_checked(model: ResidualDecoder, m: Mouse, s: TrainSettings, out: Path,
                   info: dict[str, Any]) -> ModelCard:
    """Export, compare onnxruntime with torch on held-out windows, then card, mask, norm."""
    out.parent.mkdir(parents=True, exist_ok=True)
    acts, behs = probe_windows(m, s)
    tmp = out.with_name(out.stem + ".tmp.onnx")
    export_residual(model, tmp)
    diff = onnx_max_diff(model, tmp, acts, behs)
    log.info("onnxruntime vs torch on %d held-out windows: max |diff| = %.3g (0..255 scale)",
             len(acts), diff)
    if not diff <= ONNX_TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"onnxruntime and torch disagree by {diff:.3g} (> {ONNX_TOLERANCE:.3g}) "
                         "on held-out input; the export is not trustworthy, nothing written")
    tmp.replace(out)
    h, w = m.ds.frame_shape
    card = ModelCard(neurons=m.ds.n_neurons, window=s.window, lag=s.lag, height=h, width=w,
                     onnx_max_abs_diff=diff, **info)
    save_beside(out, card, m.mask, m.front.resp_mean, m.front.resp_std, m.front.beh_mean,
                m.front.beh_std)
    return card
