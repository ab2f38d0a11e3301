"""Drawing results onto images: DETR boxes with labels, in a fixed colour per class. No Gradio here.

Images are RGB `PIL.Image`s at their original size; boxes are (x0, y0, x1, y1) pixels.
"""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

# A fixed, colour-blind-friendly-ish palette (Okabe-Ito + Tableau), indexed by class id modulo its length.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0), (204, 121, 167),
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194),
    (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def color_for(class_id: int) -> tuple[int, int, int]:
    """The colour of a class id (deterministic)."""
    return PALETTE[class_id % len(PALETTE)]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str],
               class_ids: Sequence[int]) -> Image.Image:
    """A copy of `image` with each box outlined in its class colour and its label on a filled tag."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    scale = max(out.size) / 640
    width = max(2, round(2 * scale))
    font = _font(max(11, round(13 * scale)))
    for box, text, cid in zip(boxes, labels, class_ids, strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        color = color_for(int(cid))
        draw.rectangle((x0, y0, x1, y1), outline=color, width=width)
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx1 - tx0 + 6, ty1 - ty0 + 6
        top = y0 - th if y0 - th >= 0 else y0  # above the box, or inside it at the top edge
        draw.rectangle((x0, top, x0 + tw, top + th), fill=color)
        brightness = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        draw.text((x0 + 3 - tx0, top + 3 - ty0), text, fill=(0, 0, 0) if brightness > 140 else (255, 255, 255),
                  font=font)
    return out


COLORMAPS = {"jet": 2, "inferno": 14, "viridis": 16, "turbo": 20, "magma": 13}  # cv2.COLORMAP_* values


def heatmap(relevance, size: tuple[int, int], colormap: str = "jet"):
    """A [gh, gw] map (any non-negative scale) -> RGB uint8 array of `size` (width, height), contrast-stretched.

    The map is upsampled smoothly (bicubic) and min-max normalised for display, then coloured with an OpenCV
    colormap. Returns (rgb [h, w, 3] uint8, normalised map [h, w] float32 in [0, 1]).
    """
    import cv2
    import numpy as np

    m: np.ndarray = np.asarray(relevance, dtype=np.float32)
    m = cv2.resize(m, size, interpolation=cv2.INTER_CUBIC)  # [h, w]
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    colored = cv2.applyColorMap((m * 255).round().astype(np.uint8), COLORMAPS.get(colormap, 2))  # BGR
    return cv2.cvtColor(colored, cv2.COLOR_BGR2RGB), m


def overlay(image: Image.Image, relevance, region: Sequence[float] | None = None, opacity: float = 0.5,
            colormap: str = "jet") -> Image.Image:
    """Blend a relevance map over `image` at its original size.

    region: (x0, y0, x1, y1) pixels the map covers (a classifier's center crop); outside it the photo is dimmed,
    since the model never saw those pixels. opacity: 0 = photo only, 1 = heat map only.
    """
    import numpy as np

    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    H, W = base.shape[:2]
    x0, y0, x1, y1 = (0, 0, W, H) if region is None else (int(round(v)) for v in region)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    colored, _ = heatmap(relevance, (x1 - x0, y1 - y0), colormap)
    out = base * 0.45  # outside the region: dimmed
    inside = base[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = inside * (1 - opacity) + colored.astype(np.float32) * opacity
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
