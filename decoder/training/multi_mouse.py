"""Several mice at once: a shared nonlinear core, one readout (and ridge branch) per mouse.

Each mouse keeps what only it can have: its behavioural gains and front end (principal axes
of its own neurons), its ridge branch and eye-shift gain, and its per-row readout
``Linear(K_mouse -> k)`` into the shared per-frame latent. The temporal mixing and the output
layer (``mix`` and ``out`` of every member) are one set of weights trained on every mouse's
frames, in one frame basis (the first mouse's principal components of the frames).

Each mouse is early-stopped on its own validation trials (its best state includes the shared
core as it was then), and gets its own model, a normal single-mouse pixel decoder:
``--out DIR/NAME.onnx`` with ``--data A --data B`` writes ``DIR/NAME.A.onnx`` and
``DIR/NAME.B.onnx`` (the dataset folder's name; ``NAME.2.B.onnx`` style if names repeat),
each with its card, mask and ``.norm.npz``; the shared core goes to ``DIR/NAME.core.npz``
(:mod:`cortexcast.decoder.training.core_file`), for ``train --core`` on a new mouse.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from cortexcast.decoder.training.common import TrainResult, TrainSettings
from cortexcast.decoder.training.core_file import (SHARED, Core, CoreMeta, save_core,
                                                   shared_state)
from cortexcast.decoder.training.device import pick_device
from cortexcast.decoder.training.fit import (Cache, FitReport, keep_members_if_better,
                                  member_batch_loss, validation_score)
from cortexcast.decoder.training.mouse import (
    Mouse, build_model, card_info, export_checked, fit_options, prepare_mouse,
)
from cortexcast.decoder.training.residual import ResidualDecoder

log = logging.getLogger("cortexcast.decoder.training.train")


def model_paths(out: str, datas: list[str]) -> list[Path]:
    """One ONNX path per mouse: ``<stem>.<folder name>.onnx`` beside ``out``."""
    base = Path(out)
    names = [Path(d).resolve().name or "mouse" for d in datas]
    paths = []
    for i, name in enumerate(names):
        tag = name if names.count(name) == 1 else f"{i + 1}.{name}"
        paths.append(base.with_name(f"{base.stem}.{tag}.onnx"))
    return paths


def core_path_for(out: str) -> Path:
    """``DIR/NAME.onnx`` -> ``DIR/NAME.core.npz``: where several mice's shared core goes."""
    base = Path(out)
    return base.with_name(f"{base.stem}.core.npz")


def tie_cores(models: list[ResidualDecoder]) -> None:
    """Make every model's member i use model 0's member i core modules (shared weights)."""
    for m in models[1:]:
        for i, member in enumerate(m.members):
            for name in SHARED:
                setattr(member, name, getattr(models[0].members[i], name))


def unique_parameters(models: list[ResidualDecoder]) -> list[torch.nn.Parameter]:
    seen: dict[int, torch.nn.Parameter] = {}
    for m in models:
        for p in m.members.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def train_mice(datas: list[str], s: TrainSettings) -> list[TrainResult]:
    """Prepare every mouse, train the tied models, export one model per mouse."""
    t0 = time.monotonic()
    torch.manual_seed(s.seed)
    device = pick_device(s.device)
    first = prepare_mouse(datas[0], s, device)
    s = first.settings  # one window and lag for every mouse: the first mouse's choice
    mice = [first] + [prepare_mouse(d, s, device, (first.pix_mean, first.pix_basis))
                      for d in datas[1:]]
    h_w = {m.ds.frame_shape for m in mice}
    if len(h_w) > 1:
        from cortexcast.decoder.offline.dataset import DatasetError

        raise DatasetError(f"the mice's frames differ in size: {sorted(h_w)}; one core "
                           "decodes one frame size")
    models = [build_model(m, s, s.ensemble).to(device) for m in mice]
    tie_cores(models)
    deadline = None if s.time_budget_s is None else t0 + s.time_budget_s
    reports, core_states, core_scores = fit_tied(models, mice, s, device, deadline)
    train_time = time.monotonic() - t0
    h, w = mice[0].ds.frame_shape
    core_path = core_path_for(s.out)
    save_core(core_path, Core(
        CoreMeta(s.window, int(s.lag), s.ensemble, s.row_features, s.hidden, s.dropout,
                 models[0].s.behavior, first.pix_basis.shape[1], h, w,
                 tuple(str(Path(d).resolve()) for d in datas), tuple(core_scores)),
        first.pix_mean, first.pix_basis, core_states))
    log.info("wrote the shared core to %s (mean member validation r per mouse %s)",
             core_path, ", ".join(f"{x:.4f}" for x in core_scores))
    results = []
    for model, mouse, rep, path in zip(models, mice, reports, model_paths(s.out, datas)):
        ms = dataclasses.replace(s, data=str(mouse.ds.root), out=str(path))
        info = card_info(mouse, ms, model, rep, device, train_time)
        info["extra"]["training"]["multi_mouse"] = {
            "mice": [str(Path(d).resolve()) for d in datas], "shared": list(SHARED),
            "core": str(core_path)}
        card = export_checked(model, mouse, ms, path, info)
        log.info("%s: validation r ridge %.4f, ensemble %.4f; wrote %s", mouse.ds.root,
                 rep.ridge_score, rep.ensemble_score, path)
        results.append(TrainResult(path, card, max(rep.member_epochs), rep.epochs_run,
                                   rep.history))
    return results


def fit_tied(models: list[ResidualDecoder], mice: list[Mouse], s: TrainSettings,
             device: torch.device, deadline: float | None
             ) -> tuple[list[FitReport], list[dict[str, np.ndarray]], list[float]]:
    """Adam on all mice's members at once; per (mouse, member) best validation state.

    Returns one report per mouse, every member's shared core at the epoch where its mean
    validation r over the mice was best (for :mod:`~cortexcast.decoder.training.core_file`),
    and each mouse's mean member score at those states. On return the models are untied
    copies holding each mouse's best states.
    """
    opt = fit_options(s)
    gen = torch.Generator().manual_seed(opt.seed)
    caches = [(Cache(mo, m.train, m.front, device, True), Cache(mo, m.val, m.front, device, False))
              for mo, m in zip(models, mice)]
    adam = torch.optim.AdamW(unique_parameters(models), lr=opt.lr,
                             weight_decay=opt.weight_decay)
    n = s.ensemble
    ridge = [validation_score(mo, vc, m.mask, []) for mo, m, (_, vc) in
             zip(models, mice, caches)]
    best = [[r] * n for r in ridge]
    states = [[copy.deepcopy(mem.state_dict()) for mem in mo.members] for mo in models]
    best_epoch = [[0] * n for _ in models]
    bad = [[0] * n for _ in models]
    steps = max(1, max(c.fs.frames for c, _ in caches) // opt.batch)
    power = [float(tc.target.var()) for tc, _ in caches]
    history: list[list[dict]] = [[{"epoch": 0, "val_r": r}] for r in ridge]
    core_states = [shared_state(mem) for mem in models[0].members]
    core_best = [-math.inf] * n
    core_at_best = [list(ridge) for _ in range(n)]  # [member][mouse]
    epoch = 0
    for epoch in range(1, opt.epochs + 1):
        out_of_time = False
        losses = []
        for _ in range(steps):
            total = 0.0
            for mo, (tc, _), pw in zip(models, caches, power):
                for i in range(n):
                    total = total + member_batch_loss(mo, tc, i, opt, gen, pw)
            adam.zero_grad(set_to_none=True)
            total.backward()
            adam.step()
            losses.append(float(total.detach()))
            if deadline is not None and time.monotonic() > deadline:
                out_of_time = True
                break
        all_scores = []
        for k, (mo, m, (_, vc)) in enumerate(zip(models, mice, caches)):
            scores = [validation_score(mo, vc, m.mask, [i]) for i in range(n)]
            all_scores.append(scores)
            for i, sc in enumerate(scores):
                if np.isfinite(sc) and sc > best[k][i]:
                    best[k][i], best_epoch[k][i], bad[k][i] = sc, epoch, 0
                    states[k][i] = copy.deepcopy(mo.members[i].state_dict())
                else:
                    bad[k][i] += 1
            history[k].append({"epoch": epoch, "loss": float(np.mean(losses)) if losses
                               else math.nan, "val_r": float(np.mean(scores))})
        for i in range(n):
            mean_i = float(np.mean([sc[i] for sc in all_scores]))
            if np.isfinite(mean_i) and mean_i > core_best[i]:
                core_best[i], core_states[i] = mean_i, shared_state(models[0].members[i])
                core_at_best[i] = [sc[i] for sc in all_scores]
        log.info("epoch %d: validation r per mouse %s", epoch,
                 ", ".join(f"{h[-1]['val_r']:.4f}" for h in history))
        if out_of_time or min(min(b) for b in bad) >= opt.patience:
            break
    reports = []
    for k, m in enumerate(mice):
        models[k] = copy.deepcopy(models[k])  # untie before loading this mouse's states
        for mem, st in zip(models[k].members, states[k]):
            mem.load_state_dict(st)
        vc = Cache(models[k], m.val, m.front, device, False)
        sc = vc if m.select is m.val else Cache(models[k], m.select, m.front, device, False)
        ens = validation_score(models[k], vc, m.mask) if n > 1 else best[k][0]
        ens, sel, kept = keep_members_if_better(models[k], vc, sc, m.mask, ens, ridge[k])
        reports.append(FitReport(best[k], best_epoch[k], ens, ridge[k], epoch, history[k],
                                 sel, kept))
    core_scores = [float(np.mean([core_at_best[i][k] for i in range(n)]))
                   for k in range(len(mice))]
    return reports, core_states, core_scores
