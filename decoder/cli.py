"""Subcommands ``train``, ``evaluate`` and ``reconstruct``.

Each ``register_*`` adds one subparser with ``set_defaults(func=run)``; the
work is imported inside ``run``, and torch only by ``train``'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

TIER_HELP = "tier to use: train, oracle, live_test_main, final_test_main, ... (default %(default)s)"


def _logging(name: str) -> None:
    from cortexcast.runtime import setup_logging

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
def run_train(args: argparse.Namespace) -> int:
    from decoder.train import TrainSettings, pick_device, train  # imports torch

    _logging("train")
    extra: dict = {}
    if args.extra:
        try:
            extra = json.loads(Path(args.extra).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"cortexcast train: error: --extra {args.extra}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(extra, dict):
            print(f"cortexcast train: error: --extra {args.extra}: not a JSON object",
                  file=sys.stderr)
            return 2
    try:
        settings = TrainSettings(
            data=args.data, out=args.out, window=args.window, lag=args.lag, epochs=args.epochs,
            time_budget_s=args.time_budget, seed=args.seed, device=args.device, lr=args.lr,
            chunk_trials=args.chunk_trials, readout=args.readout, patience=args.patience,
            val_tier=args.val_tier, progress=not args.no_progress, extra=extra)
        pick_device(settings.device)
    except (ValueError, RuntimeError) as exc:
        print(f"cortexcast train: error: {exc}", file=sys.stderr)
        return 2
    result = train(settings)
    c = result.card
    print(f"wrote {result.model_path} (+ .json card, .mask.npy): {c.neurons} neurons, window "
          f"{c.window}, lag {c.lag}; validation pixel correlation {c.validation_score}; "
          f"onnxruntime vs torch max |diff| {c.onnx_max_abs_diff:.3g}; "
          f"{c.training_time_s:.1f} s")
    return 0


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="fit a pixel decoder on a Sensorium-layout dataset and export ONNX",
        description="Fit a decoder from a causal window of responses to the 36x64 stimulus "
        "frame, on tier 'train' of a dataset folder in the Sensorium 2023 layout, with early "
        "stopping on the validation tier. Writes MODEL.onnx, its card MODEL.json and its "
        "evaluation mask MODEL.mask.npy, after checking onnxruntime against torch. Needs the "
        "'train' extra (torch).")
    p.add_argument("--data", required=True, help="dataset folder (Sensorium 2023 layout)")
    p.add_argument("--out", required=True, help="model path, ending in .onnx")
    p.add_argument("--window", type=int, default=10,
                   help="imaging frames per reconstruction, 1..10 (default %(default)s)")
    p.add_argument("--lag", type=int, default=5,
                   help="frames of responses after the reconstructed frame, 0..window-1 "
                   "(default %(default)s, 167 ms at 30 Hz)")
    p.add_argument("--epochs", type=int, default=60, help="maximum epochs (default %(default)s)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop training this many seconds after the start, setup included; "
                   "the export follows (default: no limit)")
    p.add_argument("--patience", type=int, default=8,
                   help="epochs without validation progress before stopping (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto",
                   help="auto (CUDA if available), cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--readout", type=int, default=48,
                   help="features per imaging frame (default %(default)s); the model is about "
                   "(N x this + 1.8 M) x 4 bytes, 9 MB at N = 7,800")
    p.add_argument("--chunk-trials", type=int, default=16,
                   help="trials held in memory at once (default %(default)s)")
    p.add_argument("--val-tier", default="oracle",
                   help="validation tier; if it has no responses, 10%% of train is held out")
    p.add_argument("--extra", metavar="JSON", default=None,
                   help="JSON file whose object goes into the card's 'extra' "
                   "(e.g. the simulator settings)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


# ------------------------------------------------------------------- evaluate
def run_evaluate(args: argparse.Namespace) -> int:
    from decoder.evaluate import evaluate, write_json

    _logging("evaluate")
    result = evaluate(args.data, args.tier, recon_dir=args.recon, model_path=args.model,
                      mask_file=args.mask, providers=_providers(args.providers),
                      threads=args.threads)
    print(result.report())
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="pixel correlation between reconstructions and the stimulus",
        description="Score the reconstructions of one tier with the pixel correlation of "
        "Bauer et al. (eLife 2025): reconstruction smoothed by a Gaussian (0.5 frame, 0.5 px, "
        "0.5 px), frames 30..299, one Pearson r per clip over the pixels of the evaluation "
        "mask, averaged over clips. Mask: --mask, else the dataset's eval_mask.npy, else the "
        "model's, else estimated from the dataset's training responses.")
    p.add_argument("--data", required=True, help="dataset folder (Sensorium 2023 layout)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--recon", help="folder of <trial>.npy written by `cortexcast reconstruct`")
    src.add_argument("--model", help="ONNX model: reconstruct in memory through the live path")
    p.add_argument("--tier", default="final_test_main", help=TIER_HELP)
    p.add_argument("--mask", default=None, help="bool (36, 64) .npy evaluation mask to use")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the result as JSON")
    _add_ort_flags(p)
    p.set_defaults(func=run_evaluate)


# ---------------------------------------------------------------- reconstruct
def run_reconstruct(args: argparse.Namespace) -> int:
    from decoder.reconstruct import reconstruct

    _logging("reconstruct")
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
        "trial's last frame, lag zero vectors are pushed. A tier without responses is reported "
        "and skipped.")
    p.add_argument("--data", required=True, help="dataset folder (Sensorium 2023 layout)")
    p.add_argument("--model", required=True, help="ONNX model with its .json card beside it")
    p.add_argument("--tier", default="final_test_main", help=TIER_HELP)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_ort_flags(p)
    p.set_defaults(func=run_reconstruct)
