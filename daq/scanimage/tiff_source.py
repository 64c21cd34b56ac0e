"""Follow the TIFF files ScanImage writes during an acquisition, frame by frame.

ScanImage logs to ``<folder>/<stem>_<acquisition:05d>_<file:05d>.tif`` (a new file
every ``logFramesPerFile`` frames) and gives every page an ImageDescription of
``key = value`` lines, among them ``frameNumbers`` and ``frameTimestamps_sec``;
with several saved channels each frame is one page per channel, in the order of
``SI.hChannels.channelSave``. :class:`TiffFollower` reads each file as it grows
(:class:`~cortexcast.daq.scanimage.tiff_reader.GrowingTiff`: complete pages only), moves to
the next file once it exists and the current one is finished, and publishes the
configured channel with ScanImage's frame number and timestamp. A number seen
twice is not published again; a jump is logged loudly and counted.

Each file's ScanImage header (:class:`~cortexcast.daq.scanimage.header.ScanImageHeader`) is
read when its first page is: the configured channel must be saved, the pages must have the
header's size, and mROI pages / FastZ volumes become one frame each
(:class:`~cortexcast.daq.scanimage.layout.FrameLayout`, ``plane`` / ``mroi_roi``). The
frame that ScanImage marks as the end of the acquisition mode (``endOfAcquisitionMode = 1``;
``endOfAcquisition = 1`` where there is no mode flag) ends the follower cleanly
(``stop_at_end``), and every frame carries the acquisition's start (``epoch``) in its meta.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from cortexcast.core.config import path_field
from cortexcast.daq.scanimage.frames import (FrameFormatError, FrameNumbers, FrameSourceSettings,
                                  IdleClock, to_uint16)
from cortexcast.daq.scanimage.header import HeaderError, ScanImageHeader, epoch_unix, parse_epoch
from cortexcast.daq.scanimage.layout import FrameLayout
from cortexcast.daq.scanimage.tiff_reader import GrowingTiff, Page
from cortexcast.core.events import ImagingFrame
from cortexcast.daq.source import AcquisitionError, AcquisitionSource

log = logging.getLogger(__name__)

FILE_NAME = re.compile(r"^(?P<stem>.+?)_(?P<acq>\d{5})(?:_(?P<file>\d{5}))?\.tiff?$")


@dataclass(frozen=True)
class TiffSettings(FrameSourceSettings):
    """Following ScanImage's TIFF files (table [daq.tiff])."""

    folder: str = path_field("")
    """The folder ScanImage logs to (hSI.hScan2D.logFilePath); an absolute path."""
    stem: str = ""
    """ScanImage's file stem (hSI.hScan2D.logFileStem); "" = any, if only one is there."""
    start: Literal["latest", "new", "all"] = "latest"
    """"latest": go on from the end of the newest file already there (join a running
    acquisition; earlier frames are skipped unpublished); "new": only files created after
    the daq starts; "all": every file from the first (a finished or replayed acquisition)."""
    poll_s: float = 0.005
    """How often to look for a new page when there is none (s)."""
    settle_s: float = 0.5
    """A file whose last page stays incomplete this long after the next file appeared is
    truncated: the incomplete page is skipped (logged, counted) and the next file read."""

    plane: int = 0
    """Volumes (FastZ, numSlices > 1): 0 = all planes side by side in one frame per volume,
    k = plane k only (1-based)."""
    mroi_roi: int = 0
    """mROI: 0 = all ROI strips side by side (fly-to lines dropped), k = ROI k only."""
    stop_at_end: bool = True
    """End when ScanImage marks the last frame of the acquisition mode (GRAB: its last
    frame; LOOP: the loop's last); False: wait for the next acquisition's files."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.poll_s > 0 or self.settle_s < 0:
            raise ValueError("poll_s must be > 0 and settle_s >= 0")
        if self.plane < 0 or self.mroi_roi < 0:
            raise ValueError("plane and mroi_roi must be >= 0 (0 = all)")


def parse_description(text: str) -> dict[str, str]:
    """ScanImage's per-frame ImageDescription (``key = value`` lines) as a dict of strings."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def frame_info(text: str) -> tuple[int, float]:
    """(frame number, timestamp s) from a page's description; FrameFormatError if absent."""
    d = parse_description(text)
    try:
        number = int(d["frameNumbers"])
        t = float(d["frameTimestamps_sec"])
    except (KeyError, ValueError) as exc:
        raise FrameFormatError(f"description lacks a valid frameNumbers / frameTimestamps_sec "
                               f"({exc!r}); starts {text[:60]!r}", "description") from exc
    return number, t


def saved_channels(software: str) -> list[int] | None:
    """The channels ScanImage saves (SI.hChannels.channelSave in the Software tag), if given."""
    m = re.search(r"SI\.hChannels\.channelSave\s*=\s*([^\n]*)", software)
    return [int(c) for c in re.findall(r"\d+", m.group(1))] if m else None


def scanimage_files(folder: Path, stem: str = "") -> list[tuple[tuple[int, int], Path]]:
    """ScanImage log files in ``folder`` as ((acquisition, file counter), path), in order."""
    found: list[tuple[tuple[int, int], Path]] = []
    stems: set[str] = set()
    for entry in os.scandir(folder):
        m = FILE_NAME.match(entry.name)
        if m and (not stem or m["stem"] == stem):
            stems.add(m["stem"])
            found.append(((int(m["acq"]), int(m["file"] or 1)), Path(entry.path)))
    if len(stems) > 1:
        raise AcquisitionError(f"{folder}: ScanImage files of several stems ({sorted(stems)}); "
                               "set [daq.tiff] stem to the one to follow")
    return sorted(found)


class TiffFollower(AcquisitionSource):
    """An :class:`~cortexcast.daq.source.AcquisitionSource` publishing the frames ScanImage logs to TIFF."""

    def __init__(self, settings: TiffSettings) -> None:
        self.settings = settings
        self.folder = Path(settings.folder)
        self.what = f"ScanImage TIFF files in {self.folder}"
        self.numbers = FrameNumbers(self.what, settings.first_frame_number)
        self.bad: Counter[str] = Counter()
        self.counts = {"files": 0, "pages": 0, "truncated_files": 0}
        self._closed = False
        self._file: GrowingTiff | None = None
        self._final = False  # the writer is done with self._file: judge its last page as is
        self._key: tuple[int, int] | None = None
        self._ignore: set[tuple[int, int]] = set()
        self._last_number: int | None = None
        self._position = 0
        self._first_error = ""
        self.header: ScanImageHeader | None = None
        self._layout: FrameLayout | None = None
        self._ended = False  # the end-of-acquisition frame was read
        self.epoch: str | None = None

    def __enter__(self) -> TiffFollower:
        if not self.settings.folder or not self.folder.is_dir():
            raise AcquisitionError(f"{self.what}: folder not found")
        if self.settings.start != "all":
            existing = scanimage_files(self.folder, self.settings.stem)
            self._ignore = {k for k, _ in existing}
            if self.settings.start == "latest" and existing:
                self._ignore.discard(existing[-1][0])
                self._skip_to_end()
                self._ended = False  # an acquisition that ended before we came: wait
        self._closed = False
        return self

    def stop(self) -> None:
        """Make :meth:`events` return within one poll; safe from any thread (touches no
        socket or file: call :meth:`close` from the thread that ran :meth:`events`)."""
        self._closed = True

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        log.info("%s: %s, bad pages: %s, frame numbers: %s", self.what, self.counts,
                 dict(self.bad) or "none", self.numbers.counts)

    def status(self) -> dict[str, int | str]:
        """Counters for the daq's heartbeat and stats file, and the acquisition's start
        (``si_epoch``, ISO, ScanImage PC local time; "" until a frame was read)."""
        return {"si_files": self.counts["files"], "si_pages": self.counts["pages"],
                "si_truncated_files": self.counts["truncated_files"],
                "si_bad_pages": sum(self.bad.values()),
                "si_dropped_volumes": self._layout.dropped_volumes if self._layout else 0,
                "si_epoch": self.epoch or "", **self.numbers.status("si")}

    def events(self) -> Iterator[ImagingFrame]:
        idle = IdleClock(self.what, self.settings.timeout_s, self.settings.end_after_idle_s)
        stalled: tuple[int, float] | None = None  # (size, since) of an unfinished file
        while not self._closed:
            if self._file is None and not self._open_next():
                if self._idle_end(idle):
                    return
                time.sleep(self.settings.poll_s)
                continue
            assert self._file is not None
            got = False
            for frame in self._read_pages():
                got = True
                idle.frame()
                yield frame
            if self._ended:
                log.info("%s: ScanImage marked the end of the acquisition in %s: source ends",
                         self.what, self._file.path.name if self._file else "the last file")
                return
            if got or self._file is None:  # more may be there; or the file was skipped
                stalled = None
                continue
            stalled = self._maybe_move_on(stalled)
            if self._file is not None:
                if self._idle_end(idle):
                    if self._file is not None and self._file.pending():
                        self._final = True  # acquisition over: judge the last page as it is
                        yield from self._read_pages()
                    return
                time.sleep(self.settings.poll_s)

    def _idle_end(self, idle: IdleClock) -> bool:
        try:
            return idle.should_end()
        except AcquisitionError as exc:
            if self.bad:  # pages came, none usable: say why
                raise AcquisitionError(f"{exc}; {sum(self.bad.values())} page(s) could not be "
                                       f"used, e.g. {self._first_error}") from None
            raise

    def _open_next(self) -> bool:
        for key, path in scanimage_files(self.folder, self.settings.stem):
            if key in self._ignore or (self._key is not None and key <= self._key):
                continue
            try:
                self._file = GrowingTiff(path)
            except OSError as exc:
                raise AcquisitionError(f"{self.what}: cannot open {path.name}: {exc}") from exc
            self._key = key
            self._final = False
            self.counts["files"] += 1
            log.info("%s: following %s", self.what, path.name)
            return True
        return False

    def _skip_to_end(self) -> None:
        """Read (and drop) what the newest file holds now, so publishing starts after it."""
        if not self._open_next():
            return
        skipped = sum(1 for _ in self._read_pages())
        log.info("%s: joined a running acquisition: %d frame(s) already in %s not published",
                 self.what, skipped, self._file.path.name if self._file else "the file")

    def _later_file(self) -> bool:
        return any(k > self._key for k, _ in scanimage_files(self.folder, self.settings.stem)
                   if k not in self._ignore and self._key is not None)

    def _maybe_move_on(self, stalled: tuple[int, float] | None) -> tuple[int, float] | None:
        """Close the current file once a later one exists and this one is finished."""
        f = self._file
        assert f is not None
        if not f.path.exists():
            raise AcquisitionError(f"{self.what}: {f.path.name} vanished while being read "
                                   f"({f.pages} pages read)")
        if not self._later_file():
            return None
        if f.pending():
            size, now = f.size(), time.monotonic()
            if stalled is None or stalled[0] != size:
                return (size, now)
            if now - stalled[1] < self.settings.settle_s:
                return stalled
            if not self._final:  # settled: read its last page once more, as it is
                self._final = True
                return stalled
            self.counts["truncated_files"] += 1
            log.error("%s: %s ends with an incomplete page after %d complete ones (truncated "
                      "file); skipping its tail and moving on", self.what, f.path.name, f.pages)
        f.close()
        self._file = None
        self._final = False
        return None

    def _read_pages(self) -> Iterator[ImagingFrame]:
        f = self._file
        assert f is not None
        try:
            pages = f.read_new(final=self._final)
        except FrameFormatError as exc:
            self._skip_file(exc)
            return
        for page in pages:
            self.counts["pages"] += 1
            if page.index == 0:
                self._read_header(f.path, page)
            try:
                number, t = frame_info(page.description)
            except FrameFormatError as exc:
                self._count_bad(exc)
                continue
            self._position = self._position + 1 if number == self._last_number else 0
            self._last_number = number
            if self._position != self.settings.channel - 1:
                continue
            info = parse_description(page.description)
            end = info.get("endOfAcquisitionMode", info.get("endOfAcquisition", "0"))
            if self.settings.stop_at_end and end.strip() == "1":
                self._ended = True  # this is the last page needed; it ends the source
            frame = self._frame(number, t, page, f.path.name, info)
            if frame is not None:
                yield frame

    def _frame(self, number: int, t: float, page: Page, file: str,
               info: dict[str, str]) -> ImagingFrame | None:
        """The page through the header's layout (mROI strips, volumes) to a frame."""
        assert self._layout is not None
        try:
            out = self._layout.feed(number, t, page.pixels)
        except FrameFormatError as exc:
            self._count_bad(exc)
            return None
        if out is None:
            return None
        volume, t, pixels = out
        index = self.numbers.accept(volume)
        if index is None:
            return None
        meta = {"t_mono_ns": time.monotonic_ns(), "scanimage_frame": number, "file": file}
        if self._layout.header.volumetric:
            meta["scanimage_volume"] = volume
        epoch = parse_epoch(f"epoch = {info['epoch']}") if "epoch" in info else None
        if epoch is not None:
            self.epoch = epoch
            meta["epoch"] = epoch
            meta["epoch_unix"] = epoch_unix(epoch)
        return ImagingFrame(index, t, to_uint16(pixels, self.settings.int16), meta)

    def _read_header(self, path: Path, page: Page) -> None:
        """The header of a new file: checked, and the layout rebuilt when it changed."""
        try:
            header = ScanImageHeader.from_tiff(path, description=page.description)
        except HeaderError as exc:
            if "SI." not in page.software:
                raise
            try:  # no static block (an older writer): the page's Software tag
                header = ScanImageHeader.from_text(page.software, source=str(path),
                                                   description=page.description)
            except HeaderError:
                raise exc from None
        self._check_channels(list(header.channels_saved))
        old = self._layout
        if old is not None and old.header == dataclasses.replace(
                header, source=old.header.source, epoch=old.header.epoch):
            return  # same settings: keep the layout (a volume may span two files)
        layout = FrameLayout(header, plane=self.settings.plane, mroi_roi=self.settings.mroi_roi,
                             first=self.settings.first_frame_number)
        if old is not None and old.frame_shape != layout.frame_shape:
            raise HeaderError(f"{self.what}: {path.name} holds {layout.frame_shape[0]}x"
                              f"{layout.frame_shape[1]} frames ({header.describe()}), the "
                              f"acquisition before {old.frame_shape[0]}x{old.frame_shape[1]}: "
                              "the decoder's ROI set fits one size only; restart the stack "
                              "with the ROI set for the new settings")
        if old is None:
            log.info("%s: ScanImage header: %s", self.what, header.describe())
        self.header, self._layout = header, layout

    def _check_channels(self, channels: list[int] | None) -> None:
        if channels is not None and self.settings.channel > len(channels):
            raise AcquisitionError(f"{self.what}: channel {self.settings.channel} requested "
                                   f"([daq.tiff] channel) but ScanImage saves {channels}")

    def _count_bad(self, exc: FrameFormatError) -> None:
        if not self.bad:
            self._first_error = str(exc)
        if not self.bad[exc.kind]:
            log.error("%s: skipping a bad page: %s (further ones counted, not logged)",
                      self.what, exc)
        self.bad[exc.kind] += 1

    def _skip_file(self, exc: FrameFormatError) -> None:
        """A page that is complete but unreadable: the rest of this file is skipped."""
        self._count_bad(exc)
        assert self._file is not None
        log.error("%s: skipping the rest of %s", self.what, self._file.path.name)
        self._file.close()
        self._file = None
        self._final = False
