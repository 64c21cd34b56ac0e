"""How long a frame takes from ScanImage's side to the daq: ``python -m cortexcast.daq.scanimage.bench``.

For each source, a thread plays ScanImage's part (publishes the stream / bridge message,
or writes the TIFF page with tifffile, the stand-ins' code) at ``--rate``; the source
yields the frame in this process. Latency = yield time - the moment the message was
sent or the page's write returned (one monotonic clock). Prints p50/p99/max in ms and
optionally writes them as JSON. Loopback and a local disk: a lower bound for a rig.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from cortexcast.core.runtime import percentiles_ms
from cortexcast.daq.scanimage.messages import pack_bridge_message, pack_scanimage_message
from cortexcast.daq.scanimage.tiff_source import TiffFollower, TiffSettings
from cortexcast.daq.scanimage.zmq_source import (BridgeSettings, ScanImageStreamSettings, bridge_source,
                                      scanimage_stream_source)


def _play(n: int, rate: float, shape: tuple[int, int], send, sent_ns: list[int],
          before) -> None:
    before()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 4000, shape).astype(np.int16) for _ in range(min(n, 16))]
    t0 = time.monotonic()
    for k in range(n):
        time.sleep(max(0.0, t0 + k / rate - time.monotonic()))
        send(k + 1, k / rate, frames[k % len(frames)])
        sent_ns[k] = time.monotonic_ns()


def _measure(source, n: int, rate: float, shape: tuple[int, int], send,
             before=lambda: None) -> dict:
    sent = [0] * n
    lat: list[int] = []
    with source:
        player = threading.Thread(target=_play, args=(n, rate, shape, send, sent, before),
                                  daemon=True)
        player.start()
        for frame in source.events():
            now = time.monotonic_ns()
            while not sent[frame.index]:  # the writer's clock read comes right after its write
                time.sleep(0)
            lat.append(max(0, now - sent[frame.index]))
            if len(lat) == n:
                break
        player.join()
    return percentiles_ms(lat)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cortexcast.daq.scanimage.bench",
                                description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--size", type=int, default=512, help="frame side (px)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    shape = (args.size, args.size)
    results = {}
    import zmq

    from cortexcast.daq.standins.scanimage_tiff import ScanImageTiffWriter
    from cortexcast.daq.standins.zmq_publisher import StandinPublisher

    with tempfile.TemporaryDirectory() as tmp:
        for name, settings, make, pack in (
            ("scanimage", ScanImageStreamSettings, scanimage_stream_source,
             lambda n, t, px: pack_scanimage_message(n, t, px)),
            ("scanimage-bridge", BridgeSettings, bridge_source,
             lambda n, t, px: pack_bridge_message(n, t, px)),
        ):
            pub = StandinPublisher(f"ipc://{tmp}/{name}.sock")
            try:
                src = make(settings(endpoint=pub.endpoint, timeout_s=30.0))
                results[name] = _measure(
                    src, args.frames, args.rate, shape, lambda n, t, px: pub.send(pack(n, t, px)),
                    before=lambda: pub.wait_for_subscribers(1, 10.0))
            except zmq.ZMQError as exc:
                results[name] = {"error": str(exc)}
            finally:
                pub.close()
        folder = Path(tmp) / "si"
        writer = ScanImageTiffWriter(folder, frames_per_file=100)
        src = TiffFollower(TiffSettings(folder=str(folder), start="all", timeout_s=30.0))
        results["tiff"] = _measure(src, args.frames, args.rate, shape,
                                   lambda n, t, px: writer.write(n, t, px[None]))
        writer.close()
    print(f"delivery latency, {args.frames} frames of {shape[0]}x{shape[1]} at {args.rate} Hz")
    print(f"{'source':<18}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, r in results.items():
        print(f"{name:<18}{r.get('p50', float('nan')):9.2f}{r.get('p99', float('nan')):9.2f}"
              f"{r.get('max', float('nan')):9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"frames": args.frames, "rate_hz": args.rate,
                                               "shape": list(shape), "results": results},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
