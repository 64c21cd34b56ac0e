"""`cortexcast bench`: the full stack (sim -> decoder -> display sink), measured.

Reports per-stage latency p50/p99/max (from the monotonic stamps every
stage appends; all processes share the host's monotonic clock), throughput,
drops, CPU and peak memory per process, as text and JSON. It measures; it
does not assert — targets are printed next to the figures.
"""

from __future__ import annotations

import argparse
import platform
import socket
import time
from pathlib import Path
from typing import Any

from cortexcast.launcher import run_stack, write_sim_config
from cortexcast.runtime import write_json_atomic

TARGET_E2E_P99_MS = 10.0


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together while choosing, so no repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


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
                    "met": bool(e2e.get("p99", float("inf")) <= TARGET_E2E_P99_MS and drops == 0
                                and code == 0)},
        **{k: v for k, v in summary.items() if k != "processes"},
    }
    return report


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def _run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"bench: {args.duration:g} s of the full stack on the simulated rig, model {args.model}; "
          f"run folder {run_dir}/", flush=True)
    report = run_bench(args.duration, args.model, run_dir, args.transport)
    print(f"throughput {report['throughput_fps']:.2f} reconstructions/s; "
          f"target end-to-end p99 <= {TARGET_E2E_P99_MS} ms and zero drops: "
          f"{'MET' if report['targets']['met'] else 'NOT MET'}")
    out = Path(args.json) if args.json else run_dir / "bench.json"
    write_json_atomic(out, report)
    print(f"JSON report: {out}")
    return report["exit_code"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the full stack's latency, drops, CPU and memory",
                       description="Run sim -> decoder -> headless display for --duration "
                       "seconds, paced at the imaging rate, and report per-stage latency "
                       "p50/p99/max, throughput, drops, CPU and peak memory (text and JSON).")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    p.add_argument("--model", default="bundled", help="ONNX model trained on the simulator")
    p.add_argument("--transport", choices=["tcp", "ipc"], default="tcp",
                   help="tcp://127.0.0.1 (default) or ipc:// sockets in the run folder")
    p.add_argument("--json", help="write the JSON report here (default <run-dir>/bench.json)")
    p.add_argument("--run-dir", help="folder for config, logs and stats")
    p.set_defaults(func=_run)
