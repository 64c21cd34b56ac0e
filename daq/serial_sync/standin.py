"""A stand-in sync box on a pseudo-terminal: speaks the default protocol like the real one.

    python -m cortexcast.daq.serial_sync.standin --link /tmp/cortexcast-syncbox [--frame-rate 30]
        [--stim-rate 30] [--monitor-delay-s 0.02] [--speed-cm-s 12] [--frames N]
        [--garbage-every N] [--partial-every N] [--unplug-at-s S --unplug-for-s D]

It opens a pty, makes ``--link`` point at its slave side (like a udev /dev/serial/by-id link)
and prints ``READY <link>`` once the port can be opened. Set ``[daq.serial] port`` to the link.
An unplug closes the pty and removes the link; the re-plug makes a new pty behind the same
link, as re-plugging a USB device does. Lines are written without blocking: with nobody
reading, a full pty buffer drops them, as a USB serial device's buffer would.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import pty
import signal
import sys
import time
import tty
from pathlib import Path


class PtyDevice:
    """A serial device on a pty, reachable at the stable path ``link``."""

    def __init__(self, link: str | Path) -> None:
        self.link = Path(link)
        self.master: int | None = None
        self._slave: int | None = None
        self.dropped = 0

    def plug(self) -> str:
        """Create the pty and point the link at it; returns the slave device path."""
        master, slave = pty.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link)
        return os.ttyname(slave)

    def unplug(self) -> None:
        """Remove the link and close the pty: a reader's next read fails, as on a real unplug."""
        self.link.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def write(self, data: bytes) -> bool:
        """Write without blocking; False (and counted) when not plugged or the buffer is full."""
        if self.master is None:
            self.dropped += 1
            return False
        try:
            os.write(self.master, data)
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EIO):
                self.dropped += 1
                return False
            raise

    def __enter__(self) -> PtyDevice:
        self.plug()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unplug()


def schedule(frame_rate: float, stim_rate: float, delay_s: float, encoder_hz: float,
             start: float, end: float) -> list[tuple[float, str, int]]:
    """(time s, kind, count) of every I / V / P event with start <= time < end, in time order.

    Counts are global (event k of a kind is at ``delay + k / rate``), so consecutive windows
    continue each other's counts without gaps or repeats.
    """
    out = []
    for kind, rate, delay in (("I", frame_rate, 0.0), ("V", stim_rate, delay_s),
                              ("P", encoder_hz, 0.0)):
        k = max(math.ceil((start - delay) * rate - 1e-9), 0)
        while (t := delay + k / rate) < end:
            out.append((t, kind, k))
            k += 1
    return sorted(out)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cortexcast.daq.serial_sync.standin",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--link", required=True, help="path of the port link to create")
    p.add_argument("--frame-rate", type=float, default=30.0, help="imaging pulses per s")
    p.add_argument("--stim-rate", type=float, default=30.0, help="screen flips per s")
    p.add_argument("--monitor-delay-s", type=float, default=0.0,
                   help="first flip this long after the first pulse")
    p.add_argument("--encoder-hz", type=float, default=100.0, help="encoder lines per s")
    p.add_argument("--speed-cm-s", type=float, default=12.0, help="mean running speed")
    p.add_argument("--ticks-per-rev", type=float, default=1024.0)
    p.add_argument("--wheel-diameter-cm", type=float, default=15.0)
    p.add_argument("--frames", type=int, default=0, help="stop after N imaging pulses (0: run)")
    p.add_argument("--garbage-every", type=int, default=0, help="a garbage line every N lines")
    p.add_argument("--partial-every", type=int, default=0,
                   help="cut every Nth line short (the next line starts right after it)")
    p.add_argument("--unplug-at-s", type=float, default=0.0, help="unplug at this time (0: never)")
    p.add_argument("--unplug-for-s", type=float, default=1.0)
    p.add_argument("--micros-start", type=int, default=0, help="start value of the µs clock")
    return p.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    seconds = a.frames / a.frame_rate if a.frames else 24 * 3600.0
    chunk = 60.0  # build the schedule a minute at a time
    cm_per_tick = math.pi * a.wheel_diameter_cm / a.ticks_per_rev
    dev = PtyDevice(a.link)
    dev.plug()
    print(f"READY {a.link}", flush=True)
    t0 = time.monotonic()
    n_lines, unplugged, start = 0, False, 0.0
    try:
        while start < seconds:
            end = min(start + chunk, seconds)
            for t, kind, count in schedule(a.frame_rate, a.stim_rate, a.monitor_delay_s,
                                           a.encoder_hz, start, end):
                left = t0 + t - time.monotonic()
                if left > 0:
                    time.sleep(left)
                if a.unplug_at_s and not unplugged and t >= a.unplug_at_s:
                    dev.unplug()
                    unplugged = True
                    print("UNPLUGGED", flush=True)
                if unplugged and not dev.plugged and t >= a.unplug_at_s + a.unplug_for_s:
                    dev.plug()
                    print("REPLUGGED", flush=True)
                if kind == "P":  # speed wobbling around the mean
                    cm = a.speed_cm_s * (t + 0.2 * math.sin(t)) if a.speed_cm_s else 0.0
                    value = int(cm / cm_per_tick)
                else:
                    value = count
                line = f"@{kind}_{(a.micros_start + int(t * 1e6)) % (1 << 32)}_{value}\n"
                n_lines += 1
                if a.partial_every and n_lines % a.partial_every == 0:
                    line = line[: len(line) // 2]
                dev.write(line.encode())
                if a.garbage_every and n_lines % a.garbage_every == 0:
                    dev.write(b"boot: sync box v1.2 ready\xff\n")
            start = end
        print("DONE", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if dev.plugged:
            dev.unplug()
    return 0


if __name__ == "__main__":
    sys.exit(main())
