"""From ScanImage's pages to cortexcast frames: multi-ROI strips and volumes.

What ScanImage writes per frame (one page per saved channel, or one stream message) is
not always the image the decoder's ROI set was drawn on:

* **mROI** (``SI.hRoiManager.mroiEnable``): the ROIs are scanned one after another and a
  page holds them stacked vertically, in RoiGroup order, with the lines scanned while the
  mirrors fly from one ROI to the next ("fly-to" lines) between them. Their number is what
  is left of the page after the ROIs' lines, shared equally between the gaps.
  :class:`FrameLayout` cuts the strips out, drops the fly-to lines, and publishes one ROI
  (``mroi_roi = k``) or all of them side by side, left to right (``mroi_roi = 0``).
* **Volumes** (``SI.hStackManager.numSlices`` > 1 with FastZ / a stack enabled): each
  plane is its own frame number; FastZ flyback frames (``SI.hFastZ.numDiscardFlybackFrames``)
  follow the last plane. One cortexcast frame per volume is built: one plane (``plane = k``)
  or all planes side by side (``plane = 0``), numbered by volume, timed by its first plane.
  A volume with a plane missing is dropped (counted), never published half-filled.

What cannot be decoded is refused with :class:`HeaderError` saying what to change.
"""

from __future__ import annotations

import numpy as np

from cortexcast.daq.scanimage.frames import FrameFormatError
from cortexcast.daq.scanimage.header import RATE_TOLERANCE, HeaderError, ScanImageHeader


class FrameLayout:
    """Turns pages of one acquisition (described by ``header``) into published frames."""

    def __init__(self, header: ScanImageHeader, *, plane: int = 0, mroi_roi: int = 0,
                 first: int = 1, table: str = "[daq.tiff]") -> None:
        self.header, self.plane, self.mroi_roi, self.first = header, plane, mroi_roi, first
        self.dropped_volumes = 0
        where = header.source
        if plane < 0 or mroi_roi < 0:
            raise HeaderError(f"{table} plane and mroi_roi must be >= 0 (0 = all)")
        # -- mROI ----------------------------------------------------------------
        self.strips = header.roi_strips if header.mroi else ()
        if header.mroi:
            if not self.strips:
                raise HeaderError(f"{where}: mROI acquisition (SI.hRoiManager.mroiEnable = "
                                  "true) without ROI group data in the header: turn mROI off "
                                  "in ScanImage, or give the file ScanImage wrote (its ROI "
                                  "JSON tells where each ROI's strip lies)")
            widths = {w for _, w in self.strips}
            if len(widths) > 1:
                raise HeaderError(f"{where}: mROI with ROIs of different widths "
                                  f"{[w for _, w in self.strips]} pixels: give every ROI the "
                                  "same pixel count in x (ScanImage's ROI group editor)")
            if mroi_roi > len(self.strips):
                raise HeaderError(f"{where}: {table} mroi_roi = {mroi_roi}, but the "
                                  f"acquisition has {len(self.strips)} ROI(s): set 1.."
                                  f"{len(self.strips)}, or 0 for all side by side")
            if mroi_roi == 0 and len({h for h, _ in self.strips}) > 1:
                raise HeaderError(f"{where}: mROI ROIs of different heights "
                                  f"{[h for h, _ in self.strips]} lines cannot be joined side "
                                  f"by side: set {table} mroi_roi = k to decode ROI k only, or "
                                  "give every ROI the same number of lines")
            if mroi_roi:
                self.plane_shape = self.strips[mroi_roi - 1]
            else:
                self.plane_shape = (self.strips[0][0], sum(w for _, w in self.strips))
        else:
            self.plane_shape = (header.lines, header.pixels)
        # -- volumes -------------------------------------------------------------
        n = header.n_slices
        if header.volumetric and header.frames_per_slice != 1:
            raise HeaderError(f"{where}: volumetric acquisition (numSlices = {n}) with "
                              f"SI.hStackManager.framesPerSlice = {header.frames_per_slice}: "
                              "cortexcast builds one frame per volume from one frame per "
                              "plane; set framesPerSlice = 1 (FastZ) or acquire a single plane")
        if plane > n:
            raise HeaderError(f"{where}: {table} plane = {plane}, but the acquisition has "
                              f"{n} plane(s) (SI.hStackManager.numSlices): set 1..{n}, or 0 "
                              "for all planes side by side")
        self.per_volume = n + header.flyback_frames if header.volumetric else 1
        h, w = self.plane_shape
        self.frame_shape = (h, w) if plane or not header.volumetric else (h, w * n)
        self._volume: int | None = None
        self._planes: dict[int, np.ndarray] = {}
        self._t0 = 0.0

    def describe_shape(self) -> str:
        """How the published frame is made, in the header's words."""
        h = self.header
        if h.mroi:
            what = (f"ROI {self.mroi_roi} of {len(self.strips)}" if self.mroi_roi else
                    f"{len(self.strips)} mROI strips side by side")
        else:
            what = "SI.hRoiManager.linesPerFrame x pixelsPerLine"
        if h.volumetric:
            what += (f", plane {self.plane} of {h.n_slices}" if self.plane else
                     f", {h.n_slices} planes side by side")
        return what

    def split(self, page: np.ndarray) -> np.ndarray:
        """One page -> the plane cortexcast publishes (mROI strips cut out and joined)."""
        if not self.strips:
            if page.shape != self.plane_shape:
                raise FrameFormatError(f"page is {page.shape[0]}x{page.shape[1]}, the "
                                       f"ScanImage header ({self.header.source}) says "
                                       f"{self.plane_shape[0]}x{self.plane_shape[1]}", "shape")
            return page
        lines = sum(h for h, _ in self.strips)
        n, width = len(self.strips), self.strips[0][1]
        gap, rest = divmod(page.shape[0] - lines, max(n - 1, 1))
        if page.shape[1] != width or gap < 0 or rest or (n == 1 and gap):
            raise FrameFormatError(f"page is {page.shape[0]}x{page.shape[1]}; the mROI header "
                                   f"({self.header.source}) has {n} ROI(s) of "
                                   f"{[h for h, _ in self.strips]} lines x {width} pixels, "
                                   "which leaves no equal fly-to gaps", "shape")
        cuts, y = [], 0
        for h, _ in self.strips:
            cuts.append(page[y:y + h])
            y += h + gap
        if self.mroi_roi:
            return cuts[self.mroi_roi - 1]
        return np.concatenate(cuts, axis=1)

    def feed(self, number: int, t: float,
             page: np.ndarray) -> tuple[int, float, np.ndarray] | None:
        """A page (ScanImage frame ``number``, time ``t``) -> (number, time, frame) to publish,
        or None while a volume is incomplete. Volumes are numbered like frames (from
        ``first``). FrameFormatError for a page that does not fit the header."""
        if not self.header.volumetric:
            return number, t, self.split(page)
        volume, pos = divmod(number - self.first, self.per_volume)
        volume += self.first
        n = self.header.n_slices
        if pos >= n:  # a FastZ flyback frame
            return None
        if volume != self._volume:
            if self._planes:
                self.dropped_volumes += 1  # the previous one never completed
            self._volume, self._planes, self._t0 = volume, {}, t
        if self.plane and pos != self.plane - 1:
            return None
        self._planes[pos] = self.split(page)
        if pos != n - 1 and not (self.plane and pos == self.plane - 1):
            return None
        planes, self._planes = self._planes, {}
        if self.plane:
            return volume, self._t0, planes[pos]
        if len(planes) != n:
            self.dropped_volumes += 1
            return None
        return volume, self._t0, np.concatenate([planes[k] for k in range(n)], axis=1)


def check_header_against(header: ScanImageHeader, frame_shape: tuple[int, int] | None,
                         frame_rate_hz: float | None, *, channel: int = 1, plane: int = 0,
                         mroi_roi: int = 0, table: str = "[daq.tiff]") -> list[str]:
    """What in ``header`` disagrees with the decoder: one message per problem (empty: all
    agree). ``frame_shape`` is the ROI set's, ``frame_rate_hz`` ``[decoder] frame_rate_hz``;
    ``channel``/``plane``/``mroi_roi`` and ``table`` are the frame source's settings.
    An acquisition the source cannot decode at all is reported the same way."""
    where = header.source
    problems = []
    if channel > len(header.channels_saved):
        problems.append(f"{where}: {table} channel = {channel}, but ScanImage saves only "
                        f"channels {list(header.channels_saved)} (SI.hChannels.channelSave): "
                        f"set channel to 1..{len(header.channels_saved)} or save the channel "
                        "in ScanImage")
    if header.data_type not in (None, "int16", "uint16"):
        problems.append(f"{where}: SI.hScan2D.channelsDataType = {header.data_type!r}; "
                        "cortexcast reads 16-bit pixels only")
    try:
        layout = FrameLayout(header, plane=plane, mroi_roi=mroi_roi, table=table)
    except HeaderError as exc:
        return [*problems, str(exc)]
    if frame_shape is not None and tuple(frame_shape) != layout.frame_shape:
        fh, fw = frame_shape
        h, w = layout.frame_shape
        problems.append(f"{where}: ScanImage frames are {h}x{w} ({layout.describe_shape()}), "
                        f"but the [decoder] rois set was drawn on {fh}x{fw} frames: use the ROI "
                        "file made for this field of view and resolution, or set ScanImage's "
                        f"SI.hRoiManager.linesPerFrame = {fh} / pixelsPerLine = {fw}")
    if frame_rate_hz is not None:
        rate = header.rate_hz
        if abs(rate - frame_rate_hz) > RATE_TOLERANCE * frame_rate_hz:
            what = ("SI.hRoiManager.scanVolumeRate" if header.volumetric
                    else "SI.hRoiManager.scanFrameRate")
            problems.append(f"{where}: ScanImage acquires at {rate:.4g} Hz ({what}), but "
                            f"[decoder] frame_rate_hz = {frame_rate_hz:g} (it sets the dF/F and "
                            f"deconvolution time constants): set [decoder] frame_rate_hz = "
                            f"{rate:.4g}")
    return problems
