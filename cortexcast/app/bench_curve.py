"""What CURVE costs: publish -> receive latency of 512x512 uint16 frames, plain vs CURVE.

Both run in one process on tcp://127.0.0.1 (same machine, same run), in alternating blocks so
drift in the machine's load hits both alike. One frame is in flight at a time: the number is
the latency a frame sees (encryption + decryption + the copies they need), not throughput.

    python -m cortexcast.app.bench_curve --frames 1000 --out curve.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from cortexcast.app.keys_command import make_keys
from cortexcast.core.runtime import write_json_atomic
from cortexcast.stream.pubsub import Publisher, Subscriber
from cortexcast.stream.security import SecuritySettings

SHAPE = (512, 512)
WARMUP = 20
BLOCKS = 4


def _latencies(frames: int, security: SecuritySettings | None) -> list[float]:
    """ms from just before ``publish`` to the subscriber holding the decoded frame."""
    ctx = zmq.Context()
    frame = np.random.default_rng(0).integers(0, 4096, SHAPE, dtype=np.uint16)
    out: list[float] = []
    try:
        with Publisher("tcp://127.0.0.1:0", "bench", context=ctx, security=security,
                       hwm=1000) as pub, \
                Subscriber(pub.address, ["frames"], context=ctx, security=security,
                           hwm=1000) as sub:
            if not pub.wait_for_subscribers({"frames": 1}, timeout_s=10):
                raise RuntimeError("the subscriber did not connect in 10 s")
            for i in range(frames + WARMUP):
                t0 = time.perf_counter_ns()
                pub.publish("frames", "frame", [frame], t_acq=0.0)
                msg = sub.recv(5.0)
                t1 = time.perf_counter_ns()
                if msg is None:
                    raise RuntimeError(f"frame {i} did not arrive within 5 s")
                if i >= WARMUP:
                    out.append((t1 - t0) / 1e6)
    finally:
        ctx.destroy(linger=0)
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
            "mean_ms": float(a.mean())}


def run_curve_bench(frames: int, out: Path | None) -> dict[str, Any]:
    """Latency p50/p99/max (ms) with and without CURVE; printed, and written as JSON to ``out``."""
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq has no CURVE support")
    with tempfile.TemporaryDirectory(prefix="cortexcast-curve-") as tmp:
        keys = make_keys(Path(tmp))
        security = SecuritySettings(**{k: str(v) for k, v in keys.items()})
        per_block = max(1, frames // BLOCKS)
        plain: list[float] = []
        curve: list[float] = []
        for _ in range(BLOCKS):  # alternate, so both see the same machine
            plain += _latencies(per_block, None)
            curve += _latencies(per_block, security)
    result = {"frame": f"{SHAPE[0]}x{SHAPE[1]} uint16 ({np.prod(SHAPE) * 2 / 1e6:.2f} MB)",
              "transport": "tcp://127.0.0.1, one frame in flight",
              "plain": _summary(plain), "curve": _summary(curve),
              "zmq": zmq.zmq_version(), "pyzmq": zmq.__version__}
    result["curve_minus_plain_p50_ms"] = result["curve"]["p50_ms"] - result["plain"]["p50_ms"]
    print(f"publish -> receive, {result['frame']}, {result['transport']}:")
    for name in ("plain", "curve"):
        s = result[name]
        print(f"  {name:5s}  n={s['n']}  p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
              f"max {s['max_ms']:.3f} ms")
    if out is not None:
        write_json_atomic(out, result)
        print(f"wrote {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cortexcast.app.bench_curve",
                                description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000, help="frames per mode (default 1000)")
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    run_curve_bench(args.frames, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
