"""Side-by-side stimulus | reconstruction movies (GIF, or MP4 where imageio-ffmpeg is there).

:func:`write_movie` takes arrays of stimulus and reconstruction frames (paired: row ``k`` of
each shows the same stimulus frame) and writes them with the display's own composite
(:func:`cortexcast.display.render.compose`: stimulus, a dark strip, the reconstruction), so a
movie looks like the live display. ``cortexcast export --movie`` pairs a recorded session's
frames with :func:`session_pairs`; other commands (``evaluate`` reports of chosen clips) can
call :func:`write_movie` with their own arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cortexcast.core.errors import CortexcastError
from cortexcast.core.events import Reconstruction, StimulusFrame, from_message
from cortexcast.core.message import MessageError
from cortexcast.display.render import FrameSaver, compose, to_uint8
from cortexcast.display.state import View
from cortexcast.stream.recording import RecordingError, RecordingReader

log = logging.getLogger("export")

FORMATS = (".gif", ".mp4")
_MACRO_BLOCK = 16
"""MP4 (H.264, yuv420p) frame sizes are padded to a multiple of this."""


class MovieError(CortexcastError, ValueError):
    """A movie cannot be made as asked (format, missing encoder, no frames)."""


def mp4_available() -> bool:
    """Whether MP4 can be written (imageio-ffmpeg and its ffmpeg binary are installed)."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    return True


def check_target(path: str | Path) -> Path:
    """``path`` if its suffix is a format this machine can write; MovieError naming the fix."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise MovieError(f"{p}: a movie is written as .gif or .mp4, not {suffix or 'no suffix'!r}")
    if suffix == ".mp4" and not mp4_available():
        raise MovieError(f"{p}: MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg, in the dev "
                         "extra); or write a .gif")
    return p


def composite(stimulus: np.ndarray | None, reconstruction: np.ndarray | None,
              scale: int) -> np.ndarray:
    """One movie frame: the display's side-by-side composite, uint8 (H*s, (2W+1)*s)."""
    view = View(0, None if stimulus is None else to_uint8(np.asarray(stimulus),
                                                          np.shape(stimulus)),
                None, None if reconstruction is None else np.asarray(reconstruction,
                                                                     np.float32),
                None, None, None, True)
    return compose(view, scale)


def write_movie(path: str | Path, stimulus: Sequence[np.ndarray] | np.ndarray,
                reconstruction: Sequence[np.ndarray | None] | np.ndarray, *, fps: float = 30.0,
                scale: int = 6) -> int:
    """Write ``stimulus[k] | reconstruction[k]`` for every ``k`` as a GIF or MP4 (by suffix).

    Frames are (H, W), stimulus uint8 or float, reconstruction float on the 0..255 scale
    (NaN or a None entry: a black half, as the display shows a missing plane). Returns the
    number of frames written; MovieError for an unknown suffix, MP4 without imageio-ffmpeg,
    unequal lengths or no frames.
    """
    target = check_target(path)
    if len(stimulus) != len(reconstruction):
        raise MovieError(f"{len(stimulus)} stimulus frames but {len(reconstruction)} "
                         "reconstructions: pair them first")
    if not len(stimulus):
        raise MovieError(f"{target}: no frames to write")
    if fps <= 0 or scale < 1:
        raise MovieError(f"fps must be > 0 and scale >= 1, got {fps}, {scale}")
    target.parent.mkdir(parents=True, exist_ok=True)
    frames = (composite(s, r, scale) for s, r in zip(stimulus, reconstruction))
    if target.suffix.lower() == ".gif":
        saver = FrameSaver(target, fps)
        try:
            for image in frames:
                saver.add(image)
        finally:
            saver.close()
        return saver.frames
    return _write_mp4(target, frames, fps)


def _write_mp4(target: Path, frames: object, fps: float) -> int:
    import imageio_ffmpeg

    writer = None
    n = 0
    try:
        for image in frames:  # type: ignore[attr-defined]
            h, w = image.shape
            ph, pw = -h % _MACRO_BLOCK, -w % _MACRO_BLOCK
            if ph or pw:  # pad rather than let ffmpeg rescale (it would blur the pixels)
                image = np.pad(image, ((0, ph), (0, pw)))
            if writer is None:
                writer = imageio_ffmpeg.write_frames(
                    str(target), (image.shape[1], image.shape[0]), pix_fmt_in="gray",
                    fps=fps, quality=8, macro_block_size=1, ffmpeg_log_level="error")
                writer.send(None)  # start the generator
            writer.send(np.ascontiguousarray(image))
            n += 1
    finally:
        if writer is not None:
            writer.close()
    return n


@dataclass
class SessionPairs:
    """A recorded session's stimulus frames and the reconstruction of each (None: none)."""

    stim_index: np.ndarray
    """(T,) global stimulus frame of each movie frame."""
    t: np.ndarray
    """(T,) seconds from the session's first stimulus frame."""
    stimulus: list[np.ndarray]
    reconstruction: list[np.ndarray | None]
    fps: float

    @property
    def paired(self) -> int:
        return sum(r is not None for r in self.reconstruction)


def _events(reader: RecordingReader, topic: str, kind: type,
            rows: np.ndarray | None = None) -> Iterator[tuple[int, Any]]:
    for row in reader.select([topic]) if rows is None else rows:
        try:
            ev = from_message(reader.message(int(row)))
        except (RecordingError, MessageError):
            continue
        if isinstance(ev, kind):
            yield int(row), ev


def session_pairs(recording: str | Path, *, frames: int | None = None,
                  start_s: float | None = None, stop_s: float | None = None) -> SessionPairs:
    """Each stimulus frame of ``recording`` (in index order) with the reconstruction of that
    stimulus frame (the latest one, if several; None if none), from ``start_s`` to ``stop_s``
    seconds after the first stimulus frame and at most ``frames`` of them.

    Only the chosen frames' pixels are kept (reconstructions as uint8).
    """
    try:
        reader = RecordingReader(recording)
    except RecordingError as exc:
        raise MovieError(f"{exc}; pass the .ccr file `cortexcast record` wrote") from exc
    with reader:
        seen: dict[int, tuple[float, int]] = {}  # stimulus frame -> (t, row), first wins
        for row, ev in _events(reader, "stimulus", StimulusFrame):
            seen.setdefault(int(ev.index), (float(ev.t), row))
        if not seen:
            raise MovieError(f"{recording} holds no stimulus frames (topics: "
                             f"{', '.join(reader.topics) or 'none'}); record the daq's "
                             "'stimulus' topic")
        t_first = min(t for t, _ in seen.values())
        order = [j for j in sorted(seen)
                 if (start_s is None or seen[j][0] - t_first >= start_s)
                 and (stop_s is None or seen[j][0] - t_first <= stop_s)][:frames or None]
        if not order:
            raise MovieError(f"{recording}: no stimulus frame between {start_s} and {stop_s} "
                             "s after the first one")
        rows = np.array([seen[j][1] for j in order], np.int64)
        stims = {int(ev.index): ev.pixels for _, ev in _events(reader, "stimulus",
                                                               StimulusFrame, rows)}
        wanted = set(order)
        recon: dict[int, np.ndarray] = {}
        for _, ev in _events(reader, "reconstruction", Reconstruction):
            if ev.stim_frame in wanted:
                recon[ev.stim_frame] = to_uint8(ev.pixels, ev.pixels.shape)
        if not recon:
            log.warning("%s holds no reconstruction of these stimulus frames (was the "
                        "decoder's 'reconstruction' topic recorded?): the right half is black",
                        recording)
    t = np.array([seen[j][0] - t_first for j in order], np.float64)
    d = np.diff(t)
    d = d[d > 0]
    fps = float(1.0 / np.median(d)) if d.size else 30.0
    return SessionPairs(np.array(order, np.int64), t, [stims[j] for j in order],
                        [recon.get(j) for j in order], fps)


def write_session_movie(recording: str | Path, out: str | Path, *, frames: int | None = None,
                        start_s: float | None = None, stop_s: float | None = None,
                        fps: float | None = None, scale: int = 6) -> SessionPairs:
    """``cortexcast export --movie``: the session's side-by-side movie; returns the pairs."""
    check_target(out)
    pairs = session_pairs(recording, frames=frames, start_s=start_s, stop_s=stop_s)
    write_movie(out, pairs.stimulus, pairs.reconstruction, fps=fps or pairs.fps, scale=scale)
    return pairs
