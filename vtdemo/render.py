"""Drawing results onto images: DETR boxes with labels, in a fixed colour per class. No Gradio here.

Images are RGB `PIL.Image`s at their original size; boxes are (x0, y0, x1, y1) pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

# A fixed, colour-blind-friendly-ish palette (Okabe-Ito + Tableau), indexed by class id modulo its length.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def color_for(class_id: int) -> tuple[int, int, int]:
    """The colour of a class id (deterministic)."""
    return PALETTE[class_id % len(PALETTE)]


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at `size` px (a bitmap font on Pillow < 10.1, which has no sized default)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_boxes(
    image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str], class_ids: Sequence[int]
) -> Image.Image:
    """A copy of `image` with each box outlined in its class colour and its label on a filled tag."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    scale = max(out.size) / 640
    width = max(2, round(2 * scale))
    label_font = font(max(11, round(13 * scale)))
    for box, text, cid in zip(boxes, labels, class_ids, strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        color = color_for(int(cid))
        draw.rectangle((x0, y0, x1, y1), outline=color, width=width)
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=label_font)
        tw, th = tx1 - tx0 + 6, ty1 - ty0 + 6
        top = y0 - th if y0 - th >= 0 else y0  # above the box, or inside it at the top edge
        draw.rectangle((x0, top, x0 + tw, top + th), fill=color)
        brightness = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        draw.text(
            (x0 + 3 - tx0, top + 3 - ty0),
            text,
            fill=(0, 0, 0) if brightness > 140 else (255, 255, 255),
            font=label_font,
        )
    return out


def heatmap(relevance, size: tuple[int, int]):
    """A [gh, gw] map (any non-negative scale) -> RGB uint8 array [h, w, 3] of `size` (width, height).

    The map is upsampled smoothly (bicubic), min-max normalised for display and coloured with OpenCV's jet colormap.
    """
    import cv2
    import numpy as np

    m: np.ndarray = np.asarray(relevance, dtype=np.float32)
    m = cv2.resize(m, size, interpolation=cv2.INTER_CUBIC)  # [h, w]
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    colored = cv2.applyColorMap((m * 255).round().astype(np.uint8), cv2.COLORMAP_JET)  # BGR
    return cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)


def overlay(image: Image.Image, relevance, region: Sequence[float] | None = None, opacity: float = 0.5) -> Image.Image:
    """Blend a relevance map over `image` at its original size.

    region: (x0, y0, x1, y1) pixels the map covers (a classifier's center crop); outside it the photo is dimmed,
    since the model never saw those pixels. opacity: 0 = photo only, 1 = heat map only.
    """
    import numpy as np

    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    H, W = base.shape[:2]
    x0, y0, x1, y1 = (0, 0, W, H) if region is None else (int(round(v)) for v in region)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    colored = heatmap(relevance, (x1 - x0, y1 - y0))
    out = base * 0.45  # outside the region: dimmed
    inside = base[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = inside * (1 - opacity) + colored.astype(np.float32) * opacity
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


DISPLAY_MAX = 1280  # long side of the images the app shows (the browser shows them smaller anyway)


def fit(image: Image.Image, max_side: int = DISPLAY_MAX) -> tuple[Image.Image, float]:
    """A copy no larger than `max_side` on its long side, and the scale (shown / original)."""
    w, h = image.size
    scale = min(1.0, max_side / max(w, h))
    if scale >= 1.0:
        return image, 1.0
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR), scale


def mark_point(image: Image.Image, point: tuple[float, float], scale: float = 1.0) -> Image.Image:
    """Draw a small cross-hair at `point` (original pixels) on a displayed image of scale `scale`."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    x, y = point[0] * scale, point[1] * scale
    r = max(6, round(max(out.size) / 60))
    for width, color in ((5, (0, 0, 0)), (2, (255, 255, 255))):
        draw.line((x - r, y, x + r, y), fill=color, width=width)
        draw.line((x, y - r, x, y + r), fill=color, width=width)
    return out


def dashed_rectangle(
    draw: ImageDraw.ImageDraw, box: Sequence[float], color: tuple[int, int, int], width: int, dash: int = 8
) -> None:
    """Outline `box` (x0, y0, x1, y1) with dashes of `dash` pixels."""
    x0, y0, x1, y1 = box
    for a, b, horizontal, fixed in ((x0, x1, True, y0), (x0, x1, True, y1), (y0, y1, False, x0), (y0, y1, False, x1)):
        t = a
        while t < b:
            e = min(t + dash, b)
            draw.line((t, fixed, e, fixed) if horizontal else (fixed, t, fixed, e), fill=color, width=width)
            t += 2 * dash


def detection_label(label: str, score: float) -> str:
    return f"{label} {score:.2f}"


def draw_segments(
    image: Image.Image,
    segmentation,
    colors: dict[int, tuple[int, int, int]],
    labels: dict[int, str] | None = None,
    alpha: float = 0.55,
    highlight: int | None = None,
) -> Image.Image:
    """A panoptic segmentation over `image` (same size): each segment id's pixels blended with its colour, white
    outlines between segments, and each label at the pixel of its segment farthest from its border (OpenCV's
    distance transform, so it lands inside non-convex shapes). segmentation: [H, W] int, 0 = no segment.
    highlight: one segment id drawn at full strength with a thick outline, the others faded."""
    import cv2
    import numpy as np

    seg = np.asarray(segmentation, dtype=np.int32)  # [H, W]
    base = np.asarray(image.convert("RGB"), dtype=np.float32)  # [H, W, 3]
    lut = np.zeros((int(seg.max(initial=0)) + 1, 3), dtype=np.float32)
    strength = np.zeros(len(lut), dtype=np.float32)
    for sid, color in colors.items():
        if 0 < sid < len(lut):
            lut[sid] = color
            strength[sid] = alpha if highlight in (None, sid) else alpha * 0.35
    if highlight is not None and 0 < highlight < len(lut):
        strength[highlight] = min(1.0, alpha + 0.3)
    a = strength[seg][..., None]  # [H, W, 1]
    out = base * (1 - a) + lut[seg] * a
    edge = np.zeros(seg.shape, dtype=bool)  # a pixel whose right or lower neighbour is another segment
    edge[:, :-1] |= seg[:, 1:] != seg[:, :-1]
    edge[:-1, :] |= seg[1:, :] != seg[:-1, :]
    width = max(1, round(max(seg.shape) / 400))
    kernel = np.ones((2 * width - 1, 2 * width - 1), np.uint8)
    out[cv2.dilate(edge.astype(np.uint8), kernel) > 0] = 255
    if highlight is not None and 0 < highlight < len(lut):
        inside = (seg == highlight).astype(np.uint8)
        ring = cv2.dilate(inside, np.ones((3 * width, 3 * width), np.uint8)) - inside
        out[ring > 0] = (0, 0, 0)
    result = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(result)
    text_font = font(max(11, round(max(seg.shape) / 50)))
    for sid, text in (labels or {}).items():
        inside = np.pad((seg == sid).astype(np.uint8), 1)  # a border of zeros: distances to the image edge count
        if not inside.any():
            continue
        dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
        y, x = np.unravel_index(int(dist.argmax()), dist.shape)
        draw.text(
            (int(x) - 1, int(y) - 1),
            text,
            fill=(255, 255, 255),
            stroke_width=2,
            stroke_fill=(0, 0, 0),
            font=text_font,
            anchor="mm",
        )
    return result
