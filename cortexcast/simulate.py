"""`cortexcast simulate --out DIR`: a Sensorium-2023-layout dataset from the simulated rig.

The rig (not paced) plays every trial's clip back to back, after a few
seconds of warm-up movie, and its frames go through the same extraction the
live decoder runs (:class:`decoder.extraction.ActivityExtractor` on the
ground-truth ROIs), so a model trains on the signal it will see live.
``responses[:, t]`` is the activity of the imaging frame during which
stimulus frame ``t`` was on screen (the mean if several were; the previous
frame's if none was).

Tiers: ``train`` (clips from the train image pool), ``oracle`` (a few other
train-pool clips, each shown several times), ``live_test_main`` and
``final_test_main`` (clips from the held-out test image pool). Trials are
shown in random order and numbered in another random order. Besides the
layout, the folder holds ``meta/trials/clip_ids.npy`` (which trials repeat
one clip), ``meta/trials/images.npy`` (the images each trial showed,
"+"-joined), ``rois.npz``, ``eval_mask.npy`` and ``sim.json`` (the
:class:`SimSettings` of the animal, to run it live).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

WRITTEN = ("data", "meta", "rois.npz", "eval_mask.npy", "sim.json")


@dataclasses.dataclass(frozen=True)
class DatasetPlan:
    train: int = 60
    """Train trials."""
    test: int = 10
    """Trials in each of live_test_main and final_test_main."""
    oracle_clips: int = 2
    oracle_repeats: int = 5
    frames: int = 300
    """Stimulus frames per trial."""
    warmup_s: float = 5.0
    """Movie shown before the first trial so the extraction baseline settles (s)."""

    def __post_init__(self) -> None:
        for name in ("train", "test", "oracle_clips", "oracle_repeats"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.train < 1:
            raise ValueError("need at least one train trial")
        if self.frames < 1:
            raise ValueError("frames per trial must be >= 1")
        if self.warmup_s < 0:
            raise ValueError("warmup_s must be >= 0")


def _clip_plan(plan: DatasetPlan, session_seed: int, frame_rate: float, meta
               ) -> list[tuple[str, str, np.ndarray, tuple[str, ...]]]:
    """(tier, clip id, clip, images shown) for every trial, in presentation order."""
    from daq.sim.stimulus import make_clips

    def clips(pool: str, n: int, tag: int) -> list[tuple[np.ndarray, tuple[str, ...]]]:
        c, names = make_clips(pool, n, plan.frames, [session_seed, tag], frame_rate,
                              video_mean=meta.video_mean, video_std=meta.video_std)
        return list(zip(c, names))

    trials: list[tuple[str, str, np.ndarray, tuple[str, ...]]] = []
    trials += [("train", f"train-{k}", c, im)
               for k, (c, im) in enumerate(clips("train", plan.train, 101))]
    for k, (c, im) in enumerate(clips("train", plan.oracle_clips, 102)):
        trials += [("oracle", f"oracle-{k}", c, im)] * plan.oracle_repeats
    for tier, tag in (("live_test_main", 103), ("final_test_main", 104)):
        trials += [(tier, f"{tier}-{k}", c, im)
                   for k, (c, im) in enumerate(clips("test", plan.test, tag))]
    order = np.random.default_rng([session_seed, 105]).permutation(len(trials))
    return [trials[i] for i in order]


class _Stats:
    """Running mean/std over the train tier (float64 sums)."""

    def __init__(self) -> None:
        self.n: dict[str, float] = {}
        self.s: dict[str, np.ndarray] = {}
        self.ss: dict[str, np.ndarray] = {}

    def add(self, key: str, x: np.ndarray, axis: tuple[int, ...] | int | None) -> None:
        x = np.asarray(x, np.float64)
        s = x.sum(axis=axis)
        ss = (x * x).sum(axis=axis)
        count = x.size / np.size(s)
        self.n[key] = self.n.get(key, 0.0) + count
        self.s[key] = self.s.get(key, 0.0) + s
        self.ss[key] = self.ss.get(key, 0.0) + ss

    def write(self, root: Path) -> None:
        for key in self.n:
            mean = self.s[key] / self.n[key]
            std = np.sqrt(np.maximum(self.ss[key] / self.n[key] - mean * mean, 0.0))
            d = root / "meta" / "statistics" / key / "all"
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / "mean.npy", np.asarray(mean, np.float32))
            np.save(d / "std.npy", np.asarray(std, np.float32))


def write_dataset(out: str | Path, settings, plan: DatasetPlan = DatasetPlan(),
                  log: Callable[[str], None] = print) -> dict:
    """Run the simulated rig over the planned trials and write the dataset; returns a summary."""
    from daq.sim.meta import load_mouse
    from daq.sim.rig import SimulatedRig
    from daq.sim.stimulus import make_clips
    from daq.source import ImagingFrame, SyncEvent
    from decoder.extraction import ActivityExtractor
    from decoder.rois import save_rois

    started = time.perf_counter()
    root = Path(out)
    settings = dataclasses.replace(settings, paced=False, duration_s=None)
    meta = load_mouse(settings.mouse)
    trials = _clip_plan(plan, settings.session_seed, settings.stim_rate_hz, meta)
    n_trials = len(trials)
    ids = np.random.default_rng([settings.session_seed, 106]).permutation(n_trials)
    warm_frames = int(round(plan.warmup_s * settings.stim_rate_hz))
    warm = make_clips("train", 1, warm_frames, [settings.session_seed, 100],
                      settings.stim_rate_hz, video_mean=meta.video_mean,
                      video_std=meta.video_std)[0] if warm_frames else []
    log(f"simulate: building mouse {settings.mouse} (seed {settings.seed}): "
        f"{settings.n_neurons} neurons, {settings.frame_height}x{settings.frame_width} frames")
    rig = SimulatedRig(settings, clips=warm + [t[2] for t in trials])
    rois = rig.rois()
    extractor = ActivityExtractor(rois, settings.imaging_rate_hz)
    n, T = rig.n_neurons, plan.frames

    for sub in ("videos", "responses", "behavior", "pupil_center"):
        (root / "data" / sub).mkdir(parents=True, exist_ok=True)
    stats = _Stats()

    cur = 0  # trial being filled (presentation position)
    resp = np.zeros((n, T), np.float32)
    beh = np.zeros((2, T), np.float32)
    eye = np.zeros((2, T), np.float32)
    count = np.zeros(T, np.int64)
    held = [np.zeros(n, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32)]

    def finish(pos: int) -> None:
        """Write trial ``pos`` and start the next one."""
        tier, _, clip, _ = trials[pos]
        prev = held
        for f in range(T):  # a stimulus frame no imaging frame saw holds the previous one
            if count[f]:
                resp[:, f] /= count[f]
                beh[:, f] /= count[f]
                eye[:, f] /= count[f]
                prev = [resp[:, f], beh[:, f], eye[:, f]]
            else:
                resp[:, f], beh[:, f], eye[:, f] = prev
        video = np.ascontiguousarray(clip.transpose(1, 2, 0), dtype=np.float32)
        tid = int(ids[pos])
        np.save(root / "data" / "videos" / f"{tid}.npy", video)
        np.save(root / "data" / "responses" / f"{tid}.npy", resp)
        np.save(root / "data" / "behavior" / f"{tid}.npy", beh)
        np.save(root / "data" / "pupil_center" / f"{tid}.npy", eye)
        if tier == "train":
            stats.add("responses", resp, axis=1)
            stats.add("videos", video, axis=None)
            stats.add("behavior", beh, axis=1)
            stats.add("pupil_center", eye, axis=1)
        held[:] = [resp[:, -1].copy(), beh[:, -1].copy(), eye[:, -1].copy()]
        resp[:], beh[:], eye[:], count[:] = 0, 0, 0, 0
        done = pos + 1
        if done == n_trials or done % max(1, n_trials // 10) == 0:
            el = time.perf_counter() - started
            log(f"simulate: {done}/{n_trials} trials ({el:.1f} s, "
                f"~{el / done * (n_trials - done):.0f} s left)")

    act = held[0]
    imaging_frames = 0
    with rig:
        for ev in rig.events():
            if isinstance(ev, ImagingFrame):
                act = extractor(ev.pixels)
                imaging_frames += 1
            elif isinstance(ev, SyncEvent):
                j = ev.stim_frame - warm_frames
                if ev.stim_frame < 0 or j < 0:
                    continue  # grey screen or warm-up movie
                pos, f = divmod(j, T)
                while cur < pos:
                    finish(cur)
                    cur += 1
                resp[:, f] += act
                b = ev.behavior
                beh[:, f] += (b["pupil"], b["running"])
                eye[:, f] += (b["pupil_x"], b["pupil_y"])
                count[f] += 1
    while cur < n_trials:
        finish(cur)
        cur += 1

    tiers = np.empty(n_trials, dtype="<U16")
    clip_ids = np.empty(n_trials, dtype="<U32")
    images = np.empty(n_trials, dtype="<U200")
    for pos, (tier, cid, _, names) in enumerate(trials):
        tiers[ids[pos]] = tier
        clip_ids[ids[pos]] = cid
        images[ids[pos]] = "+".join(names)
    (root / "meta" / "trials").mkdir(parents=True, exist_ok=True)
    np.save(root / "meta" / "trials" / "tiers.npy", tiers)
    np.save(root / "meta" / "trials" / "clip_ids.npy", clip_ids)
    np.save(root / "meta" / "trials" / "images.npy", images)
    (root / "meta" / "neurons").mkdir(parents=True, exist_ok=True)
    np.save(root / "meta" / "neurons" / "unit_ids.npy", np.arange(n, dtype=np.int64))
    np.save(root / "meta" / "neurons" / "cell_motor_coordinates.npy",
            rig.layout.coords_um.astype(np.float32))
    stats.write(root)
    save_rois(root / "rois.npz", rois)
    np.save(root / "eval_mask.npy", rig.eval_mask())
    (root / "sim.json").write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")
    elapsed = time.perf_counter() - started
    summary = {"trials": n_trials, "neurons": n, "frames_per_trial": T,
               "imaging_frames": imaging_frames, "elapsed_s": elapsed,
               "tiers": {t: int((tiers == t).sum()) for t in sorted(set(tiers.tolist()))}}
    counts = ", ".join(f"{k} {v}" for k, v in summary["tiers"].items())
    log(f"simulate: wrote {n_trials} trials ({counts}) of {n} neurons x {T} frames to {root} "
        f"in {elapsed:.1f} s")
    return summary


def run(args: argparse.Namespace) -> int:
    from daq.sim.settings import SimSettings

    try:
        settings = SimSettings(mouse=args.mouse, seed=args.seed, session_seed=args.session_seed,
                               n_neurons=args.neurons, frame_height=args.height,
                               frame_width=args.width, paced=False)
        plan = DatasetPlan(train=args.trials, test=args.test_trials,
                           oracle_clips=args.oracle_clips, oracle_repeats=args.oracle_repeats,
                           frames=args.frames, warmup_s=args.warmup_s)
    except ValueError as exc:
        print(f"cortexcast simulate: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    existing = [name for name in WRITTEN if (out / name).exists()]
    if existing:
        if not args.force:
            print(f"cortexcast simulate: {out} already holds a dataset ({', '.join(existing)}); "
                  "pass --force to replace it", file=sys.stderr)
            return 2
        for name in existing:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_dataset(out, settings, plan)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="write a Sensorium-2023-layout dataset from the simulated rig",
        description="Run the simulated rig (as fast as possible) over train, oracle and test "
                    "clips, extract activity with the live decoder's extraction, and write a "
                    "dataset in the Sensorium 2023 layout plus rois.npz, eval_mask.npy and "
                    "sim.json.")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--neurons", type=int, default=7800, help="neurons (100..100000, default 7800)")
    p.add_argument("--trials", type=int, default=60, help="train trials (default 60)")
    p.add_argument("--test-trials", type=int, default=10,
                   help="trials in each of live_test_main and final_test_main (default 10)")
    p.add_argument("--oracle-clips", type=int, default=2, help="distinct oracle clips (default 2)")
    p.add_argument("--oracle-repeats", type=int, default=5,
                   help="times each oracle clip is shown (default 5)")
    p.add_argument("--frames", type=int, default=300,
                   help="stimulus frames per trial (default 300)")
    p.add_argument("--height", type=int, default=512, help="imaging frame height (px, default 512)")
    p.add_argument("--width", type=int, default=512, help="imaging frame width (px, default 512)")
    p.add_argument("--mouse", default="A", help="Sensorium mouse A..J to lay out (default A)")
    p.add_argument("--seed", type=int, default=0, help="animal seed (default 0)")
    p.add_argument("--session-seed", type=int, default=1,
                   help="session seed: clips, behaviour, noise (default 1)")
    p.add_argument("--warmup-s", type=float, default=5.0,
                   help="seconds of movie before the first trial (default 5)")
    p.add_argument("--force", action="store_true", help="replace a dataset already in --out")
    p.set_defaults(func=run)
