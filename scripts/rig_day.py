#!/usr/bin/env python3
"""The rig day, end to end, on the simulated rig: the proof of issue 9 (docs/rig-day.md).

Runs the commands a rig operator runs, each as its own ``cortexcast`` process, and times them:

1. ``cortexcast clips``   a calibration clip set (training and validation clips + repeated
                          test clips);
2. ``cortexcast up``      a session: the simulated rig plays the clip set, announcing clip
                          identity (UDP) and pupil/eye (UDP JSON) as a stimulus computer and an
                          eye tracker would, and ``record`` writes frames, sync and stimulus;
3. ``cortexcast rois``    ROIs by the built-in detection (scored against the true footprints);
4. ``cortexcast export``  the session as a Sensorium-layout dataset, once with the detected ROIs
                          and once with the true footprints;
5. ``cortexcast train`` + ``cortexcast evaluate`` on each export's test tier;
6. the reference: ``cortexcast simulate`` of the same animal with the same number of trials,
   trained and evaluated the same way.

Prints a table and writes ``<work>/rig_day.json``. The animal is ``--seed`` (use one never used
in development). Example (the README's Measured figures)::

    python scripts/rig_day.py --work /tmp/rigday --seed 9101 --train-clips 100 --test-clips 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The realistic preset of ``cortexcast simulate`` (cortexcast/app/simulate.py PRESETS).
PRESET = "realistic"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cortexcast(*args: str, log: Path, env: dict[str, str] | None = None) -> float:
    """Run one ``cortexcast`` command; its output goes to ``log``; returns seconds taken."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "cortexcast", *args]
    print("$ cortexcast " + " ".join(args), flush=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stdout.write(log.read_text()[-3000:])
        raise SystemExit(f"cortexcast {args[0]} failed (exit {proc.returncode}); log: {log}")
    print(f"  {took:.1f} s", flush=True)
    return took


def sim_table(args: argparse.Namespace) -> dict[str, Any]:
    """The animal's [daq.sim] settings: the realistic preset, this seed and size."""
    from cortexcast.app.simulate import sim_settings

    s = sim_settings(PRESET, {"seed": args.seed, "n_neurons": args.neurons,
                              "frame_height": args.size, "frame_width": args.size,
                              "imaging_rate_hz": args.imaging_rate})
    return {k: v for k, v in dataclasses.asdict(s).items() if v is not None}


def session_config(work: Path, args: argparse.Namespace) -> Path:
    from cortexcast.core.tomlwrite import dumps

    daq_ep = f"tcp://127.0.0.1:{free_port()}"
    stim_port, eye_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    sim = sim_table(args)
    sim.update(clips=str(work / "clips"), paced=args.paced, session_seed=args.seed + 1,
               stimulus_to=f"127.0.0.1:{stim_port}", eye_to=f"127.0.0.1:{eye_port}")
    config = {
        "stack": {"processes": ["record", "daq"], "run_dir": str(work / "session-run")},
        "daq": {"publish": daq_ep, "source": "sim", "sync": ["stimulus", "behavior"],
                "wait_for": ["frames", "sync", "stimulus"], "hwm": 5000, "sim": sim,
                "stimulus": {"mode": "udp", "listen": f"127.0.0.1:{stim_port}",
                             "clip_library": str(work / "clips")},
                "behavior": {"mode": "udp", "listen": f"127.0.0.1:{eye_port}"}},
        "record": {"endpoints": [daq_ep], "out": str(work / "session.ccr"),
                   "topics": ["frames", "sync", "stimulus"], "hwm": 100000},
    }
    path = work / "session.toml"
    path.write_text(dumps(config))
    return path


def decoder_config(work: Path, args: argparse.Namespace) -> Path:
    """The [decoder] table export reads its feature settings from (as live decoding will)."""
    from cortexcast.core.tomlwrite import dumps

    path = work / "decoder.toml"
    path.write_text(dumps({"decoder": {"rois": str(work / "rois.npz"),
                                       "frame_rate_hz": args.imaging_rate,
                                       "stim_rate_hz": 30.0}}))
    return path


def live_config(work: Path, args: argparse.Namespace, rois: Path, model: Path) -> Path:
    """Step 7: the session replayed through daq -> decoder (this mouse's ROIs and model, pupil
    and eye from the recorded sync) -> record, as `up` runs it on the rig."""
    from cortexcast.core.tomlwrite import dumps

    daq_ep, dec_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = {
        "stack": {"processes": ["record", "decoder", "daq"], "run_dir": str(work / "live-run")},
        "daq": {"publish": daq_ep, "source": "replay", "wait_for": ["frames", "sync"],
                "hwm": 100000, "replay": {"recording": str(work / "session.ccr"),
                                          "topics": ["frames", "sync", "stimulus"],
                                          "speed": args.live_speed}},
        "decoder": {"frames_from": daq_ep, "publish": dec_ep, "rois": str(rois),
                    "model": str(model), "frame_rate_hz": args.imaging_rate,
                    "stim_rate_hz": 30.0, "hwm": 100000, "wait_for": ["reconstruction"]},
        "record": {"endpoints": [dec_ep], "out": str(work / "live.ccr"),
                   "topics": ["reconstruction"], "hwm": 100000},
    }
    path = work / "live.toml"
    path.write_text(dumps(config))
    return path


def score(path: Path) -> float:
    """The mean pixel correlation an `evaluate --json` file holds."""
    return float(json.loads(path.read_text())["mean"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="folder for everything (created)")
    p.add_argument("--seed", type=int, required=True, help="the animal (never used in development)")
    p.add_argument("--train-clips", type=int, default=100)
    p.add_argument("--test-clips", type=int, default=10)
    p.add_argument("--validation-clips", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--neurons", type=int, default=7800)
    p.add_argument("--size", type=int, default=512, help="imaging frame side (px)")
    p.add_argument("--imaging-rate", type=float, default=8.0,
                   help="imaging rate (Hz; the realistic preset's 8 Hz by default)")
    p.add_argument("--method", default="ridge", help="cortexcast train --method")
    p.add_argument("--train-args", default="", help="more arguments for cortexcast train")
    p.add_argument("--paced", action="store_true",
                   help="run the session in real time (default: as fast as the rig computes)")
    p.add_argument("--live", action="store_true",
                   help="step 7: replay the session through daq -> decoder with the model "
                   "trained on the detected ROIs, and count what it reconstructed")
    p.add_argument("--live-speed", type=float, default=1.0,
                   help="replay pace for --live, as a multiple of the recorded pace")
    p.add_argument("--force", action="store_true", help="empty --work first")
    args = p.parse_args(argv)

    work = Path(args.work).resolve()
    if work.exists() and any(work.iterdir()):
        if not args.force:
            raise SystemExit(f"{work} is not empty; pass --force to start afresh")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    logs = work / "logs"
    logs.mkdir()
    times: dict[str, float] = {}
    out: dict[str, Any] = {"seed": args.seed, "settings": vars(args), "times_s": times}
    frames = round(args.clip_seconds * 30)

    times["clips"] = cortexcast(
        "clips", "--out", str(work / "clips"), "--train-clips", str(args.train_clips),
        "--test-clips", str(args.test_clips), "--repeats", str(args.repeats),
        "--validation-clips", str(args.validation_clips),
        "--clip-seconds", str(args.clip_seconds), "--seed", str(args.seed), "--no-movies",
        log=logs / "clips.log")
    times["session"] = cortexcast("up", "--config", str(session_config(work, args)),
                                  log=logs / "session.log")

    # The reference: the same animal through `simulate` (its rois.npz: the true footprints).
    # As many training and validation trials as the export of the session has: the clip
    # set's validation clips, or (with none) a tenth of the training clips held out.
    n_train, n_val = args.train_clips, args.validation_clips
    if not n_val:
        n_val = max(1, n_train // 10)
        n_train -= n_val
    times["simulate"] = cortexcast(
        "simulate", "--out", str(work / "ds_simulate"), "--preset", PRESET,
        "--seed", str(args.seed), "--session-seed", str(args.seed + 2),
        "--neurons", str(args.neurons), "--height", str(args.size), "--width", str(args.size),
        "--imaging-rate-hz", str(args.imaging_rate), "--trials", str(n_train),
        "--oracle-clips", str(n_val), "--oracle-repeats", "1",
        "--test-trials", str(args.test_clips * args.repeats), "--frames", str(frames),
        log=logs / "simulate.log")
    true_rois = work / "ds_simulate" / "rois.npz"
    times["rois"] = cortexcast("rois", "--recording", str(work / "session.ccr"),
                               "--out", str(work / "rois.npz"), "--truth", str(true_rois),
                               log=logs / "rois.log")
    config = decoder_config(work, args)
    scores: dict[str, float] = {}
    for name, rois in (("detected", work / "rois.npz"), ("true", true_rois), ("simulate", None)):
        ds = work / f"ds_{name}" if rois is not None else work / "ds_simulate"
        if rois is not None:
            times[f"export_{name}"] = cortexcast(
                "export", "--recording", str(work / "session.ccr"), "--rois", str(rois),
                "--clips", str(work / "clips"), "--config", str(config), "--out", str(ds),
                log=logs / f"export_{name}.log")
        model = work / f"model_{name}.onnx"
        times[f"train_{name}"] = cortexcast(
            "train", "--data", str(ds), "--out", str(model), "--method", args.method,
            *args.train_args.split(), log=logs / f"train_{name}.log")
        result = work / f"evaluate_{name}.json"
        times[f"evaluate_{name}"] = cortexcast(
            "evaluate", "--data", str(ds), "--model", str(model), "--tier", "final_test_main",
            "--mask", str(work / "ds_simulate" / "eval_mask.npy"), "--json", str(result), log=logs / f"evaluate_{name}.log")
        scores[name] = score(result)
    out["scores"] = scores
    # The same comparison on one test set: the true-footprint export and the simulate dataset
    # hold the same neurons in the same order, so each model can be scored on the other's
    # test tier (clip content varies a lot between 10-clip test sets).
    cross: dict[str, float] = {}
    for model, data, tier in (("simulate", "true", "final_test_main"),
                              ("true", "simulate", "final_test_main"),
                              ("simulate", "simulate", "live_test_main"),
                              ("true", "simulate", "live_test_main")):
        result = work / f"evaluate_{model}_on_{data}_{tier}.json"
        cortexcast("evaluate", "--data", str(work / f"ds_{data}"), "--model",
                   str(work / f"model_{model}.onnx"), "--tier", tier,
                   "--mask", str(work / "ds_simulate" / "eval_mask.npy"), "--json", str(result),
                   log=logs / f"evaluate_{model}_on_{data}_{tier}.log")
        cross[f"{model} model on {data} {tier}"] = score(result)
    out["cross"] = cross
    if args.live:
        times["live"] = cortexcast("up", "--config", str(live_config(
            work, args, work / "rois.npz", work / "model_detected.onnx")), log=logs / "live.log")
        from cortexcast.stream.recording import RecordingReader

        with RecordingReader(work / "live.ccr") as rec:
            out["live_reconstructions"] = rec.counts().get("reconstruction", 0)
        with RecordingReader(work / "session.ccr") as rec:
            out["session_counts"] = rec.counts()
        print(f"live: {out['live_reconstructions']} reconstructions from "
              f"{out['session_counts'].get('frames', 0)} replayed frames")
    out["ratio_detected"] = scores["detected"] / scores["simulate"]
    out["ratio_true"] = scores["true"] / scores["simulate"]
    roi_log = (logs / "rois.log").read_text()
    out["rois_log_tail"] = roi_log[-600:]
    (work / "rig_day.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\npixel correlation on final_test_main ({args.method}):")
    for name in ("simulate", "true", "detected"):
        print(f"  {name:9s} {scores[name]:.3f}")
    print(f"  export/true footprints vs simulate: {out['ratio_true']:.3f}x (goal >= 0.95)")
    print(f"  export/detected ROIs   vs simulate: {out['ratio_detected']:.3f}x (goal >= 0.90)")
    for name, value in cross.items():
        print(f"  {name}: {value:.3f}")
    print("times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"wrote {work / 'rig_day.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
