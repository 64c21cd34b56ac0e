"""A stand-in eye tracker: plays a pupil / eye-position trace as a real tracker program would
send it, over UDP JSON or as a Lab Streaming Layer outlet (``[daq.behavior]``, docs/rig.md).

::

    python -m cortexcast.daq.standins.eye_tracker --trace eye.csv --udp 127.0.0.1:5558
    python -m cortexcast.daq.standins.eye_tracker --synthetic 600 --lsl cortexcast-eye

A trace file has columns ``t, pupil, pupil_x, pupil_y`` (seconds, then the tracker's units):
a CSV with that header, or an .npy array of shape (N, 4) (or a structured array with those
field names). ``--synthetic S`` makes S seconds of a plausible trace instead (pupil diameter
and centre in eye-camera pixels, the Sensorium scale: slow dilation, saccades). Samples are
paced by ``t`` (``--speed``); UDP datagrams carry ``t`` (the trace's time, continuing across
``--loop``) unless ``--no-t``; LSL samples are stamped with ``local_clock()`` at push.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from cortexcast.core.errors import CortexcastError

log = logging.getLogger("standin")
COLUMNS = ("t", "pupil", "pupil_x", "pupil_y")


class TraceError(CortexcastError, ValueError):
    """An eye trace file cannot be read (the message names the file and what it needs)."""


@dataclass(frozen=True)
class EyeTrace:
    """``data`` is (N, 4) float64: t (s, increasing), pupil, pupil_x, pupil_y."""

    data: np.ndarray

    def __len__(self) -> int:
        return len(self.data)

    @property
    def duration(self) -> float:
        """Length of one pass (s), one sample period past the last sample."""
        t = self.data[:, 0]
        step = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
        return float(t[-1] - t[0]) + step


def load_trace(path: str | Path) -> EyeTrace:
    """Read a CSV (header ``t,pupil,pupil_x,pupil_y``) or .npy trace."""
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"{p}: eye trace not found")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
            if arr.dtype.names:
                arr = np.stack([arr[c] for c in COLUMNS], axis=1)
        else:
            table = np.genfromtxt(p, delimiter=",", names=True, dtype=float, ndmin=1)
            arr = np.stack([table[c] for c in COLUMNS], axis=1)
    except (ValueError, KeyError, OSError, TypeError) as exc:
        raise TraceError(f"{p}: not an eye trace ({exc}); it needs columns "
                         f"{', '.join(COLUMNS)} (a CSV with that header, or an (N, 4) .npy)"
                         ) from exc
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) == 0:
        raise TraceError(f"{p}: shape {arr.shape}, expected (N, 4): {', '.join(COLUMNS)}")
    if not np.all(np.isfinite(arr[:, 0])) or np.any(np.diff(arr[:, 0]) < 0):
        raise TraceError(f"{p}: column t must be finite and non-decreasing (seconds)")
    return EyeTrace(arr)


def synthetic_trace(seconds: float, rate_hz: float = 30.0, seed: int = 0) -> EyeTrace:
    """A plausible mouse eye trace in eye-camera pixels (Sensorium scale)."""
    rng = np.random.default_rng(seed)
    n = max(int(round(seconds * rate_hz)), 1)
    dt = 1.0 / rate_hz
    a_p, a_e = np.exp(-dt / 4.0), np.exp(-dt / 3.0)
    z, eye = 0.0, np.zeros(2)
    out = np.empty((n, 4))
    for i in range(n):
        z = a_p * z + np.sqrt(1 - a_p * a_p) * rng.normal()
        if rng.random() < dt * 0.5:  # a saccade
            eye = np.clip(eye + rng.normal(0.0, 0.8, 2), -3, 3)
        eye = a_e * eye + 0.3 * np.sqrt(1 - a_e * a_e) * rng.normal(size=2)
        out[i] = (i * dt, max(20.0 + 5.0 * z, 2.0), 320.0 + 8.0 * eye[0], 240.0 + 6.0 * eye[1])
    return EyeTrace(out)


class Sink(Protocol):
    def send(self, t: float, values: Sequence[float]) -> None: ...

    def close(self) -> None: ...


class UdpSink:
    """Datagrams ``{"v": 1, "t": t, "pupil": .., "pupil_x": .., "pupil_y": ..}``."""

    def __init__(self, to: str, *, send_t: bool = True,
                 fields: Sequence[str] = COLUMNS[1:]) -> None:
        host, _, port = to.rpartition(":")
        if not host or not port.isdigit():
            raise TraceError(f"--udp must be host:port, got {to!r}")
        self.to = (host, int(port))
        self.send_t, self.fields = send_t, tuple(fields)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = self.errors = 0

    def send(self, t: float, values: Sequence[float]) -> None:
        msg: dict[str, Any] = {"v": 1}
        if self.send_t:
            msg["t"] = t
        msg.update({f: (float(v) if np.isfinite(v) else None)
                    for f, v in zip(self.fields, values)})
        try:
            self.sock.sendto(json.dumps(msg).encode(), self.to)
            self.sent += 1
        except OSError as exc:  # nobody listening (ICMP), buffer full: a tracker goes on
            self.errors += 1
            if self.errors <= 3:
                log.warning("eye tracker stand-in: datagram to %s:%d not sent: %s", *self.to, exc)

    def close(self) -> None:
        self.sock.close()


class LslSink:
    """An LSL outlet: 3 float32 channels labelled pupil, pupil_x, pupil_y."""

    def __init__(self, name: str, *, stream_type: str = "Gaze", source_id: str = "",
                 rate_hz: float = 30.0) -> None:
        from cortexcast.stream.lsl_outlets import require_pylsl

        self.lsl = require_pylsl()
        info = self.lsl.StreamInfo(name, stream_type, 3, rate_hz, self.lsl.cf_float32,
                                   source_id or f"cortexcast-standin:{name}")
        chans = info.desc().append_child("channels")
        for label in COLUMNS[1:]:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", "pixels")
        self.outlet: Any = self.lsl.StreamOutlet(info)
        self.sent = 0

    def send(self, t: float, values: Sequence[float]) -> None:
        if self.outlet is not None:
            self.outlet.push_sample([float(v) for v in values])
            self.sent += 1

    def close(self) -> None:
        """Destroy the outlet: to an inlet the stream vanishes."""
        self.outlet = None


def play(trace: EyeTrace, sink: Sink, *, speed: float = 1.0, paced: bool = True,
         loop: bool = False, stop: threading.Event | None = None,
         max_samples: int | None = None) -> int:
    """Send the trace's samples at their times (until ``stop`` is set); return how many."""
    stop = stop or threading.Event()
    data, sent, base_t = trace.data, 0, 0.0
    start = time.monotonic()
    t0 = float(data[0, 0])
    while not stop.is_set():
        for row in data:
            t = base_t + float(row[0]) - t0
            if paced:
                left = start + t / speed - time.monotonic()
                if left > 0 and stop.wait(left):  # the pace of the trace; a stop ends it
                    return sent
            if stop.is_set() or (max_samples is not None and sent >= max_samples):
                return sent
            sink.send(t, row[1:])
            sent += 1
        if not loop:
            break
        base_t += trace.duration
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cortexcast.daq.standins.eye_tracker",
                                description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="CSV/NPY with columns t, pupil, pupil_x, pupil_y")
    src.add_argument("--synthetic", type=float, metavar="S", help="S seconds of a made-up trace")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--udp", metavar="HOST:PORT", help="send UDP JSON datagrams here")
    to.add_argument("--lsl", metavar="NAME", help="publish an LSL outlet of this name")
    p.add_argument("--lsl-type", default="Gaze", help="LSL stream type (default Gaze)")
    p.add_argument("--source-id", default="", help="LSL source_id (default from the name)")
    p.add_argument("--rate", type=float, default=30.0, help="synthetic rate / LSL nominal rate")
    p.add_argument("--seed", type=int, default=0, help="synthetic trace's seed")
    p.add_argument("--speed", type=float, default=1.0, help="pace as a multiple of real time")
    p.add_argument("--loop", action="store_true", help="start again at the end")
    p.add_argument("--no-t", action="store_true", help="UDP: leave the sender time out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s eye %(levelname)s %(message)s")
    try:
        trace = (load_trace(args.trace) if args.trace
                 else synthetic_trace(args.synthetic, args.rate, args.seed))
        sink: Sink = (UdpSink(args.udp, send_t=not args.no_t) if args.udp else
                      LslSink(args.lsl, stream_type=args.lsl_type, source_id=args.source_id,
                              rate_hz=args.rate))
    except CortexcastError as exc:
        print(f"eye tracker stand-in: error: {exc}", file=sys.stderr)
        return 2
    log.info("playing %d samples (%.1f s%s) to %s", len(trace), trace.duration,
             ", looping" if args.loop else "", args.udp or f"LSL stream {args.lsl!r}")
    try:
        n = play(trace, sink, speed=args.speed, loop=args.loop)
    except KeyboardInterrupt:
        n = -1
    finally:
        sink.close()
    log.info("done (%s samples sent)", n if n >= 0 else "interrupted;")
    return 0


if __name__ == "__main__":
    sys.exit(main())
