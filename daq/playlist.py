"""A calibration clip set on disk: ``<clip>.npy`` movies, ``playlist.csv`` and ``manifest.json``.

``cortexcast clips --out DIR`` writes such a folder; the simulated rig plays it and the
stimulus-identity source reads its pixels (``clip_library``). Layout::

    DIR/<clip>.npy        (T, 36, 64) uint8, e.g. train_0000.npy, test_0000.npy
    DIR/playlist.csv      index,clip,tier,repeat,frames,movie  -- one row per presentation
    DIR/manifest.json     {"format": "cortexcast-clips-1", "seed", "stim_rate_hz", ...,
                           "clips": {name: {"tier", "seed", "images", "frames"}}}
    DIR/movies/<clip>.avi the same clips at monitor resolution for a stimulus program

:func:`load_clip_set` checks everything a session depends on up front (every row's clip
exists with the promised shape), so a broken folder fails before the rig starts, with the
file and the fix in the message. A folder without ``manifest.json`` (a lab's own clips plus
a hand-written playlist) still loads, at :data:`DEFAULT_STIM_RATE_HZ`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cortexcast.core.errors import CortexcastError

STIM_SHAPE = (36, 64)
"""Clip frame (height, width), as in Sensorium 2023."""
FORMAT = "cortexcast-clips-1"
PLAYLIST = "playlist.csv"
MANIFEST = "manifest.json"
MOVIES = "movies"
MOVIE_EXT = ".avi"
COLUMNS = ("index", "clip", "tier", "repeat", "frames", "movie")
TIERS = ("train", "validation", "test")
DEFAULT_STIM_RATE_HZ = 30.0
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class PlaylistError(CortexcastError, ValueError):
    """A clip set folder is missing or inconsistent (the message names the file and the fix)."""


@dataclass(frozen=True)
class PlaylistEntry:
    """One presentation: row ``index`` of playlist.csv shows clip ``clip`` (``frames`` long)."""

    index: int
    clip: str
    tier: str
    repeat: int
    frames: int
    movie: str = ""
    """Relative path of the monitor-resolution video ("" when none was written)."""


def check_clip_name(name: str) -> str:
    """``name`` if it is a safe file stem (no path separators, not hidden); else PlaylistError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise PlaylistError(f"clip name {name!r}: use letters, digits, '_', '-' and '.' only "
                            "(it becomes <name>.npy in the clip folder)")
    return name


def check_clip_array(clip: Any, where: str) -> np.ndarray:
    """``clip`` as a (T, 36, 64) uint8 array with T >= 1; else PlaylistError naming ``where``."""
    a = np.asarray(clip)
    if a.ndim != 3 or a.shape[1:] != STIM_SHAPE or a.shape[0] < 1 or a.dtype != np.uint8:
        raise PlaylistError(f"{where}: shape {a.shape} {a.dtype}, expected (frames, "
                            f"{STIM_SHAPE[0]}, {STIM_SHAPE[1]}) uint8 with frames >= 1; "
                            "rewrite the clip (e.g. `cortexcast clips --out DIR --force`)")
    return a


def movie_relpath(clip: str) -> str:
    """Where ``cortexcast clips`` puts ``clip``'s video, relative to the folder."""
    return f"{MOVIES}/{clip}{MOVIE_EXT}"


class ClipSet:
    """A loaded clip set folder: the playlist in presentation order and the clips' pixels."""

    def __init__(self, folder: Path, entries: Sequence[PlaylistEntry],
                 manifest: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.entries: tuple[PlaylistEntry, ...] = tuple(entries)
        self.manifest: dict[str, Any] = dict(manifest)
        rate = self.manifest.get("stim_rate_hz", DEFAULT_STIM_RATE_HZ)
        self.stim_rate_hz = float(rate)
        self._tiers: dict[str, str] = {}
        for e in self.entries:
            self._tiers.setdefault(e.clip, e.tier)
        self._frames = {e.clip: e.frames for e in self.entries}
        self._cache: dict[str, np.ndarray] = {}

    @property
    def clip_names(self) -> tuple[str, ...]:
        """Distinct clips in order of first presentation."""
        return tuple(self._tiers)

    @property
    def total_frames(self) -> int:
        """Stimulus frames of the whole session (every presentation)."""
        return sum(e.frames for e in self.entries)

    def path(self, name: str) -> Path:
        return self.folder / f"{check_clip_name(name)}.npy"

    def clip(self, name: str) -> np.ndarray:
        """(T, 36, 64) uint8 pixels of clip ``name`` (loaded once, read-only)."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        path = self.path(name)
        try:
            a = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise PlaylistError(f"{path}: clip {name!r} is missing; rewrite the clip set or "
                                f"remove its rows from {self.folder / PLAYLIST}") from None
        except (OSError, ValueError) as exc:
            raise PlaylistError(f"{path}: not a readable .npy ({exc}); rewrite the clip "
                                "set") from None
        a = check_clip_array(a, str(path))
        want = self._frames.get(name)
        if want is not None and a.shape[0] != want:
            raise PlaylistError(f"{path}: {a.shape[0]} frames but {self.folder / PLAYLIST} "
                                f"says {want}; fix the playlist's frames column or rewrite "
                                "the clip set")
        a.setflags(write=False)
        self._cache[name] = a
        return a

    def tier_of(self, name: str) -> str:
        """"train" or "test" for a clip of this set."""
        tier = self._tiers.get(name)
        if tier is None:
            tier = self.manifest.get("clips", {}).get(name, {}).get("tier")
        if tier is None:
            raise PlaylistError(f"clip {name!r} is not in {self.folder / PLAYLIST}")
        return str(tier)

    def __repr__(self) -> str:
        return (f"ClipSet({str(self.folder)!r}, {len(self.entries)} presentations of "
                f"{len(self._tiers)} clips, {self.stim_rate_hz:g} Hz)")


def _int(row: dict[str, str], key: str, where: str, minimum: int) -> int:
    raw = (row.get(key) or "").strip()
    try:
        v = int(raw)
    except ValueError:
        v = minimum - 1
    if v < minimum:
        raise PlaylistError(f"{where}: {key} = {raw!r}, expected an integer >= {minimum}; "
                            "fix the row or rewrite the clip set")
    return v


def read_playlist(path: str | Path) -> tuple[PlaylistEntry, ...]:
    """The rows of a playlist.csv, checked (header, types, consecutive index, tiers)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PlaylistError(f"{path}: no playlist; make a clip set with `cortexcast clips "
                            f"--out {path.parent}`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaylistError(f"{path}: cannot read the playlist ({exc}); rewrite it with "
                            "`cortexcast clips --out DIR --force`") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS[:5] if c not in header]
    if missing:
        raise PlaylistError(f"{path}: header {','.join(header) or '(empty)'} lacks "
                            f"{', '.join(missing)}; the first line must be "
                            f"{','.join(COLUMNS)}")
    reader.fieldnames = header
    entries: list[PlaylistEntry] = []
    for row in reader:
        where = f"{path} line {reader.line_num}"
        if None in row or any(v is None for v in row.values()):
            raise PlaylistError(f"{where}: expected {len(header)} fields; fix the row")
        index = _int(row, "index", where, 0)
        if index != len(entries):
            raise PlaylistError(f"{where}: index {index}, expected {len(entries)} (rows must "
                                "be numbered 0, 1, 2, ... in presentation order)")
        clip = row["clip"].strip()
        try:
            check_clip_name(clip)
        except PlaylistError as exc:
            raise PlaylistError(f"{where}: {exc}") from None
        tier = row["tier"].strip()
        if tier not in TIERS:
            raise PlaylistError(f"{where}: tier {tier!r}, expected one of {', '.join(TIERS)}")
        entries.append(PlaylistEntry(index, clip, tier, _int(row, "repeat", where, 0),
                                     _int(row, "frames", where, 1),
                                     (row.get("movie") or "").strip()))
    if not entries:
        raise PlaylistError(f"{path}: the playlist has no rows; add presentations or rewrite "
                            "it with `cortexcast clips --out DIR --force`")
    return tuple(entries)


def load_clip_set(folder: str | Path) -> ClipSet:
    """Open and check a clip set folder (every clip a row names must exist with its shape)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PlaylistError(f"clip set folder {folder} does not exist; make one with "
                            f"`cortexcast clips --out {folder}`")
    entries = read_playlist(folder / PLAYLIST)
    manifest: dict[str, Any] = {}
    mpath = folder / MANIFEST
    if mpath.exists():
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PlaylistError(f"{mpath}: not valid JSON ({exc}); rewrite the clip set or "
                                "delete the file") from None
        if not isinstance(manifest, dict) or manifest.get("format", FORMAT) != FORMAT:
            raise PlaylistError(f"{mpath}: not a {FORMAT} manifest; rewrite the clip set")
        rate = manifest.get("stim_rate_hz", DEFAULT_STIM_RATE_HZ)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise PlaylistError(f"{mpath}: stim_rate_hz = {rate!r}, expected a number > 0")
    tiers: dict[str, str] = {}
    frames: dict[str, int] = {}
    for e in entries:
        if tiers.setdefault(e.clip, e.tier) != e.tier or frames.setdefault(e.clip, e.frames) \
                != e.frames:
            raise PlaylistError(f"{folder / PLAYLIST} row {e.index}: clip {e.clip!r} appears "
                                "with different tier or frames in other rows; make them agree")
    for name, n in frames.items():  # cheap header-only check of every clip before a session
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise PlaylistError(f"{folder / PLAYLIST} names clip {name!r} but {path} is "
                                "missing; restore it, remove its rows, or rewrite the set with "
                                "`cortexcast clips --out DIR --force`")
        try:
            head = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PlaylistError(f"{path}: not a readable .npy ({exc}); rewrite the clip "
                                "set") from None
        check_clip_array(head, str(path))
        if head.shape[0] != n:
            raise PlaylistError(f"{path}: {head.shape[0]} frames but {folder / PLAYLIST} "
                                f"says {n}; fix the playlist's frames column or rewrite the "
                                "clip set")
        del head
    return ClipSet(folder, entries, manifest)


def write_playlist(path: str | Path, entries: Sequence[PlaylistEntry]) -> None:
    """Write ``entries`` as playlist.csv (header :data:`COLUMNS`)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for e in entries:
            w.writerow([e.index, e.clip, e.tier, e.repeat, e.frames, e.movie])


def write_clip_set(folder: str | Path, clips: Mapping[str, np.ndarray],
                   entries: Sequence[PlaylistEntry], manifest: Mapping[str, Any]) -> Path:
    """Write ``<clip>.npy`` for each clip, playlist.csv and manifest.json into ``folder``.

    ``manifest`` gets ``"format"`` set; its ``"clips"`` entries get ``"tier"`` and
    ``"frames"`` filled in from the playlist. Movies are the caller's business.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tiers = {e.clip: e.tier for e in entries}
    for e in entries:
        if e.clip not in clips:
            raise PlaylistError(f"playlist row {e.index} names clip {e.clip!r}, which is not "
                                "among the clips to write")
    info: dict[str, Any] = {k: dict(v) for k, v in manifest.get("clips", {}).items()}
    for name, clip in clips.items():
        a = check_clip_array(clip, f"clip {check_clip_name(name)!r}")
        np.save(folder / f"{name}.npy", np.ascontiguousarray(a))
        d = info.setdefault(name, {})
        d.setdefault("tier", tiers.get(name, d.get("tier", "train")))
        d["frames"] = int(a.shape[0])
    write_playlist(folder / PLAYLIST, entries)
    out = {"format": FORMAT, **{k: v for k, v in manifest.items() if k != "clips"},
           "clips": info}
    (folder / MANIFEST).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return folder


__all__ = ["PlaylistEntry", "ClipSet", "PlaylistError", "load_clip_set", "read_playlist",
           "write_playlist", "write_clip_set", "movie_relpath", "check_clip_array",
           "check_clip_name", "STIM_SHAPE", "FORMAT", "PLAYLIST", "MANIFEST", "COLUMNS"]
