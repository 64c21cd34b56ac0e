"""Subcommands ``train``, ``evaluate`` and ``reconstruct``.

Each ``register_*`` adds one subparser with ``set_defaults(func=run)``; the
work is imported inside ``run``, and torch only by ``train --method decoder`` and
``reconstruct --method inversion`` (``train --method ridge`` runs without torch).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

TIER_HELP = "tier to use: train, oracle, live_test_main, final_test_main, ... (default %(default)s)"


def _logging(name: str) -> None:
    from cortexcast.core.runtime import setup_logging

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    setup_logging(name, level if isinstance(level, str) else "INFO")


def _providers(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _add_ort_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--providers", default="CPUExecutionProvider",
                   help="onnxruntime execution providers, comma-separated (default %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime intra-op threads (default %(default)s)")


# ---------------------------------------------------------------------- train
def _train_extra(path: str | None) -> dict:
    """The --extra JSON object ({} without the flag); ValueError naming the problem."""
    if not path:
        return {}
    try:
        extra = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--extra {path}: {exc}") from None
    if not isinstance(extra, dict):
        raise ValueError(f"--extra {path}: not a JSON object")
    return extra


def run_train(args: argparse.Namespace) -> int:
    from cortexcast.decoder.training.common import DEFAULT_TIME_BUDGET_S, TrainSettings

    _logging("train")
    datas = list(args.data)
    try:
        extra = _train_extra(args.extra)
        if args.method == "ridge":
            from cortexcast.decoder.training.ridge import RidgeSettings, train_ridge

            if len(datas) > 1:
                raise ValueError("--method ridge takes one --data folder")
            rs = RidgeSettings(data=datas[0], out=args.out, window=args.window, lag=args.lag,
                               max_lag_ms=args.max_lag_ms, train_trials=args.train_trials,
                               seed=args.seed, val_tier=args.val_tier,
                               progress=not args.no_progress, extra=extra,
                               **({} if args.readout is None else {"components": args.readout}))
            run = lambda: train_ridge(rs)  # noqa: E731
        else:
            more = {} if args.readout is None else {"readout": args.readout}
            if args.ensemble is not None:
                more["ensemble"] = args.ensemble
            if args.core is not None:
                if len(datas) > 1:
                    raise ValueError("--core calibrates one new mouse: give one --data (several "
                                     "--data pretrain a core, written as <out stem>.core.npz)")
                if args.ensemble is not None:
                    raise ValueError("--ensemble: with --core the members are the core's")
                more["core"] = args.core
            budget = (DEFAULT_TIME_BUDGET_S * len(datas) if args.time_budget is None
                      else args.time_budget or None)
            if args.chunk_trials < 1:  # the flag is otherwise ignored (kept for compatibility)
                raise ValueError(f"--chunk-trials must be >= 1, got {args.chunk_trials}")
            settings = TrainSettings(
                data=datas[0], out=args.out, window=args.window, lag=args.lag,
                max_lag_ms=args.max_lag_ms, train_trials=args.train_trials,
                epochs=args.epochs, time_budget_s=budget, seed=args.seed, device=args.device,
                lr=args.lr, patience=args.patience, behavior=not args.no_behavior,
                neuron_weights=not args.no_neuron_weights, core_lr_scale=args.core_lr_scale,
                val_tier=args.val_tier, progress=not args.no_progress, extra=extra, **more)
            from cortexcast.decoder.training.device import pick_device  # imports torch
            from cortexcast.decoder.training.train import train

            pick_device(settings.device)
            if len(datas) > 1:
                from cortexcast.decoder.training.multi_mouse import core_path_for, train_mice

                results = train_mice(datas, settings)
                for r in results:
                    c = r.card
                    print(f"wrote {r.model_path} ({c.data_used['folder']}): {c.neurons} "
                          f"neurons; validation pixel correlation {c.validation_score}")
                print(f"wrote {core_path_for(settings.out)} (the shared core: calibrate a new "
                      "mouse with `cortexcast train --data NEW --core` it)")
                return 0
            run = lambda: train(settings)  # noqa: E731
    except (ValueError, RuntimeError) as exc:
        print(f"cortexcast train: error: {exc}", file=sys.stderr)
        return 2
    result = run()
    c = result.card
    print(f"wrote {result.model_path} (+ .json card, .mask.npy, .norm.npz): {c.neurons} "
          f"neurons, window {c.window}, lag {c.lag}; validation pixel correlation "
          f"{c.validation_score}; onnxruntime vs torch max |diff| {c.onnx_max_abs_diff:.3g}; "
          f"{c.training_time_s:.1f} s")
    return 0


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="fit a pixel decoder on a Sensorium-layout dataset and export ONNX",
        description="Fit a decoder from a causal window of responses (and behaviour) to the "
        "36x64 stimulus frame, on tier 'train' of a dataset folder in the Sensorium 2023 "
        "layout, with early stopping on the validation tier. Writes MODEL.onnx, its card "
        "MODEL.json, its evaluation mask MODEL.mask.npy and the normalisation MODEL.norm.npz, "
        "after checking onnxruntime against torch. --method decoder (default): the neurons "
        "weighted by how well the movie predicts each, ridge as a linear branch plus a "
        "nonlinear residual that uses pupil, running and eye position, "
        "--ensemble members averaged in one graph. --method ridge: the linear baseline. "
        "Several --data folders (decoder only): one shared core, one readout per mouse, and one "
        "model per mouse, MODEL.<folder name>.onnx. Needs the 'train' extra (torch).")
    p.add_argument("--data", required=True, action="append",
                   help="dataset folder (Sensorium 2023 layout); repeat for several mice")
    p.add_argument("--out", required=True, help="model path, ending in .onnx")
    p.add_argument("--method", choices=("decoder", "ridge"), default="decoder",
                   help="decoder (nonlinear, default) or ridge (linear baseline)")
    p.add_argument("--window", type=int, default=10,
                   help="imaging frames per reconstruction, 1..10; without --lag the longest "
                   "tried (default %(default)s)")
    p.add_argument("--lag", type=int, default=None,
                   help="frames of responses after the reconstructed frame, 0..window-1 "
                   "(default: window and lag chosen on validation within --max-lag-ms)")
    p.add_argument("--max-lag-ms", type=float, default=300.0, metavar="MS",
                   help="latency budget of the window/lag choice: the lag (ms of responses "
                   "after the frame, 33.3 ms per row) never exceeds it (default 300, the "
                   "paper's ~300 ms of neural data)")
    p.add_argument("--train-trials", type=int, default=None, metavar="N",
                   help="fit on the first N training trials only (learning curves; default: "
                   "all)")
    p.add_argument("--epochs", type=int, default=200,
                   help="most passes over the training frames (default %(default)s)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop training this many seconds after the start, setup included; "
                   "the export follows (default 1200 per mouse; 0 = no limit)")
    p.add_argument("--ensemble", type=int, default=None, metavar="K",
                   help="decoder members averaged inside the one ONNX graph (default 4)")
    p.add_argument("--no-behavior", action="store_true",
                   help="ignore pupil, running and eye position (graph input 'activity' only)")
    p.add_argument("--no-neuron-weights", action="store_true",
                   help="--method decoder: read the z-scored population as it is, not weighted "
                   "by each neuron's cross-validated encoding correlation with the movie")
    p.add_argument("--patience", type=int, default=10,
                   help="epochs without validation progress before stopping (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto",
                   help="auto (CUDA if available), cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument("--lr", type=float, default=3e-4,
                   help="AdamW learning rate of the nonlinear members (default %(default)s)")
    p.add_argument("--readout", type=int, default=None,
                   help="principal components per imaging frame (default 256), "
                   "the live cost grows with N x this")
    p.add_argument("--chunk-trials", type=int, default=16,
                   help="kept for compatibility; trials are read one at a time")
    p.add_argument("--val-tier", default="oracle",
                   help="validation tier; if it has no responses, 10%% of train is held out")
    p.add_argument("--extra", metavar="JSON", default=None,
                   help="JSON file whose object goes into the card's 'extra' "
                   "(e.g. the simulator settings)")
    p.add_argument("--core", default=None, metavar="CORE.npz",
                   help="calibrate this mouse on a core pretrained on other mice (written as "
                   "<out stem>.core.npz by train with several --data): its window, lag and "
                   "frame basis are used, the members start from it")
    p.add_argument("--core-lr-scale", type=float, default=0.1, metavar="X",
                   help="with --core: the core's learning rate is --lr x this (0 = frozen; "
                   "default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.set_defaults(func=run_train)


# ------------------------------------------------------------------- evaluate
def run_evaluate(args: argparse.Namespace) -> int:
    from cortexcast.decoder.offline.report import parse_method, unique_labels

    _logging("evaluate")
    methods = unique_labels([parse_method(x, "model") for x in args.model or []]
                            + [parse_method(x, "recon") for x in args.recon or []])
    if not methods:
        print("cortexcast evaluate: error: give at least one --model or --recon",
              file=sys.stderr)
        return 2
    if args.report:
        return _run_report(args, methods)
    from cortexcast.decoder.offline.dataset import SensoriumDataset
    from cortexcast.decoder.offline.evaluate import choose_mask, evaluate, write_json

    mask = None
    if len(methods) > 1:   # one mask for all, so the scores compare
        first = next((m.path for m in methods if m.kind == "model"), None)
        mask = choose_mask(SensoriumDataset(args.data), first, args.mask)
    results = []
    for m in methods:
        result = evaluate(args.data, args.tier,
                          recon_dir=m.path if m.kind == "recon" else None,
                          model_path=m.path if m.kind == "model" else None,
                          mask_file=args.mask, mask=mask, providers=_providers(args.providers),
                          threads=args.threads)
        print(("" if len(methods) == 1 else f"[{m.label}] ") + result.report())
        results.append((m.label, result))
    if args.json:
        if len(results) == 1:
            write_json(results[0][1], args.json)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(
                {label: r.to_dict() for label, r in results}, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0


def _run_report(args: argparse.Namespace, methods: list) -> int:
    from cortexcast.decoder.offline.report import build_report, summary_lines

    try:
        fractions = tuple(float(x) for x in args.fractions.split(","))
    except ValueError:
        print(f"cortexcast evaluate: error: --fractions {args.fractions!r}: expected numbers "
              "like 1,0.5,0.25,0.125", file=sys.stderr)
        return 2
    report = build_report(args.data, args.tier, methods, args.report, mask_file=args.mask,
                          fractions=fractions, draws=args.draws, seed=args.seed,
                          providers=_providers(args.providers), threads=args.threads,
                          log=lambda line: print(line, flush=True))
    print("\n".join(summary_lines(report)))
    print(f"wrote {Path(args.report) / 'report.json'} and its images")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="pixel correlation between reconstructions and the stimulus",
        description="Score the reconstructions of one tier with the pixel correlation of "
        "Bauer et al. (eLife 2025): reconstruction smoothed by a Gaussian (0.5 frame, 0.5 px, "
        "0.5 px), frames 30..299, one Pearson r per clip over the pixels of the evaluation "
        "mask, averaged over clips. Mask: --mask, else the dataset's eval_mask.npy, else the "
        "model's, else estimated from the dataset's training responses. Several methods "
        "(--model and --recon may repeat, as LABEL=PATH) are scored with one mask; --report "
        "DIR also writes per-clip scores, best/median/worst frame strips, per-pixel "
        "correlation maps and the neuron-dropping curve (report.json + PNGs); models "
        "labelled NAME@N (e.g. ridge@30=r30.onnx ridge@60=r60.onnx) also get trials.png, the "
        "score against the training trials in their cards (learning curves).")
    p.add_argument("--data", required=True, help="dataset folder (Sensorium 2023 layout)")
    p.add_argument("--recon", action="append", metavar="[LABEL=]DIR",
                   help="folder of <trial>.npy written by `cortexcast reconstruct` (repeatable)")
    p.add_argument("--model", action="append", metavar="[LABEL=]ONNX",
                   help="ONNX model: reconstruct in memory through the live path (repeatable)")
    p.add_argument("--tier", default="final_test_main", help=TIER_HELP)
    p.add_argument("--mask", default=None, help="bool (36, 64) .npy evaluation mask to use")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the result as JSON")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write the full report (report.json, strip_*.png, corr_map_*.png/.npy, "
                   "neurons.png, trials.png) into DIR")
    p.add_argument("--fractions", default="1,0.5,0.25,0.125",
                   help="--report: fractions of neurons kept (default %(default)s)")
    p.add_argument("--draws", type=int, default=3,
                   help="--report: random neuron subsets per fraction (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="--report: seed of the neuron subsets")
    _add_ort_flags(p)
    p.set_defaults(func=run_evaluate)


# ---------------------------------------------------------------- reconstruct
def run_reconstruct(args: argparse.Namespace) -> int:
    _logging("reconstruct")
    if args.method == "inversion":
        result = _run_inversion(args)
        if result is None:
            return 2
    else:
        from cortexcast.decoder.offline.reconstruct import reconstruct

        if args.model is None:
            print("cortexcast reconstruct: error: --model is required with --method decoder",
                  file=sys.stderr)
            return 2
        result = reconstruct(args.data, args.model, args.tier, args.out,
                             providers=_providers(args.providers), threads=args.threads,
                             progress=not args.no_progress)
    if result.skipped:
        print(f"cortexcast reconstruct: {result.skipped}", file=sys.stderr)
        return 0
    print(f"wrote {len(result.files)} reconstructions to {args.out}"
          + (f" ({result.nan_values} NaN response values fed as 0)" if result.nan_values else ""))
    return 0


def register_reconstruct(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct", help="write the model's reconstruction of every trial of a tier",
        description="Stream each trial's responses frame by frame through the same ONNX path "
        "the live decoder uses and write OUT/<trial>.npy, float32 (T, 36, 64): frame t uses "
        "responses up to frame t + lag (the model's declared lag), never later; after a "
        "trial's last frame, lag zero vectors are pushed. With --method inversion: fit "
        "encoding models (movie + behaviour -> responses, Poisson loss; cached at --encoder) "
        "and reconstruct each clip offline by gradient descent on its pixels from grey, "
        "gradients smoothed and restricted to the mask, pixels clipped to 0..255, the "
        "instances' reconstructions averaged; same output files, plus OUT/inversion.json. "
        "A tier without responses is reported and skipped.")
    p.add_argument("--data", required=True, help="dataset folder (Sensorium 2023 layout)")
    p.add_argument("--method", choices=("decoder", "inversion"), default="decoder",
                   help="decoder: the ONNX model through the live path (default); inversion: "
                   "the paper's offline method (Bauer, Margrie & Clopath, eLife 2025), "
                   "gradient descent on the pixels through encoding models (needs torch)")
    p.add_argument("--model", default=None,
                   help="ONNX model with its .json card beside it (--method decoder)")
    p.add_argument("--tier", default="final_test_main", help=TIER_HELP)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_ort_flags(p)
    inv = p.add_argument_group("--method inversion (--threads sets torch's CPU threads)")
    inv.add_argument("--encoder", default=None, metavar="PATH",
                     help="encoding-model cache: reused when it exists, written when not "
                     "(default OUT/encoder.pt)")
    inv.add_argument("--members", type=int, default=2,
                     help="encoding-model instances (seeds) whose reconstructions are averaged "
                     "(default %(default)s)")
    inv.add_argument("--time-budget", type=float, default=600.0, metavar="SECONDS",
                     help="training time for the encoders not in the cache, all together "
                     "(default %(default)s)")
    inv.add_argument("--iterations", type=int, default=None,
                     help="gradient steps per clip and instance (default "
                     f"{_inversion_default('iterations')})")
    inv.add_argument("--device", default="auto",
                     help="auto (CUDA if available), cpu, cuda, cuda:N (default %(default)s)")
    inv.add_argument("--seed", type=int, default=0)
    inv.add_argument("--val-tier", default="oracle",
                     help="tier that picks the encoders' best state; a tier without responses "
                     "(or no trials) holds out 10%% of train instead (default %(default)s)")
    inv.add_argument("--mask", default=None,
                     help="bool (36, 64) .npy mask the gradients are restricted to (default: the "
                     "evaluation mask `cortexcast evaluate` would use)")
    p.set_defaults(func=run_reconstruct)


def _inversion_default(name: str) -> object:
    """A default of InversionSettings without importing torch (help text only)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("cortexcast.decoder.training.inversion.invert")
    if spec is None or spec.origin is None:
        return "?"
    src = Path(spec.origin).read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == name:
            return ast.literal_eval(node.value)
    return "?"


def _run_inversion(args: argparse.Namespace):
    """Parse the inversion settings (errors -> message, None) and run it."""
    from cortexcast.decoder.training.inversion.fit import FitSettings  # imports torch
    from cortexcast.decoder.training.inversion.invert import InversionSettings
    from cortexcast.decoder.training.inversion.run import reconstruct_inversion
    from cortexcast.decoder.training.device import pick_device

    try:
        pick_device(args.device)
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        fit = FitSettings(members=args.members, time_budget_s=args.time_budget, seed=args.seed,
                          val_tier=args.val_tier, progress=not args.no_progress)
        inversion = InversionSettings(**({} if args.iterations is None
                                         else {"iterations": args.iterations}))
        if args.mask is not None and not Path(args.mask).is_file():
            raise ValueError(f"mask file {args.mask} does not exist")
    except ValueError as exc:
        print(f"cortexcast reconstruct: error: {exc}", file=sys.stderr)
        return None
    return reconstruct_inversion(args.data, args.tier, args.out, encoder=args.encoder,
                                 fit=fit, inversion=inversion, mask_file=args.mask,
                                 device=args.device, threads=args.threads,
                                 progress=not args.no_progress)
