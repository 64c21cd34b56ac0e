"""Following ScanImage's TIFF files while they are written.

Files come from the stand-in's writer (tifffile, ScanImage's layout); the
growing-file reader is checked against every prefix of a finished file and
against files grown in random chunks, the follower against a writer process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cortexcast.daq.scanimage.tiff_reader import GrowingTiff
from cortexcast.daq.scanimage.tiff_source import (TiffFollower, TiffSettings, frame_info, saved_channels,
                                       scanimage_files)
from cortexcast.daq.source import AcquisitionError
from cortexcast.daq.standins.scanimage_tiff import ScanImageTiffWriter
from cortexcast.stream.message import Message
from cortexcast.stream.recording import RecordingWriter


def _planes(n: int, c: int = 2, h: int = 5, w: int = 6, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-3, 32767, (c, h, w)).astype(np.int16) for _ in range(n)]


def _write(folder: Path, planes: list[np.ndarray], per_file: int = 100, numbers=None,
           stem: str = "file") -> ScanImageTiffWriter:
    w = ScanImageTiffWriter(folder, stem, frames_per_file=per_file,
                            channels=tuple(range(1, len(planes[0]) + 1)))
    with w:
        for k, p in enumerate(planes):
            w.write(k + 1 if numbers is None else numbers[k], k / 30, p, k == len(planes) - 1)
    return w


def _follow(folder: Path, **kw) -> tuple[list, TiffFollower]:
    s = TiffSettings(folder=str(folder), start="all", end_after_idle_s=0.3, settle_s=0.05, **kw)
    src = TiffFollower(s)
    with src:
        return list(src.events()), src


def test_standin_files_are_scanimage_files_for_tifffile(tmp_path) -> None:
    planes = _planes(3)
    w = _write(tmp_path, planes)
    with tifffile.TiffFile(w.paths[0]) as tf:
        assert tf.is_scanimage and tf.is_bigtiff and len(tf.pages) == 6
        meta = tf.scanimage_metadata
        assert meta["version"] == 3 and meta["FrameData"]["SI.hChannels.channelSave"] == [[1], [2]]
        with GrowingTiff(w.paths[0]) as g:
            ours = g.read_new()
        for page, theirs in zip(ours, tf.pages):
            assert page.description.strip() == theirs.description
            np.testing.assert_array_equal(page.pixels, theirs.asarray())
    assert frame_info(ours[2].description) == (2, pytest.approx(1 / 30))
    assert saved_channels(ours[0].software) == [1, 2]


def test_every_prefix_of_a_file_gives_only_complete_pages(tmp_path) -> None:
    w = _write(tmp_path / "full", _planes(3, c=1, h=3, w=4))
    data = w.paths[0].read_bytes()
    with GrowingTiff(w.paths[0]) as g:
        full = g.read_new()
    part = tmp_path / "part.tif"
    for cut in [*range(0, len(data), 7), len(data) - 1, len(data)]:
        part.write_bytes(data[:cut])
        with GrowingTiff(part) as g:
            pages = g.read_new()
            assert len(pages) <= len(full)
            for a, b in zip(pages, full):
                assert a.description == b.description and np.array_equal(a.pixels, b.pixels)
            assert g.pending() == (0 < cut and len(pages) < len(full)), cut


def test_a_file_growing_in_random_chunks_yields_each_page_once(tmp_path) -> None:
    w = _write(tmp_path / "full", _planes(6))
    data = w.paths[0].read_bytes()
    with GrowingTiff(w.paths[0]) as g:
        full = g.read_new()
    rng = np.random.default_rng(3)
    grown = tmp_path / "grown.tif"
    got = []
    with open(grown, "wb", buffering=0) as out, GrowingTiff(grown) as g:
        i = 0
        while i < len(data):
            n = int(rng.integers(1, 200))
            out.write(data[i:i + n])
            i += n
            got += g.read_new()
    assert [p.description for p in got] == [p.description for p in full]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(got, full))


def _recording(path: Path, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 32768, (7, 8)).astype(np.uint16) for _ in range(n)]
    with RecordingWriter(path) as w:
        for i, px in enumerate(frames):
            w.write(Message("frames", "frame", i, "daq", i / 30, (px,),
                            meta={"imaging_frame": i}), t_recv_ns=10**9 + i * 33_000_000)
    return frames


def test_follower_reads_a_writer_process_frame_by_frame(tmp_path, cli_env) -> None:
    frames = _recording(tmp_path / "rec.ccrec", 14)
    folder = tmp_path / "si"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "cortexcast.daq.standins.scanimage_tiff", "--folder",
                             str(folder), "--recording", str(tmp_path / "rec.ccrec"),
                             "--frames-per-file", "5", "--channels", "2"], env=cli_env)
    s = TiffSettings(folder=str(folder), start="all", channel=2, end_after_idle_s=2.0,
                     timeout_s=60.0)
    with TiffFollower(s) as src:
        got = list(src.events())
    assert proc.wait(30) == 0
    assert [f.index for f in got] == list(range(14))
    for f in got:  # channel 2 of the stand-in is channel 1 // 2
        assert f.t == pytest.approx(f.index / 30)
        np.testing.assert_array_equal(f.pixels, frames[f.index] // 2)
    assert src.counts["files"] == 3 and src.counts["truncated_files"] == 0
    assert [p.name for _, p in scanimage_files(folder)] == [
        "file_00001_00001.tif", "file_00001_00002.tif", "file_00001_00003.tif"]


def test_a_truncated_file_loses_only_its_incomplete_frame(tmp_path, caplog) -> None:
    planes = _planes(8, c=1)
    w = _write(tmp_path, planes, per_file=4)
    first = w.paths[0]
    first.write_bytes(first.read_bytes()[:-10])  # the 4th frame's pixels are cut short
    got, src = _follow(tmp_path)
    assert [f.index for f in got] == [0, 1, 2, 4, 5, 6, 7]
    for f in got:
        np.testing.assert_array_equal(f.pixels, np.clip(planes[f.index][0], 0, None))
    status = src.status()
    assert status.pop("si_epoch") == got[0].meta["epoch"]
    assert status == {"si_files": 2, "si_pages": 7, "si_truncated_files": 1,
                      "si_bad_pages": 0, "si_dropped_volumes": 0, "si_frame_gaps": 1,
                      "si_frames_missing": 1, "si_frames_repeated": 0, "si_restarts": 0}
    assert "file_00001_00001.tif ends with an incomplete page" in caplog.text
    assert "FRAME GAP" in caplog.text


def test_gaps_and_repeats_in_frame_numbers_are_caught(tmp_path, caplog) -> None:
    planes = _planes(5, c=1)
    _write(tmp_path, planes, numbers=[1, 2, 5, 5, 6])
    got, src = _follow(tmp_path)
    assert [f.meta["scanimage_frame"] for f in got] == [1, 2, 5, 6]
    assert [f.index for f in got] == [0, 1, 4, 5]
    assert src.numbers.counts["gaps"] == 1 and src.numbers.counts["missing"] == 2
    assert "FRAME GAP: 2 frame(s) missing" in caplog.text


def test_a_page_that_is_not_a_frame_is_skipped_with_the_rest_of_its_file(tmp_path) -> None:
    planes = _planes(2, c=1)
    _write(tmp_path, planes, per_file=1)
    # a third file whose page is 8-bit: complete on disk, but not a ScanImage frame
    tifffile.imwrite(tmp_path / "file_00001_00003.tif", np.zeros((5, 6), np.uint8),
                     description="frameNumbers = 3\nframeTimestamps_sec = 0.1\n")
    got, src = _follow(tmp_path, stop_at_end=False)  # files 1-2 end the acquisition
    assert [f.index for f in got] == [0, 1]
    assert src.bad["tiff"] == 1


def test_a_description_without_frame_number_is_counted(tmp_path) -> None:
    w = ScanImageTiffWriter(tmp_path)  # a ScanImage header, but descriptions without numbers
    w.description = lambda *a: "hello = 1\n"  # type: ignore[method-assign]
    with w:
        for _ in range(2):
            w.write(1, 0.0, np.ones((1, 3, 4), np.int16))
    src = TiffFollower(TiffSettings(folder=str(tmp_path), start="all", timeout_s=0.5))
    with src, pytest.raises(AcquisitionError, match=r"no frame for .*2 page\(s\) could not be "
                            "used, e.g. description lacks a valid frameNumbers"):
        list(src.events())
    assert src.bad["description"] == 2 and src.counts["pages"] == 2


def test_vanished_file_and_missing_folder_are_clear_errors(tmp_path) -> None:
    with pytest.raises(AcquisitionError, match="folder not found"):
        TiffFollower(TiffSettings(folder=str(tmp_path / "nope"))).__enter__()
    w = _write(tmp_path, _planes(2, c=1))
    src = TiffFollower(TiffSettings(folder=str(tmp_path), start="all", timeout_s=30.0,
                                    stop_at_end=False))
    with src:
        events = src.events()
        next(events)
        next(events)
        os.remove(w.paths[0])
        with pytest.raises(AcquisitionError, match="file_00001_00001.tif vanished"):
            next(events)


def test_channel_that_is_not_saved_is_a_clear_error(tmp_path) -> None:
    _write(tmp_path, _planes(1, c=1))
    with pytest.raises(AcquisitionError, match=r"channel 2 requested .* saves \[1\]"):
        _follow(tmp_path, channel=2)


def test_start_new_ignores_files_already_there(tmp_path) -> None:
    _write(tmp_path, _planes(2, c=1))
    s = TiffSettings(folder=str(tmp_path), start="new", timeout_s=0.3)
    with TiffFollower(s) as src, pytest.raises(AcquisitionError, match="no frame for"):
        list(src.events())


def test_start_latest_joins_the_file_being_written(tmp_path) -> None:
    planes = _planes(7, c=2)
    w = ScanImageTiffWriter(tmp_path, "file", frames_per_file=3, channels=(1, 2))
    for k in range(5):  # files 1 (frames 1-3) and 2 (frames 4-5, still open)
        w.write(k + 1, k / 30, planes[k])
    src = TiffFollower(TiffSettings(folder=str(tmp_path), start="latest", channel=2,
                                    end_after_idle_s=0.3, settle_s=0.05))
    with src:
        for k in range(5, 7):
            w.write(k + 1, k / 30, planes[k])
        w.close()
        got = list(src.events())
    assert [f.index for f in got] == [5, 6]  # frames 6 and 7, numbered as ScanImage does
    np.testing.assert_array_equal(got[0].pixels, np.clip(planes[5][1], 0, None))
    assert src.numbers.counts["gaps"] == 0


def test_classic_big_endian_multi_strip_tiff_is_read(tmp_path) -> None:
    path = tmp_path / "classic.tif"
    px = np.arange(5 * 6, dtype=np.int16).reshape(5, 6) - 7
    with tifffile.TiffWriter(path, byteorder=">") as tw:
        for k in range(2):
            tw.write(px + k, description=f"frameNumbers = {k + 1}\n", metadata=None,
                     rowsperstrip=2)
    with GrowingTiff(path) as g, tifffile.TiffFile(path) as tf:
        assert not tf.is_bigtiff and len(tf.pages[0].dataoffsets) == 3
        pages = g.read_new()
        assert [frame_info(p.description + "frameTimestamps_sec = 0")[0] for p in pages] == [1, 2]
        for p, theirs in zip(pages, tf.pages):
            np.testing.assert_array_equal(p.pixels, theirs.asarray())


class _WriteLog:
    """A file object for tifffile that records every write as (offset, bytes), in order."""

    def __init__(self) -> None:
        import io

        self.buf, self.ops = io.BytesIO(), []

    def __getattr__(self, name: str):
        return getattr(self.buf, name)

    def write(self, data) -> int:
        data = bytes(data)
        self.ops.append((self.buf.tell(), data))
        return self.buf.write(data)


def test_pages_written_in_tifffiles_own_order_are_read_only_when_complete(tmp_path) -> None:
    """tifffile links a page from the previous one first, then writes the pixels, then the
    IFD and its text last, inside the file: replaying its writes byte range by byte range
    (as the page cache fills them in), the reader never yields a half-written page."""
    log = _WriteLog()
    writer = ScanImageTiffWriter(tmp_path, "file")
    planes = _planes(4, c=1, h=3, w=4)
    with tifffile.TiffWriter(log, bigtiff=True, byteorder="<") as tw:
        for k, p in enumerate(planes):
            tw.write(p[0], description=writer.description(k + 1, k / 30, k == 3),
                     software="SI.VERSION_MAJOR = 2023", metadata=None, contiguous=False)
    assert any(off < max(o + len(d) for o, d in log.ops[:i]) for i, (off, _) in
               enumerate(log.ops) if i), "tifffile no longer writes out of order"
    path = tmp_path / "grown.tif"
    got = []
    with open(path, "wb", buffering=0) as out, GrowingTiff(path) as g:
        for off, data in log.ops:
            for i in range(0, len(data), 16):  # a write lands a piece at a time
                out.seek(off + i)
                out.write(data[i:i + 16])
                got += g.read_new()
        got += g.read_new(final=True)
    assert [frame_info(p.description)[0] for p in got] == [1, 2, 3, 4]
    assert all(np.array_equal(p.pixels, q[0]) for p, q in zip(got, planes))
