"""`cortexcast bench --flood`: what a peer flooding the daq with subscriptions costs it.

Publishes 512x512 uint16 frames at 30 Hz, as the daq does, while another process
connects an XSUB socket and sends ``--subscriptions`` distinct subscription prefixes
(issue 10, item 4: 200,000 of them once took the daq's publish p99 to 785 ms). Runs it
twice in one go: the socket used from the publishing thread ("inline", how every
publisher but the daq's and the decoder's works) and from a send thread ("thread", the
daq's). Prints the publish-call latency (what acquisition waits) p50/p99/max, the
frames a legitimate subscriber got, refused subscriptions and memory; writes JSON.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zmq

from cortexcast.core.runtime import write_json_atomic
from cortexcast.stream.pubsub import Publisher, Subscriber

TOPICS = ("frames", "sync", "stimulus")


def flood(address: str, count: int) -> None:
    """Send ``count`` distinct 60-byte subscriptions to ``address`` (the attacker's side)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XSUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(address)
    rng = np.random.default_rng(0)
    for _ in range(count):
        sock.send(b"\x01" + rng.bytes(60))
    time.sleep(2.0)  # stay connected a moment: ZeroMQ forgets a peer's subscriptions on leaving
    sock.close(0)
    ctx.term()


def run_one(mode: str, subscriptions: int, seconds: float) -> dict[str, Any]:
    ctx = zmq.Context()
    pub = Publisher("tcp://127.0.0.1:0", "daq", context=ctx, topics=TOPICS, hwm=200,
                    background=(mode == "thread"))
    sub = Subscriber(pub.address, ["frames"], context=ctx, hwm=1000)
    received = [0]
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            if sub.recv(timeout_s=0.1) is not None:
                received[0] += 1

    pub.wait_for_subscribers({"frames": 1}, timeout_s=10)
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    frame = np.zeros((512, 512), np.uint16)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    waits_ms: list[float] = []
    flooder: subprocess.Popen | None = None
    start = time.monotonic()
    period = 1 / 30
    i = 0
    while time.monotonic() - start < seconds:
        if flooder is None and i == 30:  # one second of quiet first
            flooder = subprocess.Popen([sys.executable, "-m", "cortexcast.app.bench_flood",
                                        "--flooder", pub.address, str(subscriptions)])
        t = time.perf_counter()
        pub.publish("frames", "frame", [frame], t_acq=time.time())
        pub.heartbeat_if_due()
        waits_ms.append((time.perf_counter() - t) * 1000)
        i += 1
        time.sleep(max(0.0, start + i * period - time.monotonic()))
    if flooder is not None:
        flooder.wait()
    sent = i
    pub.close(linger_ms=500)
    time.sleep(0.5)  # let the last frames reach the consumer thread
    done.set()
    consumer.join()
    sub.close()
    waits = np.asarray(waits_ms)
    out = {"mode": mode, "frames_published": sent, "frames_received": received[0],
           "publish_ms": {"p50": float(np.percentile(waits, 50)),
                          "p99": float(np.percentile(waits, 99)), "max": float(waits.max())},
           "refused_subscriptions": pub.refused_subscriptions,
           "rss_growth_mb": (proc.memory_info().rss - rss0) / 2**20}
    ctx.term()
    return out


def run_flood_bench(subscriptions: int = 200_000, seconds: float = 10.0,
                    out: Path | None = None) -> dict[str, Any]:
    results = {mode: run_one(mode, subscriptions, seconds) for mode in ("inline", "thread")}
    print(f"{subscriptions} distinct subscriptions flooded during {seconds:.0f} s of 30 Hz "
          "512x512 frames; publish = what the acquisition loop waits")
    for mode, r in results.items():
        p = r["publish_ms"]
        print(f"  {mode:6s}: publish p50 {p['p50']:.3f} ms  p99 {p['p99']:.2f} ms  max "
              f"{p['max']:.1f} ms | frames {r['frames_received']}/{r['frames_published']} | "
              f"refused {r['refused_subscriptions']} | memory +{r['rss_growth_mb']:.0f} MB")
    if out is not None:
        write_json_atomic(out, {"subscriptions": subscriptions, "seconds": seconds,
                                "results": results})
        print(f"wrote {out}")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cortexcast bench --flood", description=__doc__)
    ap.add_argument("--flooder", nargs=2, metavar=("ADDRESS", "COUNT"), help=argparse.SUPPRESS)
    ap.add_argument("--subscriptions", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.flooder:
        flood(args.flooder[0], int(args.flooder[1]))
        return 0
    run_flood_bench(args.subscriptions, args.seconds, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
