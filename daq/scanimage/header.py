"""ScanImage's acquisition header: what the frame source and the rig checks use from it.

ScanImage (2016 and later) writes its non-varying settings (``SI.* = value`` lines) in a
static block after the BigTIFF header and again in every page's Software tag, the ROI
groups (JSON) after it and in the Artist tag, and the frame-varying data (``frameNumbers``,
``epoch``, ``endOfAcquisition``, ...) in each page's ImageDescription (docs/scanimage.md).
:class:`ScanImageHeader` keeps the few fields cortexcast acts on; :func:`~cortexcast.daq.scanimage.layout.check_header_against`
compares them with what the decoder expects (the ROI set's frame size, ``[decoder]
frame_rate_hz``), naming both values and the setting to change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cortexcast.daq.source import AcquisitionError

RATE_TOLERANCE = 0.02
"""Relative difference between ScanImage's rate and [decoder] frame_rate_hz still accepted:
ScanImage reports the measured resonant rate (30.047 Hz for a nominal 30)."""


class HeaderError(AcquisitionError):
    """A ScanImage header is missing or unreadable, or describes an acquisition cortexcast
    cannot decode as configured; the text names the file and what to change."""


def _flat(value: Any) -> list[Any]:
    """MATLAB vectors parse as nested lists ([1;2] -> [[1], [2]]); scalars as scalars."""
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flat(item)]
    return [value]


def _num(meta: dict[str, Any], key: str, where: str, default: Any = None) -> Any:
    value = meta.get(key, default)
    if value is None:
        raise HeaderError(f"{where}: ScanImage header lacks {key}")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise HeaderError(f"{where}: {key} = {value!r} is not a number") from None
    flat = _flat(value)
    if len(flat) != 1 or not isinstance(flat[0], (int, float)):
        raise HeaderError(f"{where}: {key} = {value!r} is not a number")
    return flat[0]


def _bool(meta: dict[str, Any], key: str) -> bool | None:
    value = meta.get(key)
    if value is None:
        return None
    flat = _flat(value)
    return bool(flat and flat[0] not in (0, False, "false", ""))


def parse_epoch(text: str) -> str | None:
    """ScanImage's ``epoch = [2023  2  6 10 51 13.374]`` (local time of the ScanImage PC, the
    acquisition's start) as an ISO 8601 string without a time zone; None when absent."""
    m = re.search(r"^\s*epoch\s*=\s*\[([^\]]*)\]", text, re.MULTILINE)
    if not m:
        return None
    parts = m.group(1).split()
    if len(parts) != 6:
        return None
    try:
        y, mo, d, h, mi = (int(float(p)) for p in parts[:5])
        sec = float(parts[5])
        start = datetime(y, mo, d, h, mi, int(sec), int(round((sec % 1) * 1e6)) % 1_000_000)
    except ValueError:
        return None
    return start.isoformat(timespec="milliseconds")


def epoch_unix(epoch: str) -> float:
    """An ISO epoch from :func:`parse_epoch` as Unix seconds, read in this host's time zone
    (ScanImage records local time without a zone; both PCs are assumed to share one)."""
    return datetime.fromisoformat(epoch).timestamp()


def _roi_strips(roi_data: Any, where: str) -> tuple[tuple[int, int], ...]:
    """(lines, pixels) of each imaging ROI's (first) scanfield, in scan order."""
    if not roi_data:
        return ()
    try:
        rois = roi_data["RoiGroups"]["imagingRoiGroup"]["rois"]
        rois = rois if isinstance(rois, list) else [rois]
        out = []
        for roi in rois:
            if not roi:
                continue
            sf = roi["scanfields"]
            sf = sf[0] if isinstance(sf, list) else sf
            px, lines = (int(v) for v in _flat(sf["pixelResolutionXY"]))
            out.append((lines, px))
    except (KeyError, TypeError, ValueError) as exc:
        raise HeaderError(f"{where}: ROI group data (imagingRoiGroup) unreadable: "
                          f"{type(exc).__name__}: {exc}") from None
    return tuple(out)


@dataclass(frozen=True)
class ScanImageHeader:
    """The fields of a ScanImage header cortexcast uses (all from ``SI.*``, except
    ``epoch`` from a frame's description and ``roi_strips`` from the ROI group JSON)."""

    lines: int
    """SI.hRoiManager.linesPerFrame (the page height when mROI is off)."""
    pixels: int
    """SI.hRoiManager.pixelsPerLine."""
    frame_rate_hz: float
    """SI.hRoiManager.scanFrameRate: imaging frames (planes) per second."""
    channels_saved: tuple[int, ...]
    """SI.hChannels.channelSave: the channels logged/streamed, in page order."""
    version: str = ""
    """SI.VERSION_MAJOR.SI.VERSION_MINOR"""
    data_type: str | None = None
    """SI.hScan2D.channelsDataType ('int16' on the files seen)."""
    mroi: bool = False
    """SI.hRoiManager.mroiEnable"""
    roi_strips: tuple[tuple[int, int], ...] = ()
    """(lines, pixels) of each imaging ROI, from the ROI group JSON (for mROI)."""
    n_slices: int = 1
    """Planes per volume: SI.hStackManager.numSlices when a stack/FastZ is on, else 1."""
    frames_per_slice: int = 1
    """SI.hStackManager.framesPerSlice (counts only for volumes)."""
    flyback_frames: int = 0
    """SI.hFastZ.numDiscardFlybackFrames (FastZ volumes only)."""
    volume_rate_hz: float | None = None
    """SI.hRoiManager.scanVolumeRate when given."""
    epoch: str | None = None
    """Acquisition start (ISO, ScanImage PC local time) from the first frame's ``epoch``."""
    source: str = "<text>"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def volumetric(self) -> bool:
        return self.n_slices > 1

    @property
    def rate_hz(self) -> float:
        """Rate of the frames cortexcast publishes: the volume rate for volumes."""
        if not self.volumetric:
            return self.frame_rate_hz
        if self.volume_rate_hz:
            return self.volume_rate_hz
        return self.frame_rate_hz / (self.n_slices * self.frames_per_slice + self.flyback_frames)

    @classmethod
    def from_text(cls, static_block: str, roi_data: Any = None, *, source: str = "<text>",
                  description: str = "") -> ScanImageHeader:
        """From the ``SI.* = value`` lines (static block or Software tag); ``roi_data`` the
        ROI group JSON (str or parsed); ``description`` a frame's description (epoch)."""
        from tifffile import matlabstr2py

        text = static_block.replace("\r\n", "\n").replace("\r", "\n").rstrip("\0")
        try:
            meta = matlabstr2py(text)
        except Exception as exc:  # tifffile raises several kinds on malformed text
            raise HeaderError(f"{source}: ScanImage header does not parse: "
                              f"{type(exc).__name__}: {exc}") from None
        if not isinstance(meta, dict) or not any(str(k).startswith("SI.") for k in meta):
            raise HeaderError(f"{source}: no ScanImage header (no 'SI.* = value' lines); "
                              f"starts {text[:60]!r}")
        if isinstance(roi_data, (str, bytes)):
            try:
                roi_data = json.loads(roi_data) if roi_data.strip() else None
            except ValueError as exc:
                raise HeaderError(f"{source}: ROI group JSON does not parse: {exc}") from None
        return cls._from_meta(meta, roi_data, source, description)

    @classmethod
    def _from_meta(cls, meta: dict[str, Any], roi_data: Any, source: str,
                   description: str) -> ScanImageHeader:
        g = meta.get
        chans = tuple(int(c) for c in _flat(g("SI.hChannels.channelSave", [])) if c != "")
        if not chans:
            raise HeaderError(f"{source}: ScanImage header lacks SI.hChannels.channelSave")
        stack_on = _bool(meta, "SI.hStackManager.enable")
        fastz_on = _bool(meta, "SI.hFastZ.enable")
        key = ("SI.hStackManager.actualNumSlices" if "SI.hStackManager.actualNumSlices" in meta
               else "SI.hStackManager.numSlices")
        slices = int(_num(meta, key, source, 1))
        if stack_on is False:  # newer versions: a stack configured but disabled is one plane
            slices = 1
        dt = g("SI.hScan2D.channelsDataType")
        return cls(
            lines=int(_num(meta, "SI.hRoiManager.linesPerFrame", source)),
            pixels=int(_num(meta, "SI.hRoiManager.pixelsPerLine", source)),
            frame_rate_hz=float(_num(meta, "SI.hRoiManager.scanFrameRate", source)),
            channels_saved=chans,
            version=".".join(str(g(k)) for k in ("SI.VERSION_MAJOR", "SI.VERSION_MINOR")
                             if g(k) is not None),
            data_type=str(dt).strip("'") if dt is not None else None,
            mroi=bool(_bool(meta, "SI.hRoiManager.mroiEnable")),
            roi_strips=_roi_strips(roi_data, source),
            n_slices=max(1, slices),
            frames_per_slice=int(_num(meta, "SI.hStackManager.framesPerSlice", source, 1)),
            flyback_frames=int(_num(meta, "SI.hFastZ.numDiscardFlybackFrames", source, 0))
            if fastz_on and slices > 1 else 0,
            volume_rate_hz=(float(_num(meta, "SI.hRoiManager.scanVolumeRate", source))
                            if g("SI.hRoiManager.scanVolumeRate") is not None else None),
            epoch=parse_epoch(description), source=source, meta=meta)

    @classmethod
    def from_tiff(cls, path: str | Path, description: str | None = None) -> ScanImageHeader:
        """From a ScanImage TIFF: its static block (tifffile's ``read_scanimage_metadata``),
        else its first page's Software/Artist tags; ``epoch`` from the first page (or from
        ``description``, a frame description the caller has read: then only the static
        block is read, which suits a file still being written)."""
        import tifffile

        path = Path(path)
        try:
            with open(path, "rb") as fh:
                try:
                    frame_data, roi_data, _ = tifffile.read_scanimage_metadata(fh)
                except ValueError:
                    frame_data = None
            if frame_data is not None and description is not None:
                return cls._from_meta(frame_data, roi_data, str(path), description)
            with tifffile.TiffFile(path) as tf:
                page = tf.pages.first
                description = getattr(page, "description", "") or ""
                if frame_data is None:
                    software = getattr(page, "software", "") or ""
                    artist = page.tags.valueof(315) or ""
                    return cls.from_text(software, artist, source=str(path),
                                         description=description)
        except HeaderError:
            raise
        except Exception as exc:  # OSError, tifffile's TiffFileError, struct errors
            raise HeaderError(f"{path}: cannot read a ScanImage header: "
                              f"{type(exc).__name__}: {exc}") from None
        meta = frame_data if isinstance(frame_data, dict) else {}
        if not any(str(k).startswith("SI.") for k in meta):
            raise HeaderError(f"{path}: ScanImage static block holds no 'SI.*' data")
        return cls._from_meta(meta, roi_data, str(path), description)

    @classmethod
    def from_file(cls, path: str | Path) -> ScanImageHeader:
        """A TIFF (``.tif``/``.tiff``) or a text file of ``SI.* = value`` lines (e.g. saved
        from MATLAB: ``fid = fopen('si.txt','w'); fprintf(fid, '%s', ...)``)."""
        path = Path(path)
        if path.suffix.lower() in (".tif", ".tiff"):
            return cls.from_tiff(path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise HeaderError(f"{path}: cannot read the ScanImage header file: {exc}") from None
        return cls.from_text(text, source=str(path), description=text)

    def describe(self) -> str:
        parts = [f"{self.lines}x{self.pixels} at {self.frame_rate_hz:g} Hz",
                 f"channels saved {list(self.channels_saved)}"]
        if self.mroi:
            parts.append(f"mROI {len(self.roi_strips)} ROI(s)")
        if self.volumetric:
            parts.append(f"{self.n_slices} planes/volume at {self.rate_hz:.3g} Hz")
        if self.version:
            parts.append(f"ScanImage {self.version}")
        return ", ".join(parts)
