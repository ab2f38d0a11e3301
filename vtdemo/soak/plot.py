"""The soak's PNG, drawn with PIL: the server's RSS, open files and temporary-file bytes over time, and every
request's latency per endpoint (log scale; busy and failed requests marked), with the warm-up's end as a dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .outcome import BUSY, FAILED
from .report import Request, Sample, Summary

WIDTH, PANEL_H, TOP = 1400, 250, 56
LEFT, RIGHT, PAD_TOP, PAD_BOTTOM = 90, 310, 30, 42
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
    (188, 189, 34),
    (127, 127, 127),
    (0, 0, 128),
    (128, 128, 0),
    (0, 128, 128),
)
FAILED_COLOR, BUSY_COLOR, GRID, AXIS, WARM = (
    (214, 39, 40),
    (160, 160, 160),
    (228, 228, 228),
    (60, 60, 60),
    (120, 120, 120),
)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, AttributeError, OSError):
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values (1, 2 or 5 x 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.2e}"


class Panel:
    """One plot area: maps data to pixels and draws its axes, grid, labels and title."""

    def __init__(
        self, draw: ImageDraw.ImageDraw, top: int, x_max: float, y_lo: float, y_hi: float, log: bool = False
    ) -> None:
        self.draw, self.log = draw, log
        self.x0, self.x1 = LEFT, WIDTH - RIGHT
        self.y0, self.y1 = top + PAD_TOP, top + PANEL_H - PAD_BOTTOM  # pixel top, pixel bottom
        self.x_max = max(x_max, 1e-9)
        self.lo, self.hi = (math.log10(y_lo), math.log10(y_hi)) if log else (y_lo, y_hi)
        if self.hi <= self.lo:
            self.hi = self.lo + 1.0

    def px(self, x: float, y: float) -> tuple[float, float]:
        v = math.log10(max(y, 1e-9)) if self.log else y
        fx = self.x0 + (self.x1 - self.x0) * x / self.x_max
        fy = self.y1 - (self.y1 - self.y0) * (v - self.lo) / (self.hi - self.lo)
        return fx, min(max(fy, self.y0), self.y1)

    def frame(self, title: str, y_label: str, x_label: str, f: Font, small: Font, warmup_end: float) -> None:
        d = self.draw
        if self.log:
            y_ticks = [10.0**k for k in range(math.floor(self.lo), math.ceil(self.hi) + 1)]
        else:
            y_ticks = nice_ticks(self.lo, self.hi)
        for v in y_ticks:
            _, y = self.px(0, v)
            inside = self.lo - 1e-9 <= (math.log10(v) if self.log else v) <= self.hi + 1e-9
            if inside:
                d.line((self.x0, y, self.x1, y), fill=GRID)
                d.text((self.x0 - 6, y), _label(v), fill=AXIS, font=small, anchor="rm")
        for v in nice_ticks(0, self.x_max / 60, 10):
            x, _ = self.px(v * 60, self.lo if not self.log else 10**self.lo)
            if self.x0 <= x <= self.x1 + 0.5:
                d.line((x, self.y0, x, self.y1), fill=GRID)
                d.text((x, self.y1 + 4), _label(v), fill=AXIS, font=small, anchor="mt")
        if 0 < warmup_end < self.x_max:
            x, _ = self.px(warmup_end, 10**self.lo if self.log else self.lo)
            for y in range(self.y0, self.y1, 8):
                d.line((x, y, x, min(y + 4, self.y1)), fill=WARM, width=1)
            d.text((x + 3, self.y0 + 2), "warm-up ends", fill=WARM, font=small)
        d.rectangle((self.x0, self.y0, self.x1, self.y1), outline=AXIS)
        d.text((self.x0, self.y0 - 6), title, fill=(0, 0, 0), font=f, anchor="lb")
        d.text(((self.x0 + self.x1) / 2, self.y1 + 22), x_label, fill=AXIS, font=small, anchor="mt")
        d.text((12, (self.y0 + self.y1) / 2), y_label, fill=AXIS, font=small, anchor="lm")

    def line(self, points: Sequence[tuple[float, float]], color: tuple[int, int, int]) -> None:
        if len(points) == 1:
            x, y = self.px(*points[0])
            self.draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=color)
        elif points:
            self.draw.line([self.px(x, y) for x, y in points], fill=color, width=2)


def _series_panel(
    draw: ImageDraw.ImageDraw,
    top: int,
    samples: Sequence[Sample],
    value: Callable[[Sample], float],
    x_max: float,
    title: str,
    unit: str,
    fonts: tuple[Font, Font],
    warmup_end: float,
) -> None:
    values = [value(s) for s in samples]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    span = max(hi - lo, abs(hi) * 0.05, 1.0)
    lo, hi = max(0.0, lo - span * 0.15), hi + span * 0.15
    p = Panel(draw, top, x_max, lo, hi)
    p.frame(title, unit, "minutes since the soak started", *fonts, warmup_end)
    p.line([(s.t_s, v) for s, v in zip(samples, values, strict=True)], PALETTE[0])
    if not samples:
        draw.text(((p.x0 + p.x1) / 2, (p.y0 + p.y1) / 2), "not sampled", fill=AXIS, font=fonts[0], anchor="mm")


def legend_key(r: Request) -> str:
    """The latency panel's colour: the endpoint, and all bad inputs in one colour (the table keeps them apart)."""
    return r.endpoint if r.expect == "result" else "bad inputs (refused)"


def draw_report(
    path: Path, requests: Sequence[Request], samples: Sequence[Sample], summary: Summary, title: str
) -> None:
    f, small = font(16), font(13)
    height = TOP + 4 * PANEL_H
    img = Image.new("RGB", (WIDTH, height), "white")
    d = ImageDraw.Draw(img)
    d.text((LEFT, 14), title, fill=(0, 0, 0), font=font(20))
    verdict = "PASS" if summary.passed else "FAIL"
    d.text((WIDTH - 20, 14), verdict, fill=(0, 128, 0) if summary.passed else FAILED_COLOR, font=font(20), anchor="ra")
    x_max = max([summary.duration_s] + [s.t_s for s in samples] + [r.start_s + r.latency_s for r in requests])
    growth = "" if summary.rss_growth_pct is None else f" ({summary.rss_growth_pct:+.1f} % after warm-up)"
    panels: list[tuple[str, str, Callable[[Sample], float]]] = [
        (f"Server memory (RSS){growth}", "MiB", lambda s: s.rss_mib),
        ("Server's open file descriptors (files, sockets, pipes)", "count", lambda s: float(s.open_files)),
        ("Gradio temporary files", "MiB", lambda s: s.temp_mib),
    ]
    for i, (name, unit, value) in enumerate(panels):
        _series_panel(d, TOP + i * PANEL_H, samples, value, x_max, name, unit, (f, small), summary.warmup_end_s)

    # latency per endpoint
    top = TOP + 3 * PANEL_H
    lat = [r.latency_s for r in requests if r.latency_s > 0]
    lo = 10 ** math.floor(math.log10(min(lat))) if lat else 0.01
    hi = 10 ** math.ceil(math.log10(max(lat))) if lat else 1.0
    p = Panel(d, top, x_max, lo, hi, log=True)
    p.frame(
        "Latency of each request (log scale)",
        "seconds",
        "minutes since the soak started",
        f,
        small,
        summary.warmup_end_s,
    )
    keys = sorted({legend_key(r) for r in requests})
    colors = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}
    for r in requests:
        x, y = p.px(r.start_s, max(r.latency_s, lo))
        if r.outcome == FAILED:
            d.line((x - 4, y - 4, x + 4, y + 4), fill=FAILED_COLOR, width=2)
            d.line((x - 4, y + 4, x + 4, y - 4), fill=FAILED_COLOR, width=2)
        elif r.outcome == BUSY:
            d.rectangle((x - 2, y - 2, x + 2, y + 2), outline=BUSY_COLOR)
        else:
            d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colors[legend_key(r)])
    # legend: every endpoint of the latency panel, then the markers
    lx, ly = WIDTH - RIGHT + 16, TOP + PAD_TOP
    d.text((lx, ly - 20), "endpoints (latency panel)", fill=(0, 0, 0), font=small)
    for k in keys:
        d.ellipse((lx, ly + 4, lx + 8, ly + 12), fill=colors[k])
        d.text((lx + 14, ly), k, fill=AXIS, font=small)
        ly += 18
    ly += 6
    d.rectangle((lx, ly + 4, lx + 8, ly + 12), outline=BUSY_COLOR)
    d.text((lx + 14, ly), "busy", fill=AXIS, font=small)
    ly += 18
    d.line((lx, ly + 3, lx + 8, ly + 11), fill=FAILED_COLOR, width=2)
    d.line((lx, ly + 11, lx + 8, ly + 3), fill=FAILED_COLOR, width=2)
    d.text((lx + 14, ly), "failed", fill=AXIS, font=small)
    ly += 30
    for t in summary.targets:
        d.text(
            (lx, ly),
            f"{'PASS' if t.passed else 'FAIL'}  {t.name}",
            fill=(0, 110, 0) if t.passed else FAILED_COLOR,
            font=small,
        )
        ly += 18
    img.save(path)
