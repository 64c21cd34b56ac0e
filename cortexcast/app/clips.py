"""`cortexcast clips --out DIR`: a calibration stimulus set for a rig day.

Training and ``--validation-clips`` validation clips are shown once each, ``--test-clips``
test clips ``--repeats`` times each (their repeats are what the test tier of the exported
dataset is built from; the validation clips its ``oracle`` tier, on which ``train`` makes its
choices). Each kind is made only from its own image pool of the generator (``train``,
``validation``, ``test``), so neither validation nor test clips show an image any training
clip shows: choices are judged on new images, as the decoder is. The session is
``--repeats`` blocks; each block shows every test clip once and an equal share of the
training and validation clips, in a seeded shuffle, so the repeats are spread over the whole
session (slow drifts in the animal's state then hit every repeat alike) and a clip never
follows itself.

Folder layout and the reader: :mod:`cortexcast.daq.playlist`. Videos for the stimulus
program: :mod:`cortexcast.app.clip_video`. Pixel statistics follow Sensorium mouse A's videos
(``load_mouse("A")``'s ``video_mean``/``video_std``), as ``cortexcast simulate`` does by
default; each clip's seed in manifest.json regenerates it exactly with
``make_clips(pool, 1, frames, seed, stim_rate_hz, video_mean=..., video_std=...)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from cortexcast.core.errors import CortexcastError

MOUSE = "A"
"""Sensorium mouse whose video mean/std the clips match."""
TRAIN_TAG, TEST_TAG, ORDER_TAG, VALIDATION_TAG = 201, 202, 203, 204
"""Seed-sequence tags: clip k of a tier has seed [seed, tag, k]."""


class ClipsError(CortexcastError, ValueError):
    """Bad `clips` options or output folder (the message names the fix)."""


@dataclasses.dataclass(frozen=True)
class ClipsPlan:
    """Settings of one `cortexcast clips` run."""

    train_clips: int = 100
    test_clips: int = 10
    validation_clips: int = 10
    """Shown once each, from images of their own: the exported dataset's ``oracle`` tier."""
    repeats: int = 3
    clip_seconds: float = 10.0
    seed: int = 0
    stim_rate_hz: float = 30.0
    monitor: tuple[int, int] = (1920, 1080)
    movies: bool = True
    quality: int = 95
    gray: bool = True
    """Single-component JPEG frames (the clips are grayscale); False: YCbCr 4:2:0."""
    jobs: int = 1

    def __post_init__(self) -> None:
        counts = (self.train_clips, self.test_clips, self.validation_clips)
        if min(counts) < 0 or sum(counts) < 1:
            raise ClipsError("--train-clips, --test-clips and --validation-clips must be >= 0, "
                             "together >= 1")
        if self.repeats < 1:
            raise ClipsError("--repeats must be >= 1")
        if not self.stim_rate_hz > 0:
            raise ClipsError("--stim-rate must be > 0 (Hz)")
        if self.frames < 1:
            raise ClipsError(f"--clip-seconds {self.clip_seconds:g} at {self.stim_rate_hz:g} Hz "
                             "is less than one frame; use a longer clip")
        if not 1 <= self.quality <= 100:
            raise ClipsError("--quality must be 1..100")
        if self.jobs < 1:
            raise ClipsError("--jobs must be >= 1")

    @property
    def frames(self) -> int:
        return int(round(self.clip_seconds * self.stim_rate_hz))


def clip_names(tier: str, n: int) -> list[str]:
    width = max(4, len(str(max(n - 1, 0))))
    return [f"{tier}_{k:0{width}d}" for k in range(n)]


def presentation_order(train: list[str], test: list[str], repeats: int,
                       rng: np.random.Generator, validation: list[str] | None = None
                       ) -> list[tuple[str, str, int]]:
    """(clip, tier, repeat) per presentation: ``repeats`` blocks, each with every test clip
    once and its share of the (shuffled) training and validation clips, shuffled within the
    block. (Without validation clips, the order of a clip set made before they existed.)"""
    once = [(c, "train") for c in train] + [(c, "validation") for c in validation or []]
    shuffled = [once[i] for i in rng.permutation(len(once))]
    chunks = np.array_split(np.arange(len(shuffled)), repeats)
    order: list[tuple[str, str, int]] = []
    for b, chunk in enumerate(chunks):
        block = [(*shuffled[i], 0) for i in chunk] + [(t, "test", b) for t in test]
        block = [block[i] for i in rng.permutation(len(block))]
        if order and len(block) > 1 and block[0][0] == order[-1][0]:
            j = int(rng.integers(1, len(block)))
            block[0], block[j] = block[j], block[0]
        order += block
    return order


def make_clip_set(plan: ClipsPlan) -> tuple[dict[str, np.ndarray], list, dict]:
    """(clips {name: array}, playlist entries, manifest) for ``plan``."""
    from cortexcast.daq.playlist import PlaylistEntry, movie_relpath
    from cortexcast.daq.sim.meta import load_mouse
    from cortexcast.daq.sim.stimulus import make_clips

    meta = load_mouse(MOUSE)
    clips: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    names = {"train": clip_names("train", plan.train_clips),
             "test": clip_names("test", plan.test_clips),
             "validation": clip_names("validation", plan.validation_clips)}
    for tier, tag in (("train", TRAIN_TAG), ("test", TEST_TAG),
                      ("validation", VALIDATION_TAG)):
        for k, name in enumerate(names[tier]):
            seed = [plan.seed, tag, k]
            arrays, images = make_clips(tier, 1, plan.frames, seed, plan.stim_rate_hz,
                                        video_mean=meta.video_mean, video_std=meta.video_std)
            clips[name] = arrays[0]
            info[name] = {"tier": tier, "seed": seed, "images": list(images[0]),
                          "frames": plan.frames}
    rng = np.random.default_rng([plan.seed, ORDER_TAG])
    order = presentation_order(names["train"], names["test"], plan.repeats, rng,
                               names["validation"])
    entries = [PlaylistEntry(i, c, tier, rep, plan.frames,
                             movie_relpath(c) if plan.movies else "")
               for i, (c, tier, rep) in enumerate(order)]
    manifest = {
        "seed": plan.seed, "stim_rate_hz": plan.stim_rate_hz, "clip_seconds": plan.clip_seconds,
        "repeats": plan.repeats, "train_clips": plan.train_clips, "test_clips": plan.test_clips,
        "validation_clips": plan.validation_clips,
        "monitor": {"width": plan.monitor[0], "height": plan.monitor[1]},
        "movies": {"format": "MJPEG AVI", "quality": plan.quality, "gray": plan.gray}
        if plan.movies else None,
        "generator": {"function": "cortexcast.daq.sim.stimulus.make_clips",
                      "call": "make_clips(tier, 1, frames, seed, stim_rate_hz, "
                              "video_mean=video_mean, video_std=video_std)",
                      "mouse": MOUSE, "video_mean": meta.video_mean,
                      "video_std": meta.video_std},
        "clips": info,
    }
    return clips, entries, manifest


def _prepare_out(out: Path, force: bool) -> None:
    """Refuse a non-empty folder without --force; with it, remove what a clip set holds."""
    from cortexcast.daq.playlist import MANIFEST, MOVIES, PLAYLIST

    if out.exists() and not out.is_dir():
        raise ClipsError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ClipsError(f"--out {out} exists and is not empty; pass --force to replace "
                             "the clip set in it, or choose another folder")
        for p in out.glob("*.npy"):
            if p.stem.startswith(("train_", "test_", "validation_")):
                p.unlink()
        for name in (PLAYLIST, MANIFEST, "README.txt"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / MOVIES, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def write(out: str | Path, plan: ClipsPlan, force: bool = False,
          log: Callable[[str], None] = print) -> dict:
    """Write the clip set (clips, playlist, manifest, movies, README); returns a summary."""
    from cortexcast.app.clip_video import layout, write_movies
    from cortexcast.daq.playlist import MOVIES, STIM_SHAPE, write_clip_set

    started = time.perf_counter()
    out = Path(out)
    lay = layout(STIM_SHAPE, *plan.monitor) if plan.movies else None
    _prepare_out(out, force)
    clips, entries, manifest = make_clip_set(plan)
    write_clip_set(out, clips, entries, manifest)
    t_clips = time.perf_counter() - started
    log(f"clips: {len(clips)} clips of {plan.frames} frames written to {out} "
        f"({t_clips:.1f} s); {'writing movies' if plan.movies else 'no movies'}")
    movie_bytes = 0
    if plan.movies:
        (out / MOVIES).mkdir(exist_ok=True)
        done = [0]
        step = max(1, len(clips) // 10)

        def progress() -> None:
            done[0] += 1
            if done[0] % step == 0 or done[0] == len(clips):
                log(f"  movies {done[0]}/{len(clips)} "
                    f"({time.perf_counter() - started:.0f} s)")

        jobs = [(out / MOVIES / f"{name}.avi", clip) for name, clip in clips.items()]
        movie_bytes = write_movies(jobs, *plan.monitor, plan.stim_rate_hz, plan.quality,
                                   plan.gray, plan.jobs, progress)
    (out / "README.txt").write_text(readme(plan, len(entries)), encoding="utf-8")
    took = time.perf_counter() - started
    frames = sum(e.frames for e in entries)
    summary = {"clips": len(clips), "presentations": len(entries), "frames": frames,
               "session_s": frames / plan.stim_rate_hz, "bytes": _size(out),
               "movie_bytes": movie_bytes, "seconds": took, "clips_seconds": t_clips}
    n_test = plan.test_clips
    log(f"clips: {len(clips)} clips ({plan.train_clips} train, {plan.validation_clips} "
        f"validation, {n_test} test x {plan.repeats} repeats) in {out}")
    log(f"  {len(entries)} presentations, {frames} stimulus frames = "
        f"{summary['session_s']:.0f} s ({summary['session_s'] / 60:.1f} min) at "
        f"{plan.stim_rate_hz:g} Hz")
    if lay is not None:
        log(f"  movies: {len(clips)} MJPEG AVI at {lay.width}x{lay.height} (clip x{lay.factor}, "
            f"nearest-neighbour), {_human(movie_bytes)}")
    log(f"  disk {_human(summary['bytes'])}; took {took:.1f} s (clips {t_clips:.1f} s)")
    return summary


def readme(plan: ClipsPlan, presentations: int) -> str:
    w, h = plan.monitor
    return f"""cortexcast calibration clip set (made by `cortexcast clips`)
===========================================================

{plan.train_clips} training and {plan.validation_clips} validation clips shown once, \
{plan.test_clips} test clips shown
{plan.repeats} times each, {presentations} presentations of {plan.clip_seconds:g} s at \
{plan.stim_rate_hz:g} Hz, in the order of
playlist.csv (seed {plan.seed}). Validation and test clips show images no training clip shows.

  <clip>.npy       the clips, (frames, 36, 64) uint8: set [daq.stimulus] clip_library to
                   this folder so the decoder sees the pixels the mouse saw
  playlist.csv     one row per presentation: index,clip,tier,repeat,frames,movie
  manifest.json    seeds and source images of every clip
  movies/<clip>.avi  the same clips at {w}x{h}, Motion-JPEG AVI, {plan.stim_rate_hz:g} fps

Show every movie frame for exactly one stimulus frame (1/{plan.stim_rate_hz:g} s); the
monitor's refresh rate should be a multiple of {plan.stim_rate_hz:g} Hz.

PsychoPy (Builder): put your experiment next to this folder's files (or prefix the
paths), add a loop with conditions file playlist.csv, loopType "sequential", nReps 1,
and inside it a Movie component with movie file $movie (no looping, stop after the movie
ends). Coder: data.importConditions('playlist.csv') and visual.MovieStim(win, row['movie']).

Bonsai: CsvReader (FileName playlist.csv, SkipRows 1) -> take the 6th column (`movie`)
-> a Concat/SelectMany over FileCapture (FileName = this folder + movie, PlaybackRate 0 =
the file's {plan.stim_rate_hz:g} fps) so the clips play one after another, in order.

Stimulus identity (required): for each movie frame shown, the stimulus program announces
what was on screen, right after the flip, as one UDP datagram (JSON) to the daq computer's
[daq.stimulus] listen address (default port 5557):

  {{"v": 1, "frame": j, "clip": "train_0003", "clip_frame": k, "t": t_flip}}

j = global stimulus frame counter (0, 1, 2, ... over the whole session: the frame the
sync box / photodiode counts), clip = the playlist row's `clip`, k = frame within the clip
(0..frames-1), t = flip time in seconds (optional). PsychoPy: after each win.flip() send it
with socket.sendto (t = the value win.flip() returns). Bonsai: send it from a
PythonSink (IronPython socket), or append one such JSON line per frame to a log file and
set [daq.stimulus] mode = "log", log_file = that file. Details: the docstring of
cortexcast.daq.stimulus_identity.
"""


def run(args: argparse.Namespace) -> int:
    from cortexcast.app.clip_video import parse_monitor

    plan = ClipsPlan(train_clips=args.train_clips, test_clips=args.test_clips,
                     validation_clips=args.validation_clips,
                     repeats=args.repeats, clip_seconds=args.clip_seconds, seed=args.seed,
                     stim_rate_hz=args.stim_rate, monitor=parse_monitor(args.monitor),
                     movies=not args.no_movies, quality=args.quality, gray=not args.color,
                     jobs=args.jobs or min(os.cpu_count() or 1, 8))
    write(args.out, plan, force=args.force)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "clips", help="write a calibration stimulus set (clips, playlist, movies)",
        description="Write a calibration stimulus set for a rig day: training and "
                    "validation clips shown once, test clips shown --repeats times, "
                    "interleaved (validation and test clips from images no training clip "
                    "uses); <clip>.npy, playlist.csv, manifest.json and "
                    "movies/<clip>.avi (MJPEG at monitor resolution) for PsychoPy or Bonsai.")
    p.add_argument("--out", required=True, help="folder to write (must be empty or new)")
    p.add_argument("--train-clips", type=int, default=100, help="training clips (default 100)")
    p.add_argument("--test-clips", type=int, default=10, help="test clips (default 10)")
    p.add_argument("--validation-clips", type=int, default=10,
                   help="validation clips, shown once each, from images of their own: the "
                        "exported dataset's oracle tier, on which train chooses lag, alpha "
                        "and branches (default 10; 0: export holds out a fraction of the "
                        "training clips instead)")
    p.add_argument("--repeats", type=int, default=3,
                   help="times each test clip is shown (default 3)")
    p.add_argument("--clip-seconds", type=float, default=10.0,
                   help="length of each clip in seconds (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of clips and order (default 0)")
    p.add_argument("--stim-rate", type=float, default=30.0,
                   help="stimulus frame rate in Hz, also the movies' fps (default 30)")
    p.add_argument("--monitor", default="1920x1080", metavar="WxH",
                   help="stimulus monitor resolution for the movies (default 1920x1080: the "
                        "64x36 clip x30); not a multiple: centred on mid grey")
    p.add_argument("--no-movies", action="store_true", help="write no movies/*.avi")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    p.add_argument("--color", action="store_true",
                   help="YCbCr 4:2:0 JPEG frames (webcam-style MJPEG, for players that "
                        "reject grayscale JPEG) instead of grayscale ones: ~2x slower to "
                        "write, ~10 %% larger")
    p.add_argument("--jobs", type=int, default=0,
                   help="processes encoding movies (default: CPU cores, at most 8)")
    p.add_argument("--force", action="store_true", help="replace a clip set already in --out")
    p.set_defaults(func=run)
