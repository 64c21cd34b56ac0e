"""Benchmark of the per-frame work a real rig's frames add: motion correction,
extraction and online deconvolution, on simulated 512x512 frames with ~8,000 neurons.

    python -m cortexcast.app.bench_frames [--frames 900] [--out runs/bench_frames/bench_frames.json]

Prints p50/p99/max (ms) per stage and in total, against the 33 ms frame budget at
30 Hz, and writes them as JSON. Runs on one thread (OMP/BLAS threads are set to 1
unless set already), as the decoder process does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from cortexcast.core.runtime import percentiles_ms, write_json_atomic  # noqa: E402


def _sim_frames(n_frames: int, neurons: int, size: int, motion_px: float):
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.settings import SimSettings
    from cortexcast.core.events import ImagingFrame

    rig = SimulatedRig(SimSettings(n_neurons=neurons, frame_height=size, frame_width=size,
                                   motion_px=motion_px, paced=False,
                                   duration_s=n_frames / 30.0))
    frames, shifts = [], []
    with rig:
        for ev in rig.events():
            if isinstance(ev, ImagingFrame):
                frames.append(ev.pixels)
                shifts.append(ev.meta["shift"])
    # the sim crops its canvas at +shift, so the content moves by -shift
    return frames, -np.asarray(shifts, float), rig.rois()


def run(frames_n: int, neurons: int, size: int, motion_px: float, unique: int,
        reference_frames: int) -> dict:
    from cortexcast.decoder.live.deconvolution import OnlineDeconvolver
    from cortexcast.decoder.live.extraction import ActivityExtractor
    from cortexcast.decoder.live.motion import MotionCorrector, MotionSettings

    t0 = time.perf_counter()
    frames, true_shifts, rois = _sim_frames(unique, neurons, size, motion_px)
    sim_s = time.perf_counter() - t0
    mc = MotionCorrector(rois.frame_shape, MotionSettings(enabled=True,
                                                          reference_frames=reference_frames))
    ex = ActivityExtractor(rois, 30.0)
    dec = OnlineDeconvolver(rois.n_neurons, 30.0)
    warmup_ns = []
    for i in range(2 * reference_frames):  # the online reference: mean, then corrected mean
        t = time.perf_counter_ns()
        ex(mc(frames[i % len(frames)]))
        warmup_ns.append(time.perf_counter_ns() - t)
    assert mc.final
    stages: dict[str, list[int]] = {"motion": [], "extract": [], "deconvolve": [], "total": []}
    shifts = []
    for i in range(frames_n):
        f = frames[i % len(frames)]
        t0 = time.perf_counter_ns()
        g = mc(f)
        t1 = time.perf_counter_ns()
        a = ex(g)
        t2 = time.perf_counter_ns()
        dec(a)
        t3 = time.perf_counter_ns()
        stages["motion"].append(t1 - t0)
        stages["extract"].append(t2 - t1)
        stages["deconvolve"].append(t3 - t2)
        stages["total"].append(t3 - t0)
        shifts.append(mc.shift)
    s = np.abs(np.asarray(shifts))
    err = np.asarray(shifts) - true_shifts[np.arange(frames_n) % len(frames)]
    err = np.abs(err - np.median(err, axis=0))  # the online reference's constant offset aside
    return {
        "benchmark": "cortexcast.app.bench_frames",
        "frame_shape": list(rois.frame_shape), "neurons": rois.n_neurons,
        "frames_timed": frames_n, "unique_frames": len(frames), "motion_px": motion_px,
        "budget_ms": 1000 / 30.0,
        "ms": {k: percentiles_ms(v) for k, v in stages.items()},
        "warmup_ms": percentiles_ms(warmup_ns), "reference_frames": reference_frames,
        "max_abs_shift_px": float(s.max()) if s.size else 0.0,
        "shift_error_px": {"p50": float(np.median(err)), "max": float(err.max())},
        "sim_generation_s": sim_s, "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cortexcast.app.bench_frames", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=900, help="frames timed (default 900 = 30 s)")
    p.add_argument("--unique", type=int, default=150, help="distinct sim frames, cycled")
    p.add_argument("--neurons", type=int, default=7800)
    p.add_argument("--size", type=int, default=512, help="frame height and width (px)")
    p.add_argument("--motion-px", type=float, default=3.0)
    p.add_argument("--reference-frames", type=int, default=60)
    p.add_argument("--out", default="runs/bench_frames/bench_frames.json")
    a = p.parse_args(argv)
    if a.frames < 1 or a.unique < 1 or a.reference_frames < 1 or not 32 <= a.size <= 4096:
        print("python -m cortexcast.app.bench_frames: error: --frames, --unique and --reference-frames "
              "must be >= 1 and --size in 32..4096", file=sys.stderr)
        return 2
    res = run(a.frames, a.neurons, a.size, a.motion_px, a.unique, a.reference_frames)
    print(f"{res['frame_shape'][0]}x{res['frame_shape'][1]} frames, {res['neurons']} neurons, "
          f"{res['frames_timed']} frames timed (budget {res['budget_ms']:.1f} ms/frame)")
    for k, v in res["ms"].items():
        print(f"  {k:<11} p50 {v['p50']:6.2f} ms  p99 {v['p99']:6.2f} ms  max {v['max']:6.2f} ms")
    e = res["shift_error_px"]
    print(f"  shifts up to {res['max_abs_shift_px']:.1f} px found within {e['p50']:.2f} px "
          f"(median), {e['max']:.2f} px (max) of the truth")
    w = res["warmup_ms"]
    print(f"  while the online reference is built ({2 * res['reference_frames']} frames, "
          f"motion + extract): p50 {w['p50']:.2f} ms, max {w['max']:.2f} ms")
    write_json_atomic(a.out, res)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
