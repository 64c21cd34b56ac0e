"""The report's PNGs, drawn with Pillow (no plotting library): frame strips, the per-pixel
correlation map and the neuron-dropping curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_BG = (255, 255, 255)
_INK = (20, 20, 20)
_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
"""Ten distinguishable line colours: a learning-curve report has 3 methods x 3 trial counts."""


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _frame_rgb(frame: np.ndarray, mask: np.ndarray, scale: int) -> Image.Image:
    f = np.nan_to_num(np.asarray(frame, np.float64), nan=128.0)
    f = np.clip(f, 0, 255)
    f = np.where(mask, f, 0.35 * f + 0.65 * 128)     # outside the mask: faded to grey
    img = Image.fromarray(f.astype(np.uint8), mode="L").convert("RGB")
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def frame_indices(length: int, frames: int, start: int, stop: int) -> list[int]:
    """``frames`` evenly spaced frames of the scored range (the whole clip if shorter)."""
    lo, hi = (start, min(stop, length)) if min(stop, length) - start >= frames else (0, length)
    return sorted({int(round(x)) for x in np.linspace(lo, hi - 1, frames)})


def strip_png(rows: Sequence[tuple[str, np.ndarray, np.ndarray]], mask: np.ndarray,
              path: Path, *, frames: int = 8, start: int = 30, stop: int = 300,
              scale: int = 2) -> None:
    """For each (title, target (T, H, W), reconstruction (T, H, W)): a title line, the
    ground-truth frames, the reconstructed frames underneath."""
    h, w = mask.shape
    fh, fw, gap, label_w, title_h = h * scale, w * scale, 2, 44, 14
    cols = max(len(frame_indices(len(t), frames, start, stop)) for _, t, _ in rows)
    width = label_w + cols * (fw + gap)
    height = len(rows) * (title_h + 2 * (fh + gap) + 6)
    img = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(img)
    font = _font()
    y = 0
    for title, target, recon in rows:
        idx = frame_indices(len(target), frames, start, stop)
        draw.text((2, y + 1), title + "   frames " + ", ".join(map(str, idx)), fill=_INK,
                  font=font)
        y += title_h
        for name, clip in (("truth", target), ("recon", recon)):
            draw.text((2, y + fh // 2 - 6), name, fill=_INK, font=font)
            for c, t in enumerate(idx):
                img.paste(_frame_rgb(clip[t], mask, scale), (label_w + c * (fw + gap), y))
            y += fh + gap
        y += 6
    img.save(path)


def _diverging(x: np.ndarray) -> np.ndarray:
    """-1 blue .. 0 white .. +1 red; NaN grey. (H, W) -> (H, W, 3) uint8."""
    v = np.clip(np.nan_to_num(x, nan=0.0), -1, 1)[..., None]
    white = np.array([255.0, 255.0, 255.0])
    red, blue = np.array([178.0, 24.0, 43.0]), np.array([33.0, 102.0, 172.0])
    rgb = np.where(v >= 0, white + v * (red - white), white + (-v) * (blue - white))
    rgb[np.isnan(x)] = (160, 160, 160)
    return rgb.astype(np.uint8)


def map_png(corr: np.ndarray, mask: np.ndarray, path: Path, *, title: str = "",
            scale: int = 6) -> None:
    """The correlation map (diverging colours, -1..1), the mask's edge in black, a colour bar."""
    h, w = corr.shape
    rgb = _diverging(corr)
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1)
                    & np.roll(mask, -1, 1))
    rgb[edge] = (0, 0, 0)
    body = Image.fromarray(rgb, "RGB").resize((w * scale, h * scale), Image.NEAREST)
    bar_h, title_h = 24, 16
    img = Image.new("RGB", (body.width, body.height + bar_h + title_h), _BG)
    img.paste(body, (0, title_h))
    draw = ImageDraw.Draw(img)
    font = _font()
    draw.text((2, 2), title, fill=_INK, font=font)
    ramp = _diverging(np.linspace(-1, 1, body.width)[None].repeat(8, 0))
    img.paste(Image.fromarray(ramp, "RGB"), (0, title_h + body.height + 2))
    y = title_h + body.height + 11
    draw.text((2, y), "-1", fill=_INK, font=font)
    draw.text((body.width // 2 - 3, y), "0", fill=_INK, font=font)
    draw.text((body.width - 14, y), "+1", fill=_INK, font=font)
    img.save(path)


def curve_png(curves: dict[str, list[dict[str, Any]]], path: Path, *, neurons: int,
              size: tuple[int, int] = (520, 340), title: str = "pixel correlation vs neurons",
              x_label: str = "neurons kept (random subsets)") -> None:
    """Score (mean over draws, +- std) against the number of neurons kept, log2 x axis
    (any other count: ``fraction`` x ``neurons`` is the tick, with its own labels)."""
    w, h = size
    left, right, top, bottom = 56, 130, 24, 40
    img = Image.new("RGB", size, _BG)
    draw = ImageDraw.Draw(img)
    font = _font()
    xs = sorted({p["fraction"] for pts in curves.values() for p in pts})
    ys = [v for pts in curves.values() for p in pts if p["mean"] is not None
          for v in (p["mean"] - (p["std"] or 0), p["mean"] + (p["std"] or 0))]
    if not xs or not ys:
        draw.text((10, 10), "no scores", fill=_INK, font=font)
        img.save(path)
        return
    y_lo, y_hi = min(0.0, min(ys)), max(ys) if max(ys) > 0 else 1.0
    y_hi += 0.05 * (y_hi - y_lo) or 0.1
    lx = np.log2(xs)
    x_lo, x_hi = float(lx.min()), float(lx.max()) if lx.max() > lx.min() else float(lx.min()) + 1

    def px(frac: float, val: float) -> tuple[float, float]:
        x = left + (np.log2(frac) - x_lo) / (x_hi - x_lo) * (w - left - right)
        y = top + (y_hi - val) / (y_hi - y_lo) * (h - top - bottom)
        return float(x), float(y)

    draw.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill=_INK)
    for f in xs:
        x, _ = px(f, y_lo)
        draw.line([(x, h - bottom), (x, h - bottom + 4)], fill=_INK)
        draw.text((x - 12, h - bottom + 6), f"{int(round(f * neurons))}", fill=_INK, font=font)
    for v in np.linspace(y_lo, y_hi, 5):
        _, y = px(xs[0], v)
        draw.line([(left - 4, y), (left, y)], fill=_INK)
        draw.text((4, y - 6), f"{v:.2f}", fill=_INK, font=font)
    draw.text((left, h - 14), x_label, fill=_INK, font=font)
    draw.text((left, 4), title, fill=_INK, font=font)
    for k, (label, pts) in enumerate(curves.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        good = [p for p in sorted(pts, key=lambda p: p["fraction"]) if p["mean"] is not None]
        xy = [px(p["fraction"], p["mean"]) for p in good]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for p, (x, y) in zip(good, xy):
            sd = p["std"] or 0.0
            _, y1 = px(p["fraction"], p["mean"] - sd)
            _, y2 = px(p["fraction"], p["mean"] + sd)
            draw.line([(x, y1), (x, y2)], fill=colour)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((w - right + 8, top + 14 * k), label, fill=colour, font=font)
    img.save(path)
