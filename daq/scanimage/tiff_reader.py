"""Read the pages of a TIFF / BigTIFF file while another process is still appending to it.

ScanImage appends one IFD + one frame of pixels per channel and frame, and links
it from the previous IFD's "next IFD" pointer. :class:`GrowingTiff` walks that
chain from where it stopped last time and returns only *complete* pages: a page
whose pointer, IFD, description or pixel bytes reach past the current end of the
file is "not yet written" (:meth:`GrowingTiff.pending` is True) and is tried again
on the next call, so a half-written frame is never published. It needs nothing
but the file (no tifffile), reads each byte once, and raises
:class:`TiffFormatError` for a page that is complete on disk but is not a plain
uncompressed 16-bit grey image.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cortexcast.daq.scanimage.frames import FrameFormatError

WIDTH, LENGTH, BITS, COMPRESSION, DESCRIPTION = 256, 257, 258, 259, 270
STRIP_OFFSETS, SAMPLES, STRIP_COUNTS, SOFTWARE, SAMPLE_FORMAT = 273, 277, 279, 305, 339
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
              13: 4, 16: 8, 17: 8, 18: 8}
TYPE_CODES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}
MAX_ENTRIES = 4096


class TiffFormatError(FrameFormatError):
    """A page is completely on disk but cannot be a ScanImage frame (the text says why)."""

    def __init__(self, text: str) -> None:
        super().__init__(text, "tiff")


class _Incomplete(Exception):
    """The next page is not completely written yet."""


@dataclass(frozen=True)
class Page:
    """One complete TIFF page: its index in the file, text tags and (H, W) pixels."""

    index: int
    description: str
    software: str
    pixels: np.ndarray


class GrowingTiff:
    """The pages of one TIFF file, read as they are completed. Use :meth:`read_new`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 (closed in close())
        self._big: bool | None = None
        self._bo = "<"
        self._ptr_pos = 0  # where the pointer to the next IFD lives
        self.pages = 0
        self._pending = False
        self._final = False

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> GrowingTiff:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def size(self) -> int:
        return os.fstat(self._fh.fileno()).st_size

    def pending(self) -> bool:
        """True when a page has been started but is not completely on disk yet."""
        return self._pending

    def read_new(self, final: bool = False) -> list[Page]:
        """Every page completed since the last call, in file order.

        ``final``: the writer is done with this file (a later file exists, or acquisition
        ended), so the newest page is judged as it is rather than waited for.
        """
        self._final = final
        out: list[Page] = []
        size = self.size()
        while True:
            try:
                page = self._next(size)
            except _Incomplete:
                self._pending = True
                return out
            self._pending = False
            if page is None:
                return out
            out.append(page)

    # -- parsing ---------------------------------------------------------------

    def _read(self, offset: int, n: int, size: int) -> bytes:
        if offset + n > size:
            raise _Incomplete
        self._fh.seek(offset)
        data = self._fh.read(n)
        if len(data) < n:
            raise _Incomplete
        return data

    def _header(self, size: int) -> None:
        if size == 0:
            raise _Incomplete
        head = self._read(0, 8, size)
        if head[:2] not in (b"II", b"MM"):
            raise TiffFormatError(f"{self.path}: not a TIFF file (starts {head[:4]!r})")
        self._bo = "<" if head[:2] == b"II" else ">"
        version = struct.unpack(self._bo + "H", head[2:4])[0]
        if version not in (42, 43):
            raise TiffFormatError(f"{self.path}: TIFF version {version} (expected 42 or 43)")
        self._big = version == 43
        self._ptr_pos = 8 if self._big else 4

    def _next(self, size: int) -> Page | None:
        if self._big is None:
            if size == 0:
                return None
            self._header(size)
        big, bo = self._big, self._bo
        ptr_fmt, ptr_n = (bo + "Q", 8) if big else (bo + "I", 4)
        offset = struct.unpack(ptr_fmt, self._read(self._ptr_pos, ptr_n, size))[0]
        if offset == 0:
            return None
        count_fmt, count_n, entry_n = (bo + "Q", 8, 20) if big else (bo + "H", 2, 12)
        n = struct.unpack(count_fmt, self._read(offset, count_n, size))[0]
        if n == 0:
            raise _Incomplete  # an IFD being written; a file that stays so is truncated
        if n > MAX_ENTRIES:
            raise TiffFormatError(f"{self.path}: IFD at byte {offset} claims {n} entries")
        raw = self._read(offset + count_n, n * entry_n + ptr_n, size)
        tags = {}
        for i in range(n):
            e = raw[i * entry_n:(i + 1) * entry_n]
            if big:
                tag, typ, cnt = struct.unpack(bo + "HHQ", e[:12])
                inline = e[12:20]
            else:
                tag, typ, cnt = struct.unpack(bo + "HHI", e[:8])
                inline = e[8:12]
            tags[tag] = (typ, cnt, inline)
        # tifffile (and so perhaps other writers) links a page from the previous one first,
        # writes its pixels, and writes the IFD with its tag data last: the newest IFD lies
        # inside the file and fills in, front to back, while we read it. So the newest page
        # (no next page linked yet) that looks malformed or has text still to come is
        # incomplete, not bad; once the writer links a next page, it is final.
        newest = struct.unpack(ptr_fmt, raw[-ptr_n:])[0] == 0 and not self._final
        try:
            page = self._page(tags, size)
        except TiffFormatError:
            if newest:
                raise _Incomplete from None
            raise
        if newest and not self._text_complete(tags, size):
            raise _Incomplete
        self._ptr_pos = offset + count_n + n * entry_n
        self.pages += 1
        return page

    def _value(self, tags: dict, tag: int, size: int) -> bytes | None:
        if tag not in tags:
            return None
        typ, cnt, inline = tags[tag]
        nbytes = TYPE_SIZES.get(typ, 1) * cnt
        if nbytes <= len(inline):
            return inline[:nbytes]
        ptr = struct.unpack(self._bo + ("Q" if self._big else "I"), inline)[0]
        return self._read(ptr, nbytes, size)

    def _ints(self, tags: dict, tag: int, size: int, default: int | None = None) -> list[int]:
        data = self._value(tags, tag, size)
        if data is None:
            if default is None:
                raise TiffFormatError(f"{self.path}: page {self.pages} lacks TIFF tag {tag}")
            return [default]
        typ, cnt, _ = tags[tag]
        if typ not in TYPE_CODES:
            raise TiffFormatError(f"{self.path}: tag {tag} has non-integer type {typ}")
        if cnt == 0:
            raise TiffFormatError(f"{self.path}: page {self.pages}: tag {tag} has no values")
        return list(struct.unpack(f"{self._bo}{cnt}{TYPE_CODES[typ]}", data))

    def _text_complete(self, tags: dict, size: int) -> bool:
        """True when every text tag is written to its end: ASCII values are NUL-terminated
        and written front to back, so a NUL before the last byte means text still to come."""
        for tag in (DESCRIPTION, SOFTWARE):
            data = self._value(tags, tag, size)
            if data is not None and b"\0" in data[:-1]:
                return False
        return True

    def _text(self, tags: dict, tag: int, size: int) -> str:
        data = self._value(tags, tag, size)
        return "" if data is None else data.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _page(self, tags: dict, size: int) -> Page:
        where = f"{self.path}: page {self.pages}"
        w, h = self._ints(tags, WIDTH, size)[0], self._ints(tags, LENGTH, size)[0]
        bits = self._ints(tags, BITS, size, 1)[0]
        fmt = self._ints(tags, SAMPLE_FORMAT, size, 1)[0]
        if self._ints(tags, COMPRESSION, size, 1)[0] != 1:
            raise TiffFormatError(f"{where} is compressed (ScanImage writes uncompressed)")
        samples = self._ints(tags, SAMPLES, size, 1)[0]
        if samples != 1 or bits != 16 or fmt not in (1, 2):
            raise TiffFormatError(f"{where} is not a 16-bit grey image ({samples} sample(s) "
                                  f"per pixel of {bits} bits, sample format {fmt})")
        offsets = self._ints(tags, STRIP_OFFSETS, size)
        counts = self._ints(tags, STRIP_COUNTS, size)
        if len(offsets) != len(counts) or sum(counts) != w * h * 2:
            raise TiffFormatError(f"{where}: strips hold {sum(counts)} bytes, a {h}x{w} "
                                  f"16-bit image needs {w * h * 2}")
        description = self._text(tags, DESCRIPTION, size)
        software = self._text(tags, SOFTWARE, size)
        data = b"".join(self._read(o, c, size) for o, c in zip(offsets, counts))
        dtype = np.dtype(("i2" if fmt == 2 else "u2")).newbyteorder(self._bo)
        pixels = np.frombuffer(data, dtype).reshape(h, w)
        return Page(self.pages, description, software, pixels)
