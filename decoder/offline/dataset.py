"""Reader for one mouse folder in the Sensorium 2023 layout.

::

    data/videos/<trial>.npy        (H, W, T) float, 0..255; NaN after the trial's last frame
    data/responses/<trial>.npy     (N, T) activity per neuron
    data/behavior/<trial>.npy      (2, T) pupil dilation, running speed     (optional)
    data/pupil_center/<trial>.npy  (2, T) eye position x, y                 (optional)
    meta/trials/tiers.npy          one tier string per trial id
    meta/neurons/unit_ids.npy, meta/neurons/cell_motor_coordinates.npy      (optional)
    meta/statistics/<variable>/all/{mean,std,...}.npy                       (optional)
    eval_mask.npy                  bool (H, W) evaluation mask             (optional)

Trial ids are the integer file names; trial ``i`` belongs to tier ``tiers[i]``.
Every trial is padded to the same T; its length is the index of the first NaN
on the video's time axis (read from the first pixel's time course). Opening a
folder reads only file headers and that one time course per trial; arrays are
memory-mapped until asked for.

Responses withheld (files absent, the first neuron's trace all NaN, or the
first 64 neurons all exactly zero: the ways a test tier's placeholders can
look) make ``has_responses`` False for those trials; callers report and skip
such a tier instead of failing.

Real Sensorium 2023 folders (e.g. ``dynamic29156-11-10-Video-...``) pad every
trial to the same T (e.g. 324) with NaN after its last frame in the video,
responses, behaviour and pupil centre alike; ``meta/statistics/<var>/`` holds
``all/`` and ``stimulus_frames/`` subfolders of min/max/mean/median/std (the
``all/`` ones are used); other files under ``meta/`` are ignored.
"""

from __future__ import annotations

from cortexcast.core.errors import CortexcastError
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
import numpy as np

from cortexcast.core.behavior import behavior_rows, behavior_statistics
from cortexcast.decoder.live.mask_file import read_mask
from cortexcast.decoder.live.session_stats import (first_nan, moments, read_statistics,
                                                   sized_stats, withheld)

TIERS = ("train", "oracle", "live_test_main", "live_test_bonus",
         "final_test_main", "final_test_bonus", "none")
"""The Sensorium 2023 tiers, in the order they are reported."""

VARIABLES = ("videos", "responses", "behavior", "pupil_center")
REQUIRED = ("data/videos", "data/responses", "meta/trials/tiers.npy")


class DatasetError(CortexcastError, ValueError):
    """A dataset folder is not in the Sensorium 2023 layout or is inconsistent."""


@dataclass(frozen=True)
class Trial:
    id: int
    tier: str
    length: int
    """Frames before the first NaN of the video."""
    has_responses: bool


class SensoriumDataset:
    """One mouse folder. ``SensoriumDataset(root)`` validates the layout on open."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist")
        missing = [r for r in REQUIRED if not (self.root / r).exists()]
        if missing:
            inside = sorted(str(p.parent.parent) for p in self.root.glob("*/data/videos"))
            hint = (f"; the mouse folder{'s' if len(inside) > 1 else ''} inside it: "
                    f"{', '.join(inside[:5])} (pass one of those)") if inside else ""
            raise DatasetError(
                f"{self.root} is not a dataset in the Sensorium 2023 layout: missing "
                f"{', '.join(missing)}{hint}"
            )
        self.tiers_by_id = self._load_tiers()
        self.trials: dict[int, Trial] = {}
        self.frame_shape: tuple[int, int] = (0, 0)
        self.n_neurons = 0
        self._scan()

    # ----------------------------------------------------------------- opening
    def _load_tiers(self) -> np.ndarray:
        p = self.root / "meta/trials/tiers.npy"
        try:
            tiers = np.load(p, allow_pickle=True)
        except (ValueError, OSError) as exc:
            raise DatasetError(f"{p}: cannot read tiers: {exc}") from exc
        if tiers.ndim != 1:
            raise DatasetError(f"{p}: expected a 1-D array of tier names, got shape {tiers.shape}")
        return tiers.astype(str)

    def _trial_files(self, kind: str) -> dict[int, Path]:
        folder = self.root / "data" / kind
        if not folder.is_dir():
            return {}
        files: dict[int, Path] = {}
        for p in folder.glob("*.npy"):
            if not p.stem.isdigit() or str(int(p.stem)) != p.stem:
                raise DatasetError(f"{p}: trial files must be named <integer>.npy "
                                   "(no leading zeros)")
            files[int(p.stem)] = p
        return files

    def _scan(self) -> None:
        videos = self._trial_files("videos")
        responses = self._trial_files("responses")
        if not videos:
            raise DatasetError(f"{self.root / 'data/videos'} holds no <trial>.npy files")
        neurons: dict[int, int] = {}
        for tid in sorted(videos):
            if tid >= len(self.tiers_by_id):
                raise DatasetError(
                    f"trial {tid} has a video but meta/trials/tiers.npy lists only "
                    f"{len(self.tiers_by_id)} trials"
                )
            video = self._mmap(videos[tid])
            if video.ndim != 3:
                raise DatasetError(f"{videos[tid]}: video must be (H, W, T), got {video.shape}")
            if self.frame_shape == (0, 0):
                self.frame_shape = (int(video.shape[0]), int(video.shape[1]))
            elif video.shape[:2] != self.frame_shape:
                raise DatasetError(
                    f"{videos[tid]}: frames are {video.shape[:2]}, other trials {self.frame_shape}"
                )
            length = first_nan(np.asarray(video[0, 0, :], dtype=np.float64))
            if length == 0:
                raise DatasetError(f"{videos[tid]}: trial {tid} is all NaN (no frames)")
            has = False
            if tid in responses:
                resp = self._mmap(responses[tid])
                if resp.ndim != 2 or resp.shape[1] < length:
                    raise DatasetError(
                        f"{responses[tid]}: responses must be (N, T) with T >= {length}, "
                        f"got {resp.shape}"
                    )
                neurons[tid] = int(resp.shape[0])
                has = not withheld(resp, length)
            self.trials[tid] = Trial(tid, str(self.tiers_by_id[tid]), length, has)
        counts = sorted(set(neurons.values()))
        if len(counts) > 1:
            first = {n: min(t for t, m in neurons.items() if m == n) for n in counts}
            detail = ", ".join(f"{n} (e.g. trial {t})" for n, t in first.items())
            raise DatasetError(f"{self.root}: trials have different neuron counts: {detail}")
        self.n_neurons = counts[0] if counts else self._neurons_from_meta()
        ids = self.root / "meta/neurons/unit_ids.npy"
        if counts and ids.is_file():
            n_meta = int(self._mmap(ids).shape[0])
            if n_meta != self.n_neurons:
                raise DatasetError(
                    f"{ids} lists {n_meta} neurons but the responses have {self.n_neurons}"
                )

    def _neurons_from_meta(self) -> int:
        ids = self.root / "meta/neurons/unit_ids.npy"
        return int(self._mmap(ids).shape[0]) if ids.is_file() else 0

    @staticmethod
    def _mmap(path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DatasetError(f"{path}: cannot read: {exc}") from exc

    # ----------------------------------------------------------------- queries
    def __repr__(self) -> str:
        return (f"SensoriumDataset({str(self.root)!r}, trials={len(self.trials)}, "
                f"neurons={self.n_neurons}, frames={self.frame_shape})")

    def tiers(self) -> list[str]:
        """Tiers that have at least one trial, standard ones first."""
        present = {t.tier for t in self.trials.values()}
        return [t for t in TIERS if t in present] + sorted(present - set(TIERS))

    def trial_ids(self, tier: str | None = None) -> list[int]:
        return [t.id for t in self.trials.values() if tier is None or t.tier == tier]

    def trial(self, trial_id: int) -> Trial:
        try:
            return self.trials[trial_id]
        except KeyError:
            raise DatasetError(f"{self.root} has no trial {trial_id}") from None

    def length(self, trial_id: int) -> int:
        return self.trial(trial_id).length

    def has_responses(self, tier: str) -> bool:
        """True when every trial of ``tier`` has responses (False for an empty tier)."""
        trials = [self.trials[i] for i in self.trial_ids(tier)]
        return bool(trials) and all(t.has_responses for t in trials)

    def require_tier(self, tier: str, responses: bool = True) -> list[int]:
        """Trial ids of ``tier``; DatasetError if it is empty or (optionally) has no responses."""
        ids = self.trial_ids(tier)
        if not ids:
            raise DatasetError(
                f"{self.root} has no trials in tier {tier!r} (tiers: {', '.join(self.tiers())})"
            )
        if responses and not self.has_responses(tier):
            raise DatasetError(f"tier {tier!r} of {self.root} has no responses (withheld?)")
        return ids

    # ----------------------------------------------------------------- arrays
    def raw(self, kind: str, trial_id: int) -> np.ndarray | None:
        """Memory-mapped array in the file's own layout, or None if the file is absent."""
        if kind not in VARIABLES:
            raise DatasetError(f"unknown variable {kind!r} (one of {', '.join(VARIABLES)})")
        self.trial(trial_id)
        p = self.root / "data" / kind / f"{trial_id}.npy"
        return self._mmap(p) if p.is_file() else None

    def video(self, trial_id: int) -> np.ndarray:
        """(T, H, W) float32 copy of the trial's frames, T = its length."""
        v = self.raw("videos", trial_id)
        if v is None:
            raise DatasetError(f"the video of trial {trial_id} vanished from {self.root}")
        n = self.length(trial_id)
        return np.ascontiguousarray(np.moveaxis(np.asarray(v[:, :, :n], np.float32), -1, 0))

    def responses(self, trial_id: int) -> np.ndarray:
        """(T, N) float32 copy of the trial's responses (NaN kept), T = its length."""
        t = self.trial(trial_id)
        r = self.raw("responses", trial_id)
        if r is None or not t.has_responses:
            raise DatasetError(f"trial {trial_id} ({t.tier}) of {self.root} has no responses")
        return np.ascontiguousarray(np.asarray(r[:, : t.length], np.float32).T)

    def behavior(self, trial_id: int) -> np.ndarray | None:
        """(T, 2) pupil dilation, running speed; None if absent."""
        return self._small("behavior", trial_id)

    def pupil_center(self, trial_id: int) -> np.ndarray | None:
        """(T, 2) eye position x, y; None if absent."""
        return self._small("pupil_center", trial_id)

    def behavior_rows(self, trial_id: int) -> np.ndarray | None:
        """(T, 4) [pupil dilation, running speed, pupil x, pupil y] (the order ONNX models
        take); NaN where a file is absent or short of rows, None if the trial has neither
        (:func:`cortexcast.core.behavior.behavior_rows`)."""
        return behavior_rows(self.behavior(trial_id), self.pupil_center(trial_id),
                             self.length(trial_id))

    def behavior_statistics(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (4,) of the behaviour rows of trials ``ids``, NaN skipped per variable
        (:func:`cortexcast.core.behavior.behavior_statistics`)."""
        return behavior_statistics(self.behavior_rows(t) for t in ids)

    def _small(self, kind: str, trial_id: int) -> np.ndarray | None:
        a = self.raw(kind, trial_id)
        if a is None:
            return None
        return np.ascontiguousarray(np.asarray(a[:, : self.length(trial_id)], np.float32).T)

    def response_moments(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-neuron (mean, std, finite count) of the responses of trials ``ids``, one trial
        in memory at a time (float64 sums; NaN/inf skipped)."""
        return moments((self.responses(tid) for tid in ids), self.n_neurons)

    def response_statistics(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, str]:
        """Per-neuron response (mean, std, source): ``meta/statistics`` when present and of the
        right size, else :meth:`response_moments` of trials ``ids``."""
        stats = sized_stats(self.statistics("responses"), self.n_neurons)
        if stats is not None:
            return (*stats, "dataset statistics")
        mean, std, count = self.response_moments(ids)
        if not count.any():
            raise DatasetError(f"{self.root}: no finite responses to compute statistics from")
        return mean, std, "computed from the trials"

    # ----------------------------------------------------------------- extras
    def statistics(self, variable: str) -> dict[str, np.ndarray]:
        """``meta/statistics/<variable>/all/*.npy`` as {name: array}; {} if absent.

        Accepts ``responses``/``response`` and ``videos``/``video`` spellings, and
        folders with or without the ``all/`` level
        (:func:`cortexcast.decoder.live.session_stats.read_statistics`).
        """
        return read_statistics(self.root, variable, DatasetError)

    def eval_mask(self) -> np.ndarray | None:
        """``eval_mask.npy`` as bool (H, W), or None if the folder has none."""
        p = self.root / "eval_mask.npy"
        if not p.is_file():
            return None
        mask = read_mask(p, self.frame_shape, DatasetError)
        if not mask.any():
            raise DatasetError(f"{p}: mask selects no pixel")
        return mask

    def summary(self) -> str:
        """One line per tier: trials, responses present, frames."""
        lines = [f"{self.root}: {self.n_neurons} neurons, frames {self.frame_shape}"]
        for tier in self.tiers():
            ids = self.trial_ids(tier)
            frames = sum(self.trials[i].length for i in ids)
            resp = "responses" if self.has_responses(tier) else "NO responses"
            lines.append(f"  {tier:<17} {len(ids):5d} trials {frames:8d} frames  {resp}")
        return "\n".join(lines)

