"""The imaging frames of a recorded session, one at a time, from a recording or ScanImage's TIFFs.

:func:`open_session_frames` gives a :class:`SessionFrames` over either source:

* a cortexcast recording (``.ccr``): the ``frames`` topic, decoded with the one event codec
  (:func:`cortexcast.core.events.from_message`); each frame keeps the index the daq gave it;
* a folder of ScanImage TIFF files (``<stem>_<acq>_<file>.tif``, in acquisition and file
  order; any ``*.tif`` in name order when none is named so): page ``k`` of the chosen channel
  is imaging frame ``first_frame + k``. ScanImage's int16 pixels become uint16 as the live
  TIFF source does (:func:`cortexcast.daq.scanimage.frames.to_uint16`, negatives -> 0).

Frames are read one at a time (a 30-min 512x512 session is ~28 GB); ``len`` and
``frame_shape`` come from the index / the TIFF directory chain without reading pixels.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
from pathlib import Path
from typing import Iterator, TypeVar

import numpy as np

from cortexcast.core.errors import CortexcastError
from cortexcast.core.events import ImagingFrame, from_message
from cortexcast.core.message import MessageError
from cortexcast.daq.scanimage.frames import FrameFormatError, to_uint16
from cortexcast.daq.scanimage.tiff_reader import GrowingTiff, Page, _Incomplete
from cortexcast.daq.scanimage.tiff_source import FILE_NAME, saved_channels, scanimage_files
from cortexcast.daq.source import AcquisitionError
from cortexcast.stream.recording import RecordingError, RecordingReader

log = logging.getLogger(__name__)
T = TypeVar("T")

FRAMES_TOPIC = "frames"


class SessionFramesError(CortexcastError, ValueError):
    """A session's frames cannot be read: no frames in the recording, no/unreadable TIFFs."""


class SessionFrames:
    """Imaging frames of one session. ``iter_frames`` yields ``(imaging frame, pixels)``."""

    source: str
    """The file or folder the frames come from (named in messages)."""
    frame_shape: tuple[int, int]
    skipped: int = 0
    """Frames that could not be read (corrupt record, bad page) and were skipped."""

    def __len__(self) -> int:
        raise NotImplementedError

    def iter_frames(self, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """Every ``step``-th frame, in order: (imaging-frame index, (H, W) pixels)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the files (idempotent)."""

    def __enter__(self) -> SessionFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingFrames(SessionFrames):
    """The ``frames`` topic of a cortexcast recording."""

    def __init__(self, path: str | Path, reader: RecordingReader | None = None) -> None:
        self.source = str(path)
        self._own = reader is None
        try:
            self.reader = RecordingReader(path) if reader is None else reader
        except RecordingError as exc:
            raise SessionFramesError(f"{exc}; pass the .ccr file `cortexcast record` wrote") \
                from exc
        self._rows = self.reader.select([FRAMES_TOPIC])
        if not len(self._rows):
            self.close()
            raise SessionFramesError(
                f"{path} holds no imaging frames (topics: "
                f"{', '.join(self.reader.topics) or 'none'}); record the session with the "
                "daq's frames (the record process's default topics), or give the ScanImage "
                "files with --tiff-folder")
        first = self._frame(int(self._rows[0]))
        if first is None:
            self.close()
            raise SessionFramesError(f"{path}: the first imaging frame does not decode")
        self.frame_shape = (int(first.pixels.shape[0]), int(first.pixels.shape[1]))
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._rows)

    def _frame(self, row: int) -> ImagingFrame | None:
        try:
            event = from_message(self.reader.message(row))
        except (RecordingError, MessageError) as exc:
            if not self.skipped:
                log.error("%s: skipping an unreadable frame (record %d): %s (further ones "
                          "counted)", self.source, row, exc)
            self.skipped += 1
            return None
        return event if isinstance(event, ImagingFrame) else None

    def iter_frames(self, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        for row in self._rows[::max(1, int(step))]:
            frame = self._frame(int(row))
            if frame is not None:
                yield frame.index, frame.pixels

    def close(self) -> None:
        if self._own:
            self.reader.close()


class _FinishedTiff(GrowingTiff):
    """A TIFF file that is completely written, read one page at a time.

    :meth:`GrowingTiff.read_new` returns every page of a file at once, and ScanImage may log
    a whole session into one file; this walks the same parser page by page.
    """

    def iter_pages(self) -> Iterator[Page]:
        self._final = True
        size = self.size()
        while True:
            try:
                page = self._next(size)
            except _Incomplete:
                log.error("%s ends with an incomplete page after %d complete ones (truncated "
                          "file); its tail is skipped", self.path, self.pages)
                return
            if page is None:
                return
            yield page


def count_tiff_pages(path: Path) -> int:
    """Pages of a TIFF/BigTIFF file, from its IFD chain alone (no pixels read)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(0)
        head = fh.read(16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            raise SessionFramesError(f"{path} is not a TIFF file")
        bo = "<" if head[:2] == b"II" else ">"
        big = struct.unpack(bo + "H", head[2:4])[0] == 43
        ptr_fmt, ptr_n = (bo + "Q", 8) if big else (bo + "I", 4)
        count_fmt, count_n, entry_n = (bo + "Q", 8, 20) if big else (bo + "H", 2, 12)
        ptr_pos, pages, seen = (8 if big else 4), 0, set()
        while True:
            fh.seek(ptr_pos)
            raw = fh.read(ptr_n)
            if len(raw) < ptr_n:
                return pages
            offset = struct.unpack(ptr_fmt, raw)[0]
            if offset == 0 or offset in seen or offset + count_n > size:
                return pages
            seen.add(offset)
            fh.seek(offset)
            n = struct.unpack(count_fmt, fh.read(count_n))[0]
            ptr_pos = offset + count_n + n * entry_n
            if n == 0 or ptr_pos + ptr_n > size:
                return pages
            pages += 1


def tiff_files(folder: Path, stem: str = "") -> list[Path]:
    """ScanImage's files in ``folder`` in acquisition and file order; when none is named as
    ScanImage names them, every ``*.tif``/``*.tiff`` in name order."""
    try:
        named = scanimage_files(folder, stem)
    except AcquisitionError as exc:
        raise SessionFramesError(f"{exc} (--tiff-stem)") from exc
    if named:
        return [p for _, p in named]
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in (".tif", ".tiff") and not FILE_NAME.match(p.name))


class TiffFrames(SessionFrames):
    """ScanImage TIFF files: page ``k`` of ``channel`` is imaging frame ``first_frame + k``."""

    def __init__(self, folder: str | Path, first_frame: int = 0, stem: str = "",
                 channel: int = 1) -> None:
        self.folder = Path(folder)
        self.source = str(self.folder)
        if not self.folder.is_dir():
            raise SessionFramesError(f"TIFF folder {self.folder} does not exist; pass the "
                                     "folder ScanImage logged this session to (--tiff-folder)")
        self.files = tiff_files(self.folder, stem)
        if not self.files:
            raise SessionFramesError(f"{self.folder} holds no TIFF files; pass the folder "
                                     "ScanImage logged this session to (--tiff-folder)")
        if channel < 1:
            raise SessionFramesError(f"channel must be >= 1, got {channel}")
        self.first_frame, self.channel = int(first_frame), int(channel)
        self.skipped = 0
        with _FinishedTiff(self.files[0]) as tiff:
            try:
                page = next(tiff.iter_pages(), None)
            except FrameFormatError as exc:
                raise SessionFramesError(f"{exc}") from exc
        if page is None:
            raise SessionFramesError(f"{self.files[0]} holds no complete page")
        chans = saved_channels(page.software)
        self.channels = len(chans) if chans else 1
        if self.channel > self.channels:
            raise SessionFramesError(f"{self.files[0]}: channel {channel} requested but "
                                     f"ScanImage saved channels {chans}")
        self.frame_shape = (int(page.pixels.shape[0]), int(page.pixels.shape[1]))
        self.pages = [count_tiff_pages(p) for p in self.files]
        self._frames = sum(self.pages) // self.channels
        self._closed = False

    def __len__(self) -> int:
        return self._frames

    def span(self) -> tuple[int, int]:
        """(first, last) imaging frame the files hold."""
        return self.first_frame, self.first_frame + len(self) - 1

    def file_of(self, imaging_frame: int) -> Path:
        """The file that holds ``imaging_frame`` (the nearest file when outside)."""
        page = (imaging_frame - self.first_frame) * self.channels
        for path, n in zip(self.files, self.pages):
            if page < n:
                return path
            page -= n
        return self.files[-1]

    def iter_frames(self, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        step = max(1, int(step))
        k = 0  # page counter over all files
        for path in self.files:
            with _FinishedTiff(path) as tiff:
                pages = tiff.iter_pages()
                while True:
                    try:
                        page = next(pages, None)
                    except FrameFormatError as exc:
                        log.error("%s: %s; the rest of the file is skipped", path, exc)
                        self.skipped += 1
                        break
                    if page is None:
                        break
                    frame, ch = divmod(k, self.channels)
                    k += 1
                    if ch != self.channel - 1 or frame % step:
                        continue
                    if page.pixels.shape != self.frame_shape:
                        self.skipped += 1
                        log.error("%s: page %d is %s, not %s; skipped", path, page.index,
                                  page.pixels.shape, self.frame_shape)
                        continue
                    yield self.first_frame + frame, to_uint16(page.pixels)


def open_session_frames(recording: str | Path | None = None,
                        tiff_folder: str | Path | None = None, *, first_frame: int = 0,
                        stem: str = "", channel: int = 1) -> SessionFrames:
    """The session's frames: from ``tiff_folder`` when given (``first_frame``: the imaging
    frame of its first page; ``stem``/``channel`` as ``[daq.tiff]``), else the recording's
    ``frames`` topic. Raises :class:`SessionFramesError` naming the file and the fix."""
    if tiff_folder is not None:
        return TiffFrames(tiff_folder, first_frame, stem, channel)
    if recording is None:
        raise SessionFramesError("give a recording (.ccr) or a TIFF folder")
    if not Path(recording).is_file():
        raise SessionFramesError(f"recording {recording} does not exist; pass the .ccr file "
                                 "`cortexcast record` wrote")
    return RecordingFrames(recording)


def read_ahead(items: Iterator[T], depth: int = 16) -> Iterator[T]:
    """``items`` read ahead on a thread, up to ``depth`` of them, so that reading (disk,
    checksums, decoding) overlaps the work on the frames (export's features, the ROI
    detection's registration). Exceptions are re-raised in the caller; ``depth`` 0: no thread."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    thread = threading.Thread(target=work, name="session-read", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5.0)
