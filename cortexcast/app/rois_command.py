"""`cortexcast rois`: the ROIs of a session's field of view, found by cortexcast itself.

    cortexcast rois --recording session.ccr --out rois.npz
    cortexcast rois --tiff-folder D:/scanimage/mouse1 --out rois.npz --frame-rate 30

Reads a few thousand frames spread over the session (never the whole 28 GB), builds the
motion reference exactly as the live decoder's online correction does, registers the
sample to it, and finds the cells (:mod:`cortexcast.decoder.offline.roi_detection`).
Writes ``rois.npz`` (cortexcast ROI format: footprints, neuropil model on load, and the
motion ``reference``, plus ``mean_image`` and ``correlation_image``) and, beside it,
``<name>.png``: the mean and correlation images with the ROIs outlined, for the operator.
With ``--truth`` (a cortexcast ROI file of the true footprints, as ``cortexcast simulate``
and the simulated rig give) it reports precision and recall at IoU >= 0.5.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np

from cortexcast.core.errors import CortexcastError


class RoisCommandError(CortexcastError, ValueError):
    """Bad arguments to ``cortexcast rois`` (the message names the file and the fix)."""


def _frame_rate(args: argparse.Namespace, frames) -> tuple[float, str]:
    """(imaging rate, where it came from): --frame-rate, the recording's timestamps,
    ScanImage's metadata, or 30 Hz."""
    if args.frame_rate is not None:
        return float(args.frame_rate), "--frame-rate"
    if args.recording is not None:
        from cortexcast.decoder.offline.session_frames import FRAMES_TOPIC
        from cortexcast.stream.recording import RecordingReader

        with RecordingReader(args.recording) as reader:
            t = reader.index["t_acq"][reader.select([FRAMES_TOPIC])]
        dt = np.diff(t[np.isfinite(t)])
        dt = dt[dt > 0]
        if dt.size:
            return 1.0 / float(np.median(dt)), f"the frame times in {args.recording}"
    files = getattr(frames, "files", None)
    if files:
        with open(files[0], "rb") as fh:
            head = fh.read(1 << 20)
        m = re.search(rb"scanFrameRate\s*=\s*([0-9.]+)", head)
        if m:
            return float(m.group(1)), f"ScanImage's metadata in {files[0].name}"
    print("cortexcast rois: warning: imaging rate unknown, assuming 30 Hz (set --frame-rate)",
          file=sys.stderr)
    return 30.0, "assumed"


def _motion_settings(path: str | None):
    from cortexcast.core.config import load_toml, settings_from_table
    from cortexcast.decoder.live.motion import MotionSettings

    if path is None:
        return MotionSettings()
    table = load_toml(path).get("decoder", {}).get("motion", {})
    table = {k: v for k, v in table.items() if k not in ("enabled", "reference")}
    return settings_from_table(MotionSettings, table, f"{path}: [decoder.motion]")


def _check_out(out: Path, force: bool) -> list[Path]:
    """Paths to write (the .npz and its .png); refuses existing ones without --force."""
    if out.suffix.lower() != ".npz":
        raise RoisCommandError(f"--out {out}: the ROI file must end in .npz")
    targets = [out, out.with_suffix(".png")]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise RoisCommandError(f"{existing[0]} already exists; pass --force to replace it, or "
                               "choose another --out")
    if not out.parent.exists():
        raise RoisCommandError(f"--out {out}: folder {out.parent} does not exist; create it")
    return targets


def write_overview(path: Path, mean: np.ndarray, corr: np.ndarray, rois) -> None:
    """PNG: the mean image and the correlation image side by side, ROI outlines in red."""
    from PIL import Image
    from scipy import ndimage

    from cortexcast.decoder.offline.roi_quality import binarise

    def grey(img: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(img, [1, 99.5])
        return (np.clip((img - lo) / ((hi - lo) or 1.0), 0, 1) * 255).astype(np.uint8)

    h, w = mean.shape
    up = int(np.clip(1024 // max(h, w), 1, 4))  # small frames: enlarged, outlines stay thin

    def big(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, up, axis=0), up, axis=1)

    b = binarise(rois.masks).tocoo()
    label = np.zeros(h * w, np.int64)
    label[b.col] = b.row + 1
    label = big(label.reshape(h, w))
    edge = (label > 0) & (ndimage.grey_erosion(label, size=3) != ndimage.grey_dilation(label,
                                                                                     size=3))
    panels = []
    for img in (mean, corr):
        g = big(grey(img))
        rgb = np.stack([g, g, g], axis=-1)
        rgb[edge] = (255, 40, 40)
        panels.append(rgb)
    gap = np.full((h * up, 4, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([panels[0], gap, panels[1]], axis=1)).save(path)


def run(args: argparse.Namespace) -> int:
    from cortexcast.core.rois import load_rois, save_rois
    from cortexcast.decoder.offline.roi_detection import DetectionSettings, detect
    from cortexcast.decoder.offline.session_frames import open_session_frames

    if args.recording is None and args.tiff_folder is None:
        raise RoisCommandError("give the session's frames: --recording F.ccr or "
                               "--tiff-folder DIR")
    out = Path(args.out)
    _check_out(out, args.force)
    truth = dataclasses.replace(load_rois(args.truth), source=args.truth) if args.truth else None
    try:
        settings = DetectionSettings(diameter_px=args.diameter, soma_um=args.soma_um,
                                     um_per_px=args.um_per_px, max_frames=args.max_frames,
                                     bin_s=args.bin_s)
    except ValueError as exc:
        raise RoisCommandError(f"cortexcast rois: {exc}") from exc
    motion = _motion_settings(args.config)
    started = time.perf_counter()
    with open_session_frames(args.recording, args.tiff_folder, stem=args.tiff_stem,
                             channel=args.channel) as frames:
        rate, where = _frame_rate(args, frames)
        print(f"rois: {frames.source}: {len(frames)} frames of {frames.frame_shape[0]}x"
              f"{frames.frame_shape[1]} at {rate:.3g} Hz ({where})", flush=True)
        if truth is not None:
            truth.check_frame(frames.frame_shape)
        det = detect(frames, rate, settings, motion,
                     progress=lambda msg: print(f"rois: {msg}", flush=True))
    t0 = time.perf_counter()
    save_rois(out, det.rois, reference=det.reference, mean_image=det.mean,
              correlation_image=det.correlation)
    png = out.with_suffix(".png")
    write_overview(png, det.mean, det.correlation, det.rois)
    t_save = time.perf_counter() - t0
    total = time.perf_counter() - started
    print(f"rois: wrote {det.rois.n_neurons} ROIs with the motion reference to {out} and the "
          f"images to {png} ({t_save:.1f} s); {det.frames_read} frames read, {total:.1f} s in "
          "all", flush=True)
    if truth is not None:
        from cortexcast.decoder.offline.roi_quality import match_rois

        print(f"rois: against {args.truth}: {match_rois(det.rois, truth).summary()}", flush=True)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rois", help="find the ROIs (cells and neuropil) of a session's field of view",
        description="Detect cells in a recorded session (a cortexcast recording or ScanImage "
                    "TIFFs): motion reference as the live decoder builds it, mean and local "
                    "correlation images, cells, neuropil masks. Writes a cortexcast ROI .npz "
                    "holding the motion reference (the decoder uses it when [decoder.motion] "
                    "reference is empty) and a .png overview beside it.")
    p.add_argument("--recording", default=None, metavar="F.ccr",
                   help="cortexcast recording holding the imaging frames")
    p.add_argument("--tiff-folder", default=None, metavar="DIR",
                   help="folder of ScanImage TIFFs (used for the frames when given)")
    p.add_argument("--tiff-stem", default="", help="ScanImage file stem, if the folder holds "
                                                   "several acquisitions")
    p.add_argument("--channel", type=int, default=1, help="ScanImage channel (default 1)")
    p.add_argument("--out", required=True, metavar="ROIS.npz", help="ROI file to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--truth", default=None, metavar="ROIS.npz",
                   help="true footprints (cortexcast ROI file): report precision and recall")
    p.add_argument("--diameter", type=float, default=None, metavar="PX",
                   help="soma diameter in pixels (default: --soma-um / --um-per-px when the "
                        "pixel size is given, else estimated from the mean image)")
    p.add_argument("--soma-um", type=float, default=10.0,
                   help="soma diameter in µm, with --um-per-px (default 10)")
    p.add_argument("--um-per-px", type=float, default=None, help="pixel size in µm")
    p.add_argument("--frame-rate", type=float, default=None, metavar="HZ",
                   help="imaging rate (default: from the recording's frame times or "
                        "ScanImage's metadata)")
    p.add_argument("--max-frames", type=int, default=4000,
                   help="frames read for detection, at most (default 4000)")
    p.add_argument("--bin-s", type=float, default=0.3,
                   help="seconds of frames averaged per time bin (default 0.3)")
    p.add_argument("--config", default=None, metavar="TOML",
                   help="config whose [decoder.motion] settings (reference_frames, "
                        "max_shift_px, ...) the motion reference follows")
    p.set_defaults(func=run)
