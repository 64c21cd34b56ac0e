"""Pixels out: the WebSocket frame format, the side-by-side composite, and saving it.

WebSocket frame (binary, little-endian)::

    uint32 n | n bytes UTF-8 JSON header | stimulus plane | reconstruction plane

each plane ``h * w`` uint8, row-major; the header says ``h``, ``w``, frame
numbers and which planes are real (``has_stim``/``has_recon``; a missing
plane is sent as zeros). Reconstructions are rounded and clipped to 0..255.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import GifImagePlugin, Image

from cortexcast.display.state import View

FRAME_SHAPE = (36, 64)
_GAP_VALUE = 24  # dark grey strip between the two halves of a saved frame


def to_uint8(frame: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """A (float or uint8) frame on the 0..255 scale as uint8; zeros if absent."""
    if frame is None:
        return np.zeros(shape, np.uint8)
    if frame.dtype == np.uint8:
        return frame
    return np.clip(np.rint(np.nan_to_num(frame)), 0, 255).astype(np.uint8)


def view_shape(view: View) -> tuple[int, int]:
    for a in (view.stimulus, view.reconstruction):
        if a is not None:
            return a.shape  # type: ignore[return-value]
    return FRAME_SHAPE


def view_header(view: View) -> dict[str, Any]:
    h, w = view_shape(view)
    return {
        "type": "frame",
        "h": h,
        "w": w,
        "version": view.version,
        "stim_frame": view.stim_frame,
        "recon_stim_frame": view.recon_stim_frame,
        "imaging_frame": view.imaging_frame,
        "lag": view.lag,
        "paired": view.paired,
        "has_stim": view.stimulus is not None,
        "has_recon": view.reconstruction is not None,
    }


def encode_frame(view: View, extra: dict[str, Any] | None = None) -> bytes:
    """One view as a binary WebSocket message (see the module docstring)."""
    shape = view_shape(view)
    header = json.dumps({**view_header(view), **(extra or {})}, separators=(",", ":")).encode()
    return b"".join((
        struct.pack("<I", len(header)),
        header,
        to_uint8(view.stimulus, shape).tobytes(),
        to_uint8(view.reconstruction, shape).tobytes(),
    ))


def decode_frame(data: bytes) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_frame` (for tests and tools): header, stimulus, reconstruction."""
    (n,) = struct.unpack_from("<I", data)
    header = json.loads(data[4:4 + n])
    h, w = header["h"], header["w"]
    planes = np.frombuffer(data, np.uint8, offset=4 + n).reshape(2, h, w)
    return header, planes[0], planes[1]


def compose(view: View, scale: int) -> np.ndarray:
    """Stimulus | gap | reconstruction, each scaled ``scale``x (nearest), uint8 (H*s, 2*W*s+s)."""
    shape = view_shape(view)
    stim = to_uint8(view.stimulus, shape)
    recon = to_uint8(view.reconstruction, shape)
    gap = np.full((shape[0], 1), _GAP_VALUE, np.uint8)
    row = np.concatenate([stim, gap, recon], axis=1)
    return np.repeat(np.repeat(row, scale, axis=0), scale, axis=1)


class FrameSaver:
    """Writes composites as an animated GIF (``*.gif``, streamed frame by frame, so
    memory stays flat on long runs) or as ``frame_NNNNNN.png`` files in a directory."""

    def __init__(self, target: str | Path, fps: float) -> None:
        self.target = Path(target)
        self.duration_ms = max(10, int(round(1000.0 / fps)))
        self.frames = 0
        self._gif = self.target.suffix.lower() == ".gif"
        self._fp: Any = None
        self._size: tuple[int, int] | None = None
        if self._gif:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        else:
            self.target.mkdir(parents=True, exist_ok=True)

    def add(self, image: np.ndarray) -> None:
        im = Image.fromarray(image, "L")
        if self._gif:
            self._add_gif(im)
        else:
            im.save(self.target / f"frame_{self.frames:06d}.png", optimize=False)
        self.frames += 1

    def _add_gif(self, im: Image.Image) -> None:
        if self._fp is None:
            self._size = im.size
            self._fp = self.target.open("wb")
            info = {"loop": 0, "duration": self.duration_ms}
            header, _ = GifImagePlugin.getheader(im, None, info)
            for chunk in header:
                self._fp.write(chunk)
        elif im.size != self._size:  # frame shape changed mid-run: pad/crop to the first size
            canvas = Image.new("L", self._size, 0)  # type: ignore[arg-type]
            canvas.paste(im, (0, 0))
            im = canvas
        for chunk in GifImagePlugin.getdata(im, duration=self.duration_ms):
            self._fp.write(chunk)
        self._fp.flush()

    def close(self) -> None:
        if self._fp is not None:
            self._fp.write(b";")  # GIF trailer
            self._fp.close()
            self._fp = None
