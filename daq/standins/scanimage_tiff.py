"""Stand-in for ScanImage logging to TIFF: ``python -m cortexcast.daq.standins.scanimage_tiff``.

Writes ``<folder>/<stem>_00001_00001.tif``, ``..._00002.tif``, ... frame by frame
(with tifffile) the way ScanImage does: little-endian BigTIFF, ScanImage's
static-metadata block right after the BigTIFF header (magic 117637889, version 3,
non-varying ``SI.*`` data, ROI-group JSON), then per frame one uncompressed int16
page per saved channel whose ImageDescription holds the frame-varying data
(``frameNumbers = ...``, ``frameTimestamps_sec = ...``, ...), the Software tag the
``SI.*`` data and the Artist tag the ROI JSON. tifffile recognises the result as a
ScanImage file (``TiffFile.is_scanimage``, ``scanimage_metadata``).
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
import time
from pathlib import Path

import numpy as np
import tifffile

from cortexcast.daq.standins.playback import add_source_args, scanimage_frames, setup

log = logging.getLogger("standin")

SI_MAGIC, SI_VERSION = 117637889, 3
ARTIST = 315


class ScanImageTiffWriter:
    """Writes frames into ScanImage-named BigTIFF files, ``frames_per_file`` frames each."""

    def __init__(self, folder: str | Path, stem: str = "file", acquisition: int = 1,
                 frames_per_file: int = 1000, channels: tuple[int, ...] = (1,),
                 frame_rate_hz: float = 30.0) -> None:
        if frames_per_file < 1:
            raise ValueError("frames_per_file must be >= 1")
        self.folder, self.stem, self.acq = Path(folder), stem, acquisition
        self.frames_per_file, self.channels, self.rate = frames_per_file, channels, frame_rate_hz
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tw: tifffile.TiffWriter | None = None
        self._file_counter = 0
        self._in_file = 0
        self._epoch = time.localtime()
        self.paths: list[Path] = []

    def _static(self, shape: tuple[int, int]) -> str:
        chans = "[" + ";".join(str(c) for c in self.channels) + "]"
        return "\n".join([
            "SI.LINE_FORMAT_VERSION = 1", "SI.PREMIUM = true",
            f"SI.TIFF_FORMAT_VERSION = {SI_VERSION}",
            "SI.VERSION_MAJOR = 2023", "SI.VERSION_MINOR = 1", "SI.acqState = 'grab'",
            f"SI.hChannels.channelSave = {chans}", f"SI.hChannels.channelsActive = {chans}",
            f"SI.hRoiManager.linesPerFrame = {shape[0]}",
            f"SI.hRoiManager.pixelsPerLine = {shape[1]}",
            f"SI.hRoiManager.scanFrameRate = {self.rate:g}",
            f"SI.hScan2D.logFileStem = '{self.stem}'",
            f"SI.hScan2D.logFramesPerFile = {self.frames_per_file}",
            "SI.hScan2D.logFramesPerFileLock = true"])

    def _open(self, shape: tuple[int, int]) -> None:
        self._file_counter += 1
        path = self.folder / f"{self.stem}_{self.acq:05d}_{self._file_counter:05d}.tif"
        self._tw = tifffile.TiffWriter(path, bigtiff=True, byteorder="<")
        static = self._static(shape).encode() + b"\0"
        self._roi = json.dumps({"RoiGroups": {"imagingRoiGroup": {"ver": 1, "name": "Default",
                                                                  "rois": {}}}})
        roi = self._roi.encode() + b"\0"
        self._tw.filehandle.write(struct.pack("<IIII", SI_MAGIC, SI_VERSION, len(static),
                                              len(roi)) + static + roi)
        self._software = self._static(shape)
        self._in_file = 0
        self.paths.append(path)

    def description(self, number: int, t: float, last: bool) -> str:
        e = self._epoch
        return "\n".join([
            f"frameNumbers = {number}", f"acquisitionNumbers = {self.acq}",
            f"frameNumberAcquisition = {number}", f"frameTimestamps_sec = {t:.9f}",
            "acqTriggerTimestamps_sec = 0.000000000",
            "nextFileMarkerTimestamps_sec = -1.000000000",
            f"endOfAcquisition = {int(last)}", f"endOfAcquisitionMode = {int(last)}",
            "dcOverVoltage = 0",
            f"epoch = [{e.tm_year} {e.tm_mon:2d} {e.tm_mday:2d} {e.tm_hour:2d} {e.tm_min:2d} "
            f"{e.tm_sec:.3f}]",
            "auxTrigger0 = []", "auxTrigger1 = []", "auxTrigger2 = []", "auxTrigger3 = []",
            "I2CData = {}", ""])

    def write(self, number: int, t: float, channels: np.ndarray, last: bool = False) -> None:
        """One frame: ``channels`` (C, H, W) int16, one page per saved channel."""
        if channels.dtype != np.int16 or channels.ndim != 3 or len(channels) != len(self.channels):
            raise ValueError(f"channels must be int16 ({len(self.channels)}, H, W)")
        if self._tw is None or self._in_file >= self.frames_per_file:
            self.close()
            self._open(channels.shape[1:])
        assert self._tw is not None
        desc = self.description(number, t, last)
        for plane in channels:
            self._tw.write(plane, description=desc, software=self._software, metadata=None,
                           contiguous=False, extratags=[(ARTIST, "s", 0, self._roi, True)])
        self._tw.filehandle.flush()
        self._in_file += 1

    def close(self) -> None:
        if self._tw is not None:
            self._tw.close()
            self._tw = None

    def __enter__(self) -> ScanImageTiffWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cortexcast.daq.standins.scanimage_tiff",
                                description=__doc__.splitlines()[0])
    p.add_argument("--folder", required=True, help="where to write (like hSI.hScan2D.logFilePath)")
    p.add_argument("--stem", default="file", help="file stem (default 'file')")
    p.add_argument("--acquisition", type=int, default=1, help="acquisition number in the names")
    p.add_argument("--frames-per-file", type=int, default=1000,
                   help="frames per file, like hSI.hScan2D.logFramesPerFile (default 1000)")
    add_source_args(p)
    args = p.parse_args(argv)
    setup("scanimage_tiff")
    n = 0
    writer = ScanImageTiffWriter(args.folder, args.stem, args.acquisition, args.frames_per_file,
                                 tuple(range(1, args.channels + 1)))
    try:
        with writer:
            for f in scanimage_frames(args):
                writer.write(f.number, f.t, f.channels, f.last)
                n += 1
    except KeyboardInterrupt:
        pass
    log.info("wrote %d frames into %d file(s) in %s", n, len(writer.paths), args.folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
