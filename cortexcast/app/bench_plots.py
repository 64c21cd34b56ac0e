"""`bench`'s latency picture: the cumulative distribution of every stage, as a PNG.

Drawn with Pillow (the project has no plotting library): one curve per stage, latency on a
log axis (stages span 0.05 to 50 ms), the share of frames at or below it on the other, with
p50 and p99 marked. The display keeps the percentiles (``latency_cdf_ms`` in its stats).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

_BG, _INK, _GRID = (255, 255, 255), (20, 20, 20), (225, 225, 225)
_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (23, 190, 207), (0, 0, 0)]


def latency_cdf_png(cdf: dict[str, Sequence[Sequence[float]]], path: Path, *,
                    title: str = "latency per stage", size: tuple[int, int] = (860, 420)) -> Path:
    """Write the CDF of each stage (``{stage: [[percentile, ms], ...]}``) to ``path``."""
    w, h = size
    left, right, top, bottom = 50, 340, 28, 44
    img = Image.new("RGB", size, _BG)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    values = [ms for pts in cdf.values() for _, ms in pts if ms > 0]
    draw.text((left, 6), title, fill=_INK, font=font)
    if not values:
        draw.text((left, top + 20), "no latency samples", fill=_INK, font=font)
        img.save(path)
        return path
    lo = 10 ** math.floor(math.log10(max(min(values), 1e-3)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    hi = hi if hi > lo else lo * 10

    def px(ms: float, pct: float) -> tuple[float, float]:
        x = left + (math.log10(max(ms, lo)) - math.log10(lo)) / (
            math.log10(hi) - math.log10(lo)) * (w - left - right)
        return x, top + (100 - pct) / 100 * (h - top - bottom)

    decade = lo
    while decade <= hi * 1.0001:
        x, _ = px(decade, 0)
        draw.line([(x, top), (x, h - bottom)], fill=_GRID)
        draw.text((x - 10, h - bottom + 6), f"{decade:g}", fill=_INK, font=font)
        decade *= 10
    for pct in (0, 50, 90, 99, 100):
        _, y = px(lo, pct)
        draw.line([(left, y), (w - right, y)], fill=_GRID)
        draw.text((8, y - 6), f"{pct}%", fill=_INK, font=font)
    draw.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill=_INK)
    draw.text((left, h - 16), "latency (ms, log scale); y: share of frames at or below",
              fill=_INK, font=font)
    for k, (stage, pts) in enumerate(cdf.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        xy = [px(ms, pct) for pct, ms in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=3 if stage == "end_to_end" else 2)
        by_pct = {pct: ms for pct, ms in pts}
        p50, p99 = by_pct.get(50.0), by_pct.get(99.0)
        label = stage.replace("\u2192", " -> ") + (f"  p50 {p50:.2f} / p99 {p99:.2f}" if p50 is not None
                         and p99 is not None else "")
        draw.text((w - right + 8, top + 14 * k), label, fill=colour, font=font)
    img.save(path)
    return path
