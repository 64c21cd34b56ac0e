"""Where the stand-ins get their frames: a cortexcast recording or the simulated rig.

Every stand-in plays imaging frames as ScanImage would deliver them: ScanImage
frame number = our index + 1, timestamp = the frame's acquisition time, pixels
int16 (uint16 values above 32767 are clipped and counted, see
:func:`cortexcast.daq.scanimage.frames.to_int16`). A recording is paced at its recorded
rhythm (``--speed``), the simulated rig at its imaging rate; ``--no-pace`` plays
as fast as the consumer allows.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from cortexcast.daq.scanimage.frames import to_int16
from cortexcast.core.events import ImagingFrame

log = logging.getLogger("standin")


@dataclass(frozen=True)
class SIFrame:
    """One frame as ScanImage numbers it: ``channels`` is (C, H, W) int16."""

    number: int
    t: float
    channels: np.ndarray
    last: bool


def add_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("frames to play (one of)")
    g.add_argument("--recording", help="a `cortexcast record` file with a frames topic")
    g.add_argument("--sim-config", help="a rig.toml whose [daq.sim] table sets up the "
                   "simulated rig (default: the simulated rig's defaults, 512x512)")
    p.add_argument("--frames", type=int, help="stop after this many frames")
    p.add_argument("--speed", type=float, default=1.0, help="pace as a multiple of real time")
    p.add_argument("--no-pace", action="store_true", help="play as fast as possible")
    p.add_argument("--channels", type=int, default=1,
                   help="channels per frame; channel 2.. are copies scaled by 1/2, 1/3, ...")


def _from_recording(path: str, paced: bool, speed: float) -> tuple[Iterator[ImagingFrame], int]:
    from cortexcast.daq.replay_source import ReplaySource
    from cortexcast.stream.recording import RecordingReader

    with RecordingReader(path) as rec:
        total = rec.counts().get("frames", 0)
    src = ReplaySource(path, paced=paced, speed=speed, topics=("frames",))

    def gen() -> Iterator[ImagingFrame]:
        with src:
            for ev in src.events():
                if isinstance(ev, ImagingFrame):
                    yield ev

    return gen(), total


def _from_sim(config: str | None, paced: bool) -> Iterator[ImagingFrame]:
    from cortexcast.core.config import load_settings
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.settings import SimSettings

    sim = replace(load_settings(SimSettings, config, "daq.sim"), paced=paced)
    with SimulatedRig(sim) as rig:
        for ev in rig.events():
            if isinstance(ev, ImagingFrame):
                yield ev


def scanimage_frames(args: argparse.Namespace) -> Iterator[SIFrame]:
    """The frames the arguments name, numbered and typed as ScanImage delivers them."""
    paced = not args.no_pace
    if args.recording:
        frames, total = _from_recording(args.recording, paced, args.speed)
    else:
        frames, total = _from_sim(args.sim_config, paced), None
    if args.frames is not None:
        total = args.frames if total is None else min(total, args.frames)
    clipped = 0
    for k, ev in enumerate(frames):
        if total is not None and k >= total:
            break
        pixels, over = to_int16(ev.pixels)
        if over and not clipped:
            log.warning("frame %d: %d pixels above 32767 clipped to fit ScanImage's int16 "
                        "(further clipping is counted)", ev.index, over)
        clipped += over
        chans = [pixels] + [(pixels // (c + 1)).astype(np.int16) for c in range(1, args.channels)]
        yield SIFrame(ev.index + 1, ev.t, np.stack(chans), total is not None and k == total - 1)
    if clipped:
        log.warning("%d pixels clipped to 32767 in all", clipped)


def setup(name: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s {name} %(levelname)s %(message)s", datefmt="%H:%M:%S")
