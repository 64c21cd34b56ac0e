"""Stand-in for ScanImage logging to TIFF: ``python -m cortexcast.daq.standins.scanimage_tiff``.

Writes ``<folder>/<stem>_00001_00001.tif``, ``..._00002.tif``, ... frame by frame
(with tifffile) the way ScanImage does: little-endian BigTIFF, ScanImage's
static-metadata block right after the BigTIFF header (magic 117637889, version 3,
non-varying ``SI.*`` data, ROI-group JSON), then per frame one uncompressed int16
page per saved channel whose ImageDescription holds the frame-varying data
(``frameNumbers = ...``, ``frameTimestamps_sec = ...``, ...), the Software tag the
``SI.*`` data and the Artist tag the ROI JSON. tifffile recognises the result as a
ScanImage file (``TiffFile.is_scanimage``, ``scanimage_metadata``). The header carries what
cortexcast checks (linesPerFrame, pixelsPerLine, scanFrameRate, channelSave, channelsDataType,
mroiEnable, FastZ/stack settings) and the last frame ``endOfAcquisition = 1``; ``--mroi`` and
``--slices`` write mROI pages (strips, fly-to lines) and FastZ volumes.
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
                 frame_rate_hz: float = 30.0, *, mroi: int = 0, flyto_lines: int = 0,
                 n_slices: int = 1, flyback_frames: int = 0, frames_per_slice: int = 1,
                 extra: dict[str, str] | None = None) -> None:
        """``mroi`` > 0: :meth:`write_image` writes each image as that many mROI strips
        (ROI group JSON, ``mroiEnable = true``) stacked with ``flyto_lines`` between them;
        ``n_slices`` > 1: as a FastZ volume of that many planes plus ``flyback_frames``.
        ``extra``: ``SI.*`` lines to add or override (key without ``SI.``, value as MATLAB)."""
        if frames_per_file < 1 or mroi < 0 or flyto_lines < 0 or n_slices < 1:
            raise ValueError("frames_per_file, n_slices >= 1; mroi, flyto_lines >= 0")
        self.folder, self.stem, self.acq = Path(folder), stem, acquisition
        self.frames_per_file, self.channels, self.rate = frames_per_file, channels, frame_rate_hz
        self.mroi, self.flyto, self.slices = mroi, flyto_lines, n_slices
        self.flyback, self.frames_per_slice, self.extra = flyback_frames, frames_per_slice, extra
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tw: tifffile.TiffWriter | None = None
        self._file_counter = 0
        self._in_file = 0
        self._epoch = time.localtime()
        self._strips: list[tuple[int, int]] = []
        self.paths: list[Path] = []

    def _static(self, shape: tuple[int, int]) -> str:
        chans = "[" + ";".join(str(c) for c in self.channels) + "]"
        lines, pixels = self._strips[0] if self._strips else shape
        volume = self.slices > 1
        fields = {
            "LINE_FORMAT_VERSION": "1", "PREMIUM": "true",
            "TIFF_FORMAT_VERSION": str(SI_VERSION),
            "VERSION_MAJOR": "2023", "VERSION_MINOR": "1", "acqState": "'grab'",
            "hChannels.channelSave": chans, "hChannels.channelsActive": chans,
            "hFastZ.enable": str(volume).lower(),
            "hFastZ.numDiscardFlybackFrames": str(self.flyback),
            "hRoiManager.linesPerFrame": str(lines),
            "hRoiManager.mroiEnable": str(bool(self.mroi)).lower(),
            "hRoiManager.pixelsPerLine": str(pixels),
            "hRoiManager.scanFrameRate": f"{self.rate:g}",
            "hRoiManager.scanVolumeRate":
                f"{self.rate / (self.slices + self.flyback) if volume else self.rate:g}",
            "hScan2D.channelsDataType": "'int16'",
            "hScan2D.logFileStem": f"'{self.stem}'",
            "hScan2D.logFramesPerFile": str(self.frames_per_file),
            "hScan2D.logFramesPerFileLock": "true",
            "hStackManager.enable": str(volume).lower(),
            "hStackManager.framesPerSlice": str(self.frames_per_slice),
            "hStackManager.numSlices": str(self.slices),
            **(self.extra or {})}
        return "\n".join(f"SI.{k} = {v}" for k, v in fields.items())

    def _roi_json(self) -> str:
        rois = [{"ver": 1, "name": f"ROI {k + 1}", "discretePlaneMode": 0,
                 "scanfields": {"pixelResolutionXY": [px, lines],
                                "centerXY": [k, 0], "sizeXY": [1, 1]}}
                for k, (lines, px) in enumerate(self._strips)]
        return json.dumps({"RoiGroups": {"imagingRoiGroup": {
            "ver": 1, "name": "Default", "rois": rois if rois else {}}}})

    def _open(self, shape: tuple[int, int]) -> None:
        self._file_counter += 1
        path = self.folder / f"{self.stem}_{self.acq:05d}_{self._file_counter:05d}.tif"
        self._tw = tifffile.TiffWriter(path, bigtiff=True, byteorder="<")
        static = self._static(shape).encode() + b"\0"
        self._roi = self._roi_json()
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

    def write_image(self, index: int, t: float, channels: np.ndarray, last: bool = False) -> None:
        """One whole image (C, H, W) int16, the ``index``-th (0-based), written the way this
        writer's mROI / volume settings make ScanImage write it: cut into ``n_slices``
        planes side by side, each cut into ``mroi`` strips side by side, stacked with
        fly-to lines (value -1) between them; then the FastZ flyback frames (zeros). Joining
        strips and planes side by side again gives back ``channels``."""
        c, h, w = channels.shape
        per_plane = w // self.slices
        n_strips = max(self.mroi, 1)
        if per_plane * self.slices != w or per_plane % n_strips:
            raise ValueError(f"width {w} does not split into {self.slices} plane(s) of "
                             f"{n_strips} strip(s)")
        self._strips = [(h, per_plane // n_strips)] * self.mroi
        per_volume = self.slices + (self.flyback if self.slices > 1 else 0)
        pages = []
        for p in range(self.slices):
            plane = channels[:, :, p * per_plane:(p + 1) * per_plane]
            if self.mroi:
                sw = per_plane // n_strips
                gap = np.full((c, self.flyto, sw), -1, np.int16)
                parts = []
                for k in range(n_strips):
                    parts.append(plane[:, :, k * sw:(k + 1) * sw])
                    if k < n_strips - 1:
                        parts.append(gap)
                plane = np.concatenate(parts, axis=1)
            pages.append(plane)
        pages += [np.zeros_like(pages[0])] * (per_volume - self.slices)
        for k, page in enumerate(pages):
            self.write(index * per_volume + k + 1, t + k / self.rate,
                       np.ascontiguousarray(page), last and k == len(pages) - 1)

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
    p.add_argument("--scan-rate", type=float, default=30.0,
                   help="SI.hRoiManager.scanFrameRate written in the header (default 30)")
    p.add_argument("--mroi", type=int, default=0,
                   help="write each frame as this many mROI strips (cut side by side)")
    p.add_argument("--flyto", type=int, default=0, help="fly-to lines between mROI strips")
    p.add_argument("--slices", type=int, default=1,
                   help="write each frame as a FastZ volume of this many planes (cut side by side)")
    p.add_argument("--flyback", type=int, default=0, help="FastZ flyback frames per volume")
    add_source_args(p)
    args = p.parse_args(argv)
    setup("scanimage_tiff")
    n = 0
    writer = ScanImageTiffWriter(args.folder, args.stem, args.acquisition, args.frames_per_file,
                                 tuple(range(1, args.channels + 1)), args.scan_rate,
                                 mroi=args.mroi, flyto_lines=args.flyto, n_slices=args.slices,
                                 flyback_frames=args.flyback)
    plain = args.mroi == 0 and args.slices == 1
    try:
        with writer:
            for f in scanimage_frames(args):
                if plain:
                    writer.write(f.number, f.t, f.channels, f.last)
                else:
                    writer.write_image(f.number - 1, f.t, f.channels, f.last)
                n += 1
    except KeyboardInterrupt:
        pass
    log.info("wrote %d frames into %d file(s) in %s", n, len(writer.paths), args.folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
