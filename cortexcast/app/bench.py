"""`cortexcast bench`: the full stack (sim -> decoder -> display sink), measured.

Reports per-stage latency p50/p99/max (from the monotonic stamps every
stage appends; all processes share the host's monotonic clock), throughput,
drops, CPU and peak memory per process, as text and JSON. It measures; it
does not assert — targets are printed next to the figures.

``--decoder-only`` measures just the live per-frame cost of the pixel decoder
(:meth:`PixelDecoder.push`, onnxruntime, ``--threads``) of one or more models
on realistic activity, warm-up excluded, and the ratio between them.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from cortexcast.app.bench_memory import memory_report
from cortexcast.app.bench_plots import latency_cdf_png
from cortexcast.app.ports import free_port, free_ports  # noqa: F401 (tests import them here)
from cortexcast.app.launcher import run_stack, write_sim_config
from cortexcast.core.runtime import percentiles_ms, write_json_atomic

TARGET_E2E_P99_MS = 10.0
TARGET_DECODER_P99_MS = 2.0
"""Live decoder budget: p99 per frame at ~8,000 neurons on 2 onnxruntime threads."""
BUDGET_NEURONS = 8000


def run_bench(duration_s: float, model: str, run_dir: Path,
              transport: str = "tcp") -> dict[str, Any]:
    http, daq, dec = free_ports(3)
    config = write_sim_config(run_dir, model=model, headless=True, port=http,
                              daq_port=daq, decoder_port=dec, transport=transport)
    t0 = time.monotonic()
    code, summary = run_stack(config, duration_s, run_dir)
    elapsed = time.monotonic() - t0
    decoded = summary.get("frames_decoded") or 0
    e2e = summary.get("latency_ms", {}).get("end_to_end", {})
    drops = sum(v or 0 for v in summary["drops"].values())
    memory = memory_report(summary.get("resources", {}), duration_s)
    report = {
        "command": f"cortexcast bench --duration {duration_s:g} --model {model} "
                   f"--transport {transport}",
        "host": {"machine": platform.machine(), "cpus": _cpus(), "python": platform.python_version()},
        "duration_s": duration_s,
        "exit_code": code,
        "throughput_fps": decoded / max(1e-9, (summary["processes"].get("daq") or {}).get(
            "acquiring_s", duration_s)),
        "wall_s": elapsed,
        "targets": {"end_to_end_p99_ms": TARGET_E2E_P99_MS, "drops": 0,
                    "memory_growth_pct": memory["target_pct"],
                    "met": bool(e2e.get("p99", float("inf")) <= TARGET_E2E_P99_MS and drops == 0
                                and code == 0),
                    "memory_met": memory["met"]},
        "memory": memory,
        **{k: v for k, v in summary.items() if k != "processes"},
    }
    return report


def _loadavg() -> list[float] | None:
    """1/5/15-min load average: a p99 measured on a busy machine says so in the JSON."""
    import os
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def synthetic_activity(neurons: int, frames: int, rate_hz: float = 30.0,
                       seed: int = 0) -> np.ndarray:
    """(frames, N) float32 ΔF/F-like activity: sparse calcium transients (Poisson events,
    exponential decay, per-neuron rates and amplitudes) plus imaging noise."""
    rng = np.random.default_rng(seed)
    rates = rng.lognormal(np.log(1.0), 0.8, neurons) / rate_hz  # events per frame
    amp = rng.lognormal(np.log(0.3), 0.5, neurons)
    decay = np.exp(-1.0 / (rate_hz * 0.7))
    out = np.empty((frames, neurons), np.float32)
    c = np.zeros(neurons)
    for t in range(frames):
        c = c * decay + amp * rng.poisson(rates)
        out[t] = c + rng.normal(0.0, 0.05, neurons)
    return out


def _dataset_activity(data: str, neurons: int, frames: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to ``frames`` rows of a dataset's responses (and behaviour), trial after trial."""
    from cortexcast.decoder.offline.dataset import SensoriumDataset
    from cortexcast.decoder.live.model_card import ModelError
    
    ds = SensoriumDataset(data)
    if ds.n_neurons != neurons:
        raise ModelError(f"the model expects {neurons} neurons but {data} has {ds.n_neurons}")
    acts, behs = [], []
    for tier in ds.tiers():
        if not ds.has_responses(tier):
            continue
        for tid in ds.trial_ids(tier):
            acts.append(ds.responses(tid))
            b = ds.behavior_rows(tid)
            behs.append(b if b is not None else np.full((len(acts[-1]), 4), np.nan, np.float32))
            if sum(len(a) for a in acts) >= frames:
                return np.concatenate(acts)[:frames], np.concatenate(behs)[:frames]
    if not acts:
        raise ModelError(f"{data} has no trials with responses to benchmark on")
    return np.concatenate(acts), np.concatenate(behs)


def run_decoder_bench(models: list[str], *, frames: int = 3000, warmup: int = 200,
                      threads: int = 2, data: str | None = None, block: int = 100,
                      seed: int = 0) -> dict[str, Any]:
    """Per-push cost of each model's :class:`PixelDecoder` (the live path), in turn.

    Models are measured in alternating blocks of ``block`` pushes so that load
    from the rest of the machine falls on all of them alike; ``warmup`` pushes
    per model are run first and not counted.
    """
    from cortexcast.decoder.live.pixel_decoder import PixelDecoder
    from cortexcast.decoder.live.process import resolve_model

    decs = [PixelDecoder(resolve_model(m), threads=threads) for m in models]
    rows = min(frames + warmup, 1000)
    inputs = []
    for dec in decs:
        if data:
            act, beh = _dataset_activity(data, dec.neurons, rows)
        else:
            act = synthetic_activity(dec.neurons, rows, seed=seed)
            beh = None
            if dec.has_behavior:
                rng = np.random.default_rng(seed + 1)
                beh = (dec.behavior_mean[None] + rng.normal(0, 1, (rows, 4))).astype(np.float32)
        inputs.append((act, beh if dec.has_behavior else None))
    times: list[list[int]] = [[] for _ in decs]
    cpu: list[list[int]] = [[] for _ in decs]
    load_before = _loadavg()
    for dec, (act, beh) in zip(decs, inputs):
        for k in range(warmup):
            dec.push(act[k % len(act)], None if beh is None else beh[k % len(beh)])
    done = 0
    while done < frames:
        n = min(block, frames - done)
        for dec, (act, beh), ts, cs in zip(decs, inputs, times, cpu):
            for k in range(done + warmup, done + warmup + n):
                a, b = act[k % len(act)], None if beh is None else beh[k % len(beh)]
                c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                dec.push(a, b)
                ts.append(time.perf_counter_ns() - t0)
                cs.append(time.process_time_ns() - c0)
        done += n
    results = []
    for model, dec, ts, cs in zip(models, decs, times, cpu):
        stats = percentiles_ms(ts)
        stats["mean"] = float(np.mean(ts) / 1e6)
        cpu_stats = percentiles_ms(cs)
        cpu_stats["mean"] = float(np.mean(cs) / 1e6)
        results.append({"model": model, "path": str(dec.model_path), "neurons": dec.neurons,
                        "window": dec.window, "lag": dec.lag, "behavior": dec.has_behavior,
                        "method": dec.card.method, "per_push_ms": stats,
                        "cpu_per_push_ms": cpu_stats,
                        "within_budget": bool(stats["p99"] <= TARGET_DECODER_P99_MS)})
    ref = results[0]["per_push_ms"]
    ratios = {r["model"]: {q: r["per_push_ms"][q] / ref[q] for q in ("p50", "p99", "mean")}
              for r in results}
    return {
        "command": "cortexcast bench --decoder-only " + " ".join(f"--model {m}" for m in models)
                   + f" --frames {frames} --warmup {warmup} --threads {threads}"
                   + (f" --data {data}" if data else ""),
        "host": {"machine": platform.machine(), "cpus": _cpus(),
                 "python": platform.python_version(), "processor": platform.processor()},
        "onnxruntime_threads": threads, "frames": frames, "warmup": warmup,
        "notes": "per_push_ms: wall clock of PixelDecoder.push (what the live path waits); "
                 "cpu_per_push_ms: CPU time of this process during it (all its threads; "
                 "with 1 thread, the cost without time lost to other processes)",
        "load_average": {"before": load_before, "after": _loadavg()},
        "activity": f"dataset {data}" if data else "synthetic ΔF/F transients (seeded)",
        "models": results,
        "ratio_to_first": ratios,
        "budget": {"p99_ms": TARGET_DECODER_P99_MS, "neurons": BUDGET_NEURONS, "threads": 2},
    }


def _stand_in_model(neurons: int, run_dir: Path) -> str:
    """A ridge-shaped random linear model (512 components, window 10) of ``neurons``."""
    from cortexcast.core.config import ConfigError

    try:
        from cortexcast.decoder.training.synthetic import write_linear_model
        path = write_linear_model(run_dir / f"linear_{neurons}.onnx", neurons=neurons,
                                  components=512)
    except ImportError as exc:
        raise ConfigError(f"--neurons without --model builds a stand-in model and needs the "
                          f"'onnx' package ({exc}); pass --model instead") from exc
    return str(path)


def _run_decoder_only(args: argparse.Namespace) -> int:
    from cortexcast.core.config import ConfigError
    from cortexcast.decoder.live.model_card import ModelError, load_card
    from cortexcast.decoder.live.process import resolve_model

    for name in ("frames", "warmup", "threads"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            raise ConfigError(f"--{name} must be >= {0 if name == 'warmup' else 1}")
    run_dir = Path(args.run_dir or f"runs/bench-decoder-{time.strftime('%Y%m%d-%H%M%S')}")
    models = list(args.model or [])
    if args.neurons is not None:
        if args.neurons < 1:
            raise ConfigError("--neurons must be >= 1")
        for m in models:
            n = load_card(resolve_model(m)).neurons
            if n != args.neurons:
                raise ModelError(f"model {m} takes {n} neurons, not --neurons {args.neurons}")
        if not models:
            run_dir.mkdir(parents=True, exist_ok=True)
            models = [_stand_in_model(args.neurons, run_dir)]
    models = models or ["bundled"]
    print(f"bench: decoder only, {len(models)} model(s), {args.frames} pushes each after "
          f"{args.warmup} warm-up, onnxruntime {args.threads} thread(s)", flush=True)
    report = run_decoder_bench(models, frames=args.frames, warmup=args.warmup,
                               threads=args.threads, data=args.data)
    load = report["load_average"]["before"]
    if load and load[0] > 0.5 * _cpus():
        print(f"  note: load average {load[0]:.1f} on {_cpus()} CPUs: other work inflates the "
              "tail (p99/max); measure on a quiet machine for the budget")
    for r in report["models"]:
        s = r["per_push_ms"]
        print(f"  {r['model']}: {r['neurons']} neurons, window {r['window']}: per frame "
              f"p50 {s['p50']:.3f} ms  p99 {s['p99']:.3f} ms  max {s['max']:.3f} ms  "
              f"(CPU p99 {r['cpu_per_push_ms']['p99']:.3f} ms)  "
              f"(x{report['ratio_to_first'][r['model']]['p50']:.2f} p50 of the first)  "
              f"budget p99 <= {TARGET_DECODER_P99_MS} ms: "
              f"{'MET' if r['within_budget'] else 'NOT MET'}")
    out = Path(args.json) if args.json else run_dir / "bench_decoder.json"
    write_json_atomic(out, report)
    print(f"JSON report: {out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from cortexcast.core.config import ConfigError

    if args.decoder_only:
        return _run_decoder_only(args)
    if args.faults:
        return _run_faults(args)
    if args.curve or args.flood:
        return _run_stream_bench(args)
    if args.model and len(args.model) > 1:
        raise ConfigError("several --model paths need --decoder-only (the full stack runs one)")
    model = args.model[0] if args.model else "bundled"
    run_dir = Path(args.run_dir or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"bench: {args.duration:g} s of the full stack on the simulated rig, model {model}; "
          f"run folder {run_dir}/", flush=True)
    report = run_bench(args.duration, model, run_dir, args.transport)
    mem = report["memory"]
    for name, g in mem["per_process"].items():
        if g is not None:
            print(f"  memory {name}: {g['after_warmup_mb']:.0f} MB after {g['warmup_s']:.0f} s "
                  f"-> {g['end_mb']:.0f} MB at the end ({g['growth_pct']:+.1f} %)")
    print(f"memory growth after the warm-up: max {mem['max_growth_pct']} % (target < "
          f"{mem['target_pct']:g} %): {'MET' if mem['met'] else 'NOT MET'}")
    print(f"throughput {report['throughput_fps']:.2f} reconstructions/s; "
          f"target end-to-end p99 <= {TARGET_E2E_P99_MS} ms and zero drops: "
          f"{'MET' if report['targets']['met'] else 'NOT MET'}")
    out = Path(args.json) if args.json else run_dir / "bench.json"
    write_json_atomic(out, report)
    print(f"JSON report: {out}")
    png = latency_cdf_png(report.get("latency_cdf_ms") or {}, out.with_suffix(".png"),
                          title=f"cortexcast bench, {args.duration:g} s: latency per stage")
    print(f"latency CDF per stage: {png}")
    return report["exit_code"]


def _run_faults(args: argparse.Namespace) -> int:
    from cortexcast.app.bench_faults import print_fault_report, run_fault_bench

    run_dir = Path(args.run_dir or f"runs/bench-faults-{time.strftime('%Y%m%d-%H%M%S')}")
    model = args.model[0] if args.model else "bundled"
    print(f"bench: kill -9 each consumer of the recording sim stack in turn; run folder "
          f"{run_dir}/", flush=True)
    report = run_fault_bench(run_dir, model)
    print_fault_report(report)
    out = Path(args.json) if args.json else run_dir / "bench_faults.json"
    write_json_atomic(out, report)
    print(f"JSON report: {out}")
    return report["exit_code"]


def _run_stream_bench(args: argparse.Namespace) -> int:
    """--curve: publish->receive latency with and without CURVE; --flood: the publisher under a
    subscription flood (inline vs send thread). Both in one process pair, one run."""
    run_dir = Path(args.run_dir or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.curve:
        from cortexcast.app.bench_curve import run_curve_bench

        out = Path(args.json) if args.json and not args.flood else run_dir / "bench_curve.json"
        run_curve_bench(args.frames, out)
    if args.flood:
        from cortexcast.app.bench_flood import run_flood_bench

        out = Path(args.json) if args.json and not args.curve else run_dir / "bench_flood.json"
        run_flood_bench(args.subscriptions, min(args.duration, 30.0), out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the full stack's latency, drops, CPU and memory",
                       description="Run sim -> decoder -> headless display for --duration "
                       "seconds, paced at the imaging rate, and report per-stage latency "
                       "p50/p99/max, throughput, drops, CPU and peak memory (text and JSON). "
                       "With --decoder-only: the live per-frame cost of the pixel decoder "
                       "alone for each --model (p50/p99/max, warm-up excluded) and their ratio.")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    p.add_argument("--model", action="extend", nargs="+",
                   help="ONNX model(s) with their cards, or 'bundled' (default); several only "
                        "with --decoder-only")
    p.add_argument("--transport", choices=["tcp", "ipc"], default="tcp",
                   help="tcp://127.0.0.1 (default) or ipc:// sockets in the run folder")
    p.add_argument("--json", help="write the JSON report here (default <run-dir>/bench.json; "
                   "bench_decoder.json with --decoder-only)")
    p.add_argument("--run-dir", help="folder for config, logs and stats")
    p.add_argument("--faults", action="store_true",
                   help="kill -9 the decoder, then the display, of a recording sim stack "
                   "and report restart time, frames lost from the recording and frames the "
                   "decoder missed (JSON: bench_faults.json; --duration is not used)")
    s = p.add_argument_group("stream security")
    s.add_argument("--curve", action="store_true",
                   help="publish->receive latency of 512x512 frames over tcp loopback with and "
                   "without CURVE encryption, --frames each (JSON: bench_curve.json)")
    s.add_argument("--flood", action="store_true",
                   help="the daq's publish wait while another process floods it with "
                   "--subscriptions distinct subscriptions, socket inline vs send thread "
                   "(--duration up to 30 s; JSON: bench_flood.json)")
    s.add_argument("--subscriptions", type=int, default=200_000,
                   help="subscriptions the --flood attacker sends (default 200000)")
    d = p.add_argument_group("decoder only")
    d.add_argument("--decoder-only", action="store_true",
                   help="measure PixelDecoder.push per frame (onnxruntime) instead of the stack")
    d.add_argument("--threads", type=int, default=2,
                   help="onnxruntime intra-op threads (default 2)")
    d.add_argument("--frames", type=int, default=3000,
                   help="measured pushes per model (default 3000)")
    d.add_argument("--warmup", type=int, default=200,
                   help="pushes per model before measuring, not counted (default 200)")
    d.add_argument("--neurons", type=int,
                   help="check every --model takes this many neurons; without --model, measure "
                        "a ridge-shaped random linear stand-in of this size")
    d.add_argument("--data", help="dataset folder whose responses (and behaviour) to push "
                   "(default: synthetic ΔF/F transients)")
    p.set_defaults(func=_run)
