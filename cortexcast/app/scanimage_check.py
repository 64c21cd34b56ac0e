"""The ScanImage header against the decoder: `cortexcast doctor`'s check and `up`'s.

The daq reads ScanImage's frames but does not know the ROI set; the decoder knows the ROI
set but not ScanImage's settings. Here both meet: the header (the newest TIFF in ``[daq.tiff]
folder``, or ``[daq.scanimage]`` / ``[daq.bridge] header``) is compared with the ROI set's
frame size and ``[decoder] frame_rate_hz``, and mROI / volumes are checked against what the
source will do with them (daq/scanimage/header.py, layout.py). Never raises.

* :func:`check_scanimage_header` (facts) -> list[Check] for the doctor.
* :func:`check_daq_header` (daq settings, frame shape, frame rate) -> list[str] for `up`:
  one message per problem, empty when all agree or there is no header to read yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cortexcast.app.rig_checks import Check, RigFacts

NAME = "SI header"


def _find_header(daq: Any) -> tuple[Any, dict[str, Any], str]:
    """(header or None, layout settings for check_header_against, a note when none).
    Raises HeaderError / AcquisitionError for a header that cannot be read."""
    from cortexcast.daq.scanimage.header import ScanImageHeader

    source = getattr(daq, "source", "")
    if source == "tiff":
        from cortexcast.daq.scanimage.tiff_source import scanimage_files

        s = daq.tiff
        kw = {"channel": s.channel, "plane": s.plane, "mroi_roi": s.mroi_roi,
              "table": "[daq.tiff]"}
        folder = Path(s.folder)
        if not folder.is_dir():
            return None, kw, f"[daq.tiff] folder {folder} does not exist"
        files = scanimage_files(folder, s.stem)
        if not files:
            return None, kw, (f"no ScanImage file in {folder} yet: the header is checked "
                              "once an acquisition has logged one")
        return ScanImageHeader.from_tiff(files[-1][1]), kw, ""
    if source in ("scanimage", "scanimage-bridge"):
        s = daq.scanimage if source == "scanimage" else daq.bridge
        table = "[daq.scanimage]" if source == "scanimage" else "[daq.bridge]"
        kw = {"channel": s.channel if source == "scanimage" else 1,
              "plane": getattr(s, "plane", 0), "mroi_roi": getattr(s, "mroi_roi", 0),
              "table": table}
        if not getattr(s, "header", ""):
            return None, kw, (f"{table} header not set: frame size, rate, channel, mROI and "
                              "volumes are not checked against ScanImage's settings")
        header = ScanImageHeader.from_file(s.header)
        if source == "scanimage-bridge" and (header.mroi or header.volumetric):
            from cortexcast.daq.scanimage.header import HeaderError

            raise HeaderError(f"{s.header}: {header.describe()}: the MATLAB bridge sends the "
                              "first ROI of the first plane only; use source = 'tiff' or "
                              "the Premium stream, or acquire one plane without mROI")
        return header, kw, ""
    return None, {}, ""


def check_daq_header(daq: Any, frame_shape: tuple[int, int] | None,
                     frame_rate_hz: float | None) -> list[str]:
    """For `up`: what in ScanImage's header disagrees with the decoder (the ROI set's
    ``frame_shape``, ``[decoder] frame_rate_hz``) or cannot be decoded as configured; one
    message per problem naming both values and the setting to change. Empty when all agree,
    or when there is no header to read (no file logged yet, no ``header`` setting)."""
    from cortexcast.core.errors import CortexcastError
    from cortexcast.daq.scanimage.layout import check_header_against

    try:
        header, kw, _ = _find_header(daq)
    except (CortexcastError, OSError) as exc:
        return [str(exc)]
    if header is None:
        return []
    return check_header_against(header, frame_shape, frame_rate_hz, **kw)


def _roi_shape(facts: RigFacts, dec: Any) -> tuple[tuple[int, int] | None, str]:
    if facts.rois is not None:
        return tuple(facts.rois.frame_shape), ""
    try:
        from cortexcast.decoder.live.roi_loaders import load_roi_set

        rois = load_roi_set(dec.rois, getattr(dec, "rois_format", "auto"),
                            cells_only=getattr(dec, "rois_cells_only", True))
    except Exception as exc:  # the ROIs check reports the file; here it is only a note
        return None, f"ROI set not compared ({type(exc).__name__}: {exc})"
    return tuple(rois.frame_shape), ""


def check_scanimage_header(facts: RigFacts) -> list[Check]:
    """For the doctor: ScanImage's header (lines, pixels, rate, channels, mROI, volumes)
    against the [decoder] ROI set and frame rate. Also tells the ROIs check the frame size
    (``facts.frame_shape``) when nothing else did."""
    daq = facts.settings.get("daq")
    if daq is None or getattr(daq, "source", "") not in ("tiff", "scanimage",
                                                         "scanimage-bridge"):
        return []
    from cortexcast.core.errors import CortexcastError
    from cortexcast.daq.scanimage.layout import check_header_against
    from cortexcast.daq.scanimage.layout import FrameLayout

    try:
        header, kw, note = _find_header(daq)
    except (CortexcastError, OSError) as exc:
        return [Check(NAME, "FAIL", str(exc), "point the daq at a file ScanImage wrote "
                      "(BigTIFF with its SI.* header), or fix what the message names")]
    if header is None:
        return [Check(NAME, "WARN", note, "" if "yet" in note else
                      "set it to a TIFF ScanImage wrote with these settings (or a text file "
                      "of its SI.* lines)")] if note else []
    dec = facts.settings.get("decoder")
    shape, rate, extra = None, None, ""
    if dec is not None:
        shape, extra = _roi_shape(facts, dec)
        rate = dec.frame_rate_hz
    problems = check_header_against(header, shape, rate, **kw)
    if problems:
        return [Check(NAME, "FAIL", p, "change the setting the message names") for p in problems]
    layout = FrameLayout(header, plane=kw["plane"], mroi_roi=kw["mroi_roi"], table=kw["table"])
    if facts.frame_shape is None:
        facts.frame_shape = layout.frame_shape
    h, w = layout.frame_shape
    detail = (f"{header.source}: {header.describe()} -> {h}x{w} frames "
              f"({layout.describe_shape()}) at {header.rate_hz:.4g} Hz")
    if dec is None:
        return [Check(NAME, "OK", detail + "; no [decoder] table to compare with")]
    if extra:
        return [Check(NAME, "WARN", f"{detail}; {extra}", "fix [decoder] rois")]
    return [Check(NAME, "OK", f"{detail} = the ROI set's frame size and [decoder] "
                  f"frame_rate_hz {rate:g}")]
