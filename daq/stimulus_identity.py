"""Stimulus identity: which clip and frame the stimulus computer showed -> StimulusFrame events.

The stimulus program tells us, per flip (or per batch of flips), with a tiny JSON object —
sent as a UDP datagram (``mode = "udp"``) or written as a line of its log file (``mode =
"log"``; anything before the first ``{`` on a line, e.g. a timestamp, is ignored)::

    {"v": 1, "frame": 1234, "clip": "clip_0007", "clip_frame": 17, "t": 41.133}

``frame`` is the global stimulus frame index (the one the sync box / photodiode counts),
``clip``/``clip_frame`` name what was shown, ``t`` (optional) is the flip time in the stimulus
computer's clock in seconds (else the receive time). A datagram may hold a JSON list of such
objects. When ``clip_library`` holds ``<clip>.npy`` ((frames, 36, 64) uint8), the event
carries those pixels; otherwise a mid-grey placeholder with the ids, so the display can still
label the ground truth. Bad messages are counted and skipped (the first few logged).
"""

from __future__ import annotations

from cortexcast.core.config import path_field
from cortexcast.core.errors import CortexcastError
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np

from cortexcast.core.events import StimulusFrame

from cortexcast.daq.source import AcquisitionError, AcquisitionSource
from cortexcast.daq.udp_listener import LOOPBACK_SENDERS, UdpListener, check_listen, parse_senders

log = logging.getLogger(__name__)
STIM_SHAPE = (36, 64)
PLACEHOLDER_LEVEL = 128


@dataclass(frozen=True)
class StimulusSettings:
    mode: Literal["udp", "log"] = "udp"
    listen: str = "0.0.0.0:5557"
    """UDP host:port to receive the stimulus computer's messages on (mode "udp")."""
    allowed_senders: tuple[str, ...] = LOOPBACK_SENDERS
    """IP addresses or networks whose datagrams are read (mode "udp"); others are dropped,
    counted and logged once a minute. Default: this computer only; add the stimulus computer's
    address (e.g. "10.0.0.5" or "10.0.0.0/24"), or "*" for any sender."""
    log_file: str = path_field("")
    """The stimulus program's log file to follow (mode "log")."""
    from_start: bool = False
    """Log mode: read the file from its start (default: only lines written from now on)."""
    clip_library: str = path_field("")
    """Folder with <clip>.npy movies ((frames, 36, 64) uint8): events carry the real pixels."""
    poll_s: float = 0.05
    """How often the log file is checked for new lines / the UDP socket for a stop request."""

    def __post_init__(self) -> None:
        if self.mode == "log" and not self.log_file:
            raise ValueError("mode = 'log' needs 'log_file' (the stimulus program's log)")
        if self.mode == "udp":
            check_listen(self.listen)
        parse_senders(self.allowed_senders, "allowed_senders")
        if self.poll_s <= 0:
            raise ValueError("poll_s must be > 0")


class MessageError(CortexcastError, ValueError):
    """A stimulus-identity message does not follow the schema (the message says how)."""


def parse_message(obj: Any) -> list[tuple[int, str, int, float | None]]:
    """(frame, clip, clip_frame, t) for each entry of a decoded message (object or list)."""
    items = obj if isinstance(obj, list) else [obj]
    out = []
    for it in items:
        if not isinstance(it, dict):
            raise MessageError(f"expected a JSON object, got {type(it).__name__}")
        if it.get("v", 1) != 1:
            raise MessageError(f"unknown schema version {it.get('v')!r} (this reads v 1)")
        try:
            frame, clip, clip_frame = it["frame"], it["clip"], it["clip_frame"]
        except KeyError as exc:
            raise MessageError(f"missing key {exc.args[0]!r}") from None
        t = it.get("t")
        if not (isinstance(frame, int) and frame >= 0 and isinstance(clip, str)
                and isinstance(clip_frame, int) and clip_frame >= 0
                and (t is None or isinstance(t, (int, float))) and not isinstance(frame, bool)):
            raise MessageError("frame and clip_frame must be integers >= 0, clip a string, "
                               "t a number")
        out.append((frame, clip, clip_frame, None if t is None else float(t)))
    return out


class ClipLibrary:
    """Pixels of ``clip``'s frame ``k`` from ``<folder>/<clip>.npy``; a placeholder otherwise."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder) if folder else None
        if self.folder is not None and not self.folder.is_dir():
            raise AcquisitionError(f"stimulus clip_library {folder!r} is not a folder")
        self._clips: dict[str, np.ndarray | None] = {}
        self.placeholders = 0
        self._placeholder = np.full(STIM_SHAPE, PLACEHOLDER_LEVEL, np.uint8)

    def _load(self, clip: str) -> np.ndarray | None:
        if clip in self._clips:
            return self._clips[clip]
        movie = None
        if self.folder is not None and clip and "/" not in clip and "\\" not in clip:
            path = self.folder / f"{clip}.npy"
            try:
                movie = np.load(path, mmap_mode="r")
                if movie.ndim != 3 or movie.shape[1:] != STIM_SHAPE or movie.dtype != np.uint8:
                    log.warning("%s: shape %s %s, expected (frames, 36, 64) uint8: showing a "
                                "placeholder", path, movie.shape, movie.dtype)
                    movie = None
            except (OSError, ValueError) as exc:
                log.warning("stimulus clip %r not in the clip library (%s): showing a "
                            "placeholder", clip, exc)
        self._clips[clip] = movie
        return movie

    def pixels(self, clip: str, clip_frame: int) -> np.ndarray:
        movie = self._load(clip)
        if movie is None or clip_frame >= movie.shape[0]:
            self.placeholders += 1
            return self._placeholder
        return np.ascontiguousarray(movie[clip_frame])


class StimulusIdentitySource(AcquisitionSource):
    """StimulusFrame events from the stimulus computer (context manager; ``events()``)."""

    def __init__(self, settings: StimulusSettings, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.s = settings
        self.library = ClipLibrary(settings.clip_library)
        self._monotonic = monotonic
        self._listener: UdpListener | None = None
        self._closed = False
        self.received = self.bad = 0
        self.following = threading.Event()
        """Set once the log file is open and positioned (new lines from then on are read)."""

    @property
    def address(self) -> tuple[str, int]:
        """The bound UDP address (port 0 in the settings picks a free one)."""
        if self._listener is None:
            raise RuntimeError("not open")
        return self._listener.address

    def status(self) -> dict[str, int]:
        return {"stimulus_ids": self.received, "stimulus_bad": self.bad,
                "stimulus_placeholders": self.library.placeholders,
                "stimulus_refused": self._listener.refused if self._listener is not None else 0}

    def __enter__(self) -> StimulusIdentitySource:
        self._closed = False
        if self.s.mode == "udp":
            self._listener = UdpListener(
                self.s.listen, self.s.poll_s, what="stimulus identity",
                setting="[daq.stimulus] listen",
                allowed=parse_senders(self.s.allowed_senders, "allowed_senders"),
                allowed_setting="[daq.stimulus] allowed_senders")
        elif not Path(self.s.log_file).parent.is_dir():
            raise AcquisitionError(f"stimulus identity: the folder of log_file "
                                   f"{self.s.log_file!r} does not exist")
        return self

    def close(self) -> None:
        """Stop :meth:`events` (from any thread)."""
        self._closed = True
        if self._listener is not None:
            self._listener.close()

    def events(self) -> Iterator[StimulusFrame]:
        raw = self._udp() if self.s.mode == "udp" else self._log_lines()
        for text in raw:
            yield from self._decode(text)

    def _decode(self, text: bytes) -> Iterator[StimulusFrame]:
        try:
            entries = parse_message(json.loads(text))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, MessageError
            self.bad += 1
            if self.bad <= 3 or self.bad % 1000 == 0:
                log.warning("stimulus identity: skipping a bad message (%d so far): %s: %r",
                            self.bad, exc, text[:80])
            return
        now = self._monotonic()
        for frame, clip, clip_frame, t in entries:
            self.received += 1
            yield StimulusFrame(frame, now if t is None else t,
                                self.library.pixels(clip, clip_frame), clip, clip_frame)

    def _udp(self) -> Iterator[bytes]:
        if self._listener is None:
            return
        try:
            yield from self._listener.datagrams()
        except OSError as exc:
            raise AcquisitionError(f"stimulus identity: UDP receive failed: {exc}") from exc

    def _log_lines(self) -> Iterator[bytes]:
        """Complete lines appended to the log (follows truncation / re-creation)."""
        path = Path(self.s.log_file)
        fh = None
        buf = b""
        from_start = self.s.from_start  # a file that appears or replaces the old one: all of it
        waiting_logged = False
        try:
            while not self._closed:
                if fh is None:
                    try:
                        fh = path.open("rb")
                    except FileNotFoundError:
                        if not waiting_logged:
                            log.info("stimulus identity: waiting for %s to appear", path)
                            waiting_logged = True
                        from_start = True
                        time.sleep(self.s.poll_s)  # polling for the file, with a stop check
                        continue
                    if not from_start:
                        fh.seek(0, os.SEEK_END)
                    buf = b""
                    self.following.set()
                chunk = fh.read(65536)
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if b"{" in line:
                            yield line[line.index(b"{"):]
                    continue
                try:
                    st = path.stat()
                    rotated = st.st_ino != os.fstat(fh.fileno()).st_ino or st.st_size < fh.tell()
                except FileNotFoundError:
                    rotated = True
                if rotated:  # replaced or truncated: read the new file from its start
                    fh.close()
                    fh, from_start = None, True
                    continue
                time.sleep(self.s.poll_s)  # the polling interval of a file follower
        finally:
            if fh is not None:
                fh.close()
