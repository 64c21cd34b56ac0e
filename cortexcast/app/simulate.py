"""`cortexcast simulate --out DIR`: a Sensorium-2023-layout dataset from the simulated rig.

The rig (not paced) plays every trial's clip back to back, after a few
seconds of warm-up movie, and its frames go through the same extraction the
live decoder runs (:class:`cortexcast.decoder.live.extraction.ActivityExtractor` on the
ground-truth ROIs), so a model trains on the signal it will see live.
``responses[:, t]`` is the activity of the imaging frame during which
stimulus frame ``t`` was on screen (the mean if several were; the previous
frame's if none was), assembled by :mod:`cortexcast.decoder.offline.trials` as
``cortexcast export`` assembles a recorded session.

Tiers: ``train`` (clips from the train image pool), ``oracle`` (a few clips from
the validation image pool, each shown several times), ``live_test_main`` and
``final_test_main`` (clips from the held-out test image pool). No image is in two pools,
so validation, like test, scores images the fit never saw. Trials are
shown in random order and numbered in another random order. Besides the
layout, the folder holds ``meta/trials/clip_ids.npy`` (which trials repeat
one clip), ``meta/trials/images.npy`` (the images each trial showed,
"+"-joined), ``rois.npz`` and its fingerprint ``meta/rois.json``,
``eval_mask.npy`` and ``sim.json`` (the
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
    from cortexcast.daq.sim.stimulus import make_clips

    def clips(pool: str, n: int, tag: int) -> list[tuple[np.ndarray, tuple[str, ...]]]:
        c, names = make_clips(pool, n, plan.frames, [session_seed, tag], frame_rate,
                              video_mean=meta.video_mean, video_std=meta.video_std)
        return list(zip(c, names))

    trials: list[tuple[str, str, np.ndarray, tuple[str, ...]]] = []
    trials += [("train", f"train-{k}", c, im)
               for k, (c, im) in enumerate(clips("train", plan.train, 101))]
    for k, (c, im) in enumerate(clips("validation", plan.oracle_clips, 102)):
        trials += [("oracle", f"oracle-{k}", c, im)] * plan.oracle_repeats
    for tier, tag in (("live_test_main", 103), ("final_test_main", 104)):
        trials += [(tier, f"{tier}-{k}", c, im)
                   for k, (c, im) in enumerate(clips("test", plan.test, tag))]
    order = np.random.default_rng([session_seed, 105]).permutation(len(trials))
    return [trials[i] for i in order]


def write_dataset(out: str | Path, settings, plan: DatasetPlan = DatasetPlan(),
                  log: Callable[[str], None] = print) -> dict:
    """Run the simulated rig over the planned trials and write the dataset; returns a summary.

    The trial rows are assembled by :class:`~cortexcast.decoder.offline.trials.SessionAssembler`,
    the code ``cortexcast export`` assembles a recorded session with.
    """
    from cortexcast.core.events import ImagingFrame, SyncEvent
    from cortexcast.core.roi_fingerprint import write_dataset_roi_meta
    from cortexcast.core.rois import save_rois
    from cortexcast.daq.sim.meta import load_mouse
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.stimulus import make_clips
    from cortexcast.decoder.live.extraction import ActivityExtractor
    from cortexcast.decoder.offline.trials import (DatasetOutput, FrameValues, SessionAssembler,
                                                   TrialRows)

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
    output = DatasetOutput(root)

    def write_trial(pos: int, rows: TrialRows) -> None:
        tier, _, clip, _ = trials[pos]
        video = np.ascontiguousarray(clip.transpose(1, 2, 0), dtype=np.float32)
        output.trial(int(ids[pos]), tier, video, rows)
        done = pos + 1
        if done == n_trials or done % max(1, n_trials // 10) == 0:
            el = time.perf_counter() - started
            log(f"simulate: {done}/{n_trials} trials ({el:.1f} s, "
                f"~{el / done * (n_trials - done):.0f} s left)")

    # trials are shown back to back after the warm-up movie
    assembler = SessionAssembler([warm_frames + k * T for k in range(n_trials)],
                                 [T] * n_trials, n, write_trial)
    imaging_frames = 0
    sync: SyncEvent | None = None  # the rig sends each frame's sync just before the frame
    with rig:
        for ev in rig.events():
            if isinstance(ev, SyncEvent):
                sync = ev
                continue
            if not isinstance(ev, ImagingFrame):
                continue
            act = extractor(ev.pixels)
            imaging_frames += 1
            if sync is None or sync.imaging_frame != ev.index:
                raise RuntimeError(f"simulate: imaging frame {ev.index} came without its sync")
            b = sync.behavior
            assembler.feed(sync.stim_frame, FrameValues(
                act, np.array((b["pupil"], b["running"]), np.float32),
                np.array((b["pupil_x"], b["pupil_y"]), np.float32)))
    assembler.close()

    tiers = np.empty(n_trials, dtype="<U16")
    clip_ids = np.empty(n_trials, dtype="<U32")
    images = np.empty(n_trials, dtype="<U200")
    for pos, (tier, cid, _, names) in enumerate(trials):
        tiers[ids[pos]] = tier
        clip_ids[ids[pos]] = cid
        images[ids[pos]] = "+".join(names)
    output.finish(tiers, rig.layout.coords_um.astype(np.float32), clip_ids=clip_ids,
                  images=images)
    save_rois(root / "rois.npz", rois)
    write_dataset_roi_meta(root, rois, rois_file="rois.npz", reference=None)
    output.writer.eval_mask(rig.eval_mask())
    (root / "sim.json").write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")
    elapsed = time.perf_counter() - started
    summary = {"trials": n_trials, "neurons": n, "frames_per_trial": T,
               "imaging_frames": imaging_frames, "elapsed_s": elapsed,
               "tiers": {t: int((tiers == t).sum()) for t in sorted(set(tiers.tolist()))}}
    counts = ", ".join(f"{k} {v}" for k, v in summary["tiers"].items())
    log(f"simulate: wrote {n_trials} trials ({counts}) of {n} neurons x {T} frames to {root} "
        f"in {elapsed:.1f} s")
    return summary


PRESETS: dict[str, dict[str, object]] = {
    "easy": {},
    "realistic": {
        "imaging_rate_hz": 8.0,
        "eye_shift_px": 5.5,
        "eye_tracking_noise": 0.05,
        "complex_fraction": 0.55,
        "nonvisual_fraction": 0.3,
        "weak_fraction": 0.7,
        "weak_drive": 0.2,
        "running_gain": 1.0,
        "pupil_gain": 0.4,
        "shared_variability": 0.9,
    },
}
"""Simulator settings that differ from :class:`SimSettings`' defaults, per ``--preset``.

``easy`` is the original simulator (what the bundled demo model was trained on);
``realistic`` (the default) is calibrated so that ridge regression scores a pixel
correlation of ~0.25-0.35 on the held-out test tier, as linear methods do on real data
(docs/simulator.md)."""

# SimSettings fields with their own (older) flag names, and those simulate always sets itself
_FLAG_NAMES = {"n_neurons": "neurons", "frame_height": "height", "frame_width": "width"}
_NOT_FLAGS = ("paced", "duration_s", "clips", "stimulus_to", "eye_to")  # session wiring, not the animal


def sim_settings(preset: str = "realistic", table: dict | None = None,
                 overrides: dict | None = None, where: str = "simulate"):
    """SimSettings from a preset, then a TOML table, then command-line values (not None)."""
    from cortexcast.core.config import settings_from_table
    from cortexcast.daq.sim.settings import SimSettings

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    merged = dict(PRESETS[preset])
    merged.update(table or {})
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    merged["paced"] = False
    return settings_from_table(SimSettings, merged, where)


def _config_table(path: str | None) -> dict:
    """The ``[sim]`` (or ``[daq.sim]``) table of a TOML file; {} without a file."""
    from cortexcast.core.config import ConfigError, load_toml

    if path is None:
        return {}
    data = load_toml(path)
    table = data.get("sim", data.get("daq", {}).get("sim") if isinstance(data.get("daq"), dict)
                     else None)
    if table is None:
        raise ConfigError(f"{path}: no [sim] (or [daq.sim]) table")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [sim] must be a table")
    return table


def run(args: argparse.Namespace) -> int:
    import dataclasses as dc

    from cortexcast.daq.sim.settings import SimSettings

    overrides = {f.name: getattr(args, _FLAG_NAMES.get(f.name, f.name), None)
                 for f in dc.fields(SimSettings) if f.name not in _NOT_FLAGS}
    try:
        settings = sim_settings(args.preset, _config_table(args.config), overrides,
                                f"{args.config}: [sim]" if args.config else "simulate")
        plan = DatasetPlan(train=args.trials, test=args.test_trials,
                           oracle_clips=args.oracle_clips, oracle_repeats=args.oracle_repeats,
                           frames=args.frames, warmup_s=args.warmup_s)
    except ValueError as exc:
        print(f"cortexcast simulate: error: {exc}", file=sys.stderr)
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
    p.add_argument("--preset", choices=tuple(PRESETS), default="realistic",
                   help="simulator calibration: 'realistic' (default; ridge scores ~0.3 as on "
                        "real data) or 'easy' (the original simulator); flags and --config "
                        "override single knobs")
    p.add_argument("--config", default=None, metavar="TOML",
                   help="TOML file whose [sim] (or [daq.sim]) table sets simulator knobs "
                        "(any SimSettings field); command-line flags win over it")
    p.add_argument("--neurons", type=int, default=None, help="neurons (100..100000, default 7800)")
    p.add_argument("--trials", type=int, default=60, help="train trials (default 60)")
    p.add_argument("--test-trials", type=int, default=10,
                   help="trials in each of live_test_main and final_test_main (default 10)")
    p.add_argument("--oracle-clips", type=int, default=2, help="distinct oracle clips (default 2)")
    p.add_argument("--oracle-repeats", type=int, default=5,
                   help="times each oracle clip is shown (default 5)")
    p.add_argument("--frames", type=int, default=300,
                   help="stimulus frames per trial (default 300)")
    p.add_argument("--height", type=int, default=None,
                   help="imaging frame height (px, default 512)")
    p.add_argument("--width", type=int, default=None, help="imaging frame width (px, default 512)")
    p.add_argument("--mouse", default=None, help="Sensorium mouse A..J to lay out (default A)")
    p.add_argument("--seed", type=int, default=None, help="animal seed (default 0)")
    p.add_argument("--session-seed", type=int, default=None,
                   help="session seed: clips, behaviour, noise (default 1)")
    p.add_argument("--warmup-s", type=float, default=5.0,
                   help="seconds of movie before the first trial (default 5)")
    p.add_argument("--force", action="store_true", help="replace a dataset already in --out")
    _knob_flags(p)
    p.set_defaults(func=run)


def _knob_flags(p: argparse.ArgumentParser) -> None:
    """One ``--knob-name`` flag per remaining SimSettings field (default: from the preset)."""
    import dataclasses as dc
    import typing

    from cortexcast.daq.sim.settings import SimSettings

    g = p.add_argument_group("simulator knobs (default: the preset's value; see "
                             "docs/simulator.md)")
    hints = typing.get_type_hints(SimSettings)
    done = {"mouse", "seed", "session_seed", *_FLAG_NAMES, *_NOT_FLAGS}
    for f in dc.fields(SimSettings):
        if f.name in done:
            continue
        kind = hints[f.name]
        conv = {int: int, float: float, str: str, bool: _boolean}.get(kind, str)
        shown = {k: PRESETS[k].get(f.name, f.default) for k in PRESETS}
        g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=conv, default=None,
                       metavar=kind.__name__.upper() if isinstance(kind, type) else "VALUE",
                       help=", ".join(f"{k} {v}" for k, v in shown.items()))


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
