"""The "How it works" tab: three short explanations, each with a figure drawn here with PIL from an example photo.

1. ViT: the photo cut into 16x16-pixel patches, each a token, plus one extra CLS token that the classifier reads.
2. Swin: attention inside 7x7-patch windows, alternating with windows shifted by 3 patches, so that neighbouring
   windows exchange information; patch merging halves the grid between stages.
3. DETR: a fixed set of 100 predictions matched one-to-one to the real objects (Hungarian matching) during
   training; every unmatched prediction is trained to say "no object", so no NMS is needed.
4. DETR vs RT-DETR: one coarse feature grid read densely by every query, against three feature levels read at a few
   sampled points around each query's reference box (deformable attention), with queries chosen from the encoder.

Figures are made once per process (`figures()`), in well under a second. No Gradio here.
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw

from ..assets import examples_dir
from ..render import font  # ASCII text only in the figures: Pillow's bundled font has no arrows

EXAMPLES = examples_dir()  # the checkout's assets/examples, or the installed package's copy

GOLD = (230, 159, 0)
BLUE = (0, 114, 178)
SKY = (86, 180, 233)
GREEN = (0, 158, 115)
VERMILLION = (213, 94, 0)
GREY = (120, 120, 120)
INK = (30, 30, 30)
PAPER = (255, 255, 255)

VIT_TEXT = """### ViT: an image as a sequence of patches
The photo is resized and cropped to 224×224 and cut into a 14×14 grid of 16×16-pixel **patches**. Each patch is
flattened and projected to a vector: one **token** per patch, 196 in all, plus a learned **position embedding** so
the model knows where each patch was. One extra token, **CLS**, is put in front. Every layer lets each token
**attend** to every other token. After the last layer the classifier reads only the CLS token. *Attention rollout*
follows how much of each patch flows into CLS through all the layers: that is the map in the Classify tab."""

SWIN_TEXT = """### Swin: attention in windows, then shifted windows
Swin starts from small 4×4-pixel patches (a 56×56 grid) and computes attention only **inside windows** of 7×7
patches, which is much cheaper than every patch with every patch. The next block **shifts the windows** by 3 patches,
so that patches near a window edge now share a window with their neighbours: information crosses the borders.
Between stages, **patch merging** joins each 2×2 group of patches into one, so the grid halves (56 → 28 → 14 → 7)
and the same 7×7 window covers more of the image. There is no CLS token: the classifier averages the last tokens."""

DETR_TEXT = """### DETR: detection as set prediction
A CNN turns the photo into a grid of features; a transformer **encoder** lets every position attend to every other.
The **decoder** has 100 learned **object queries**; each reads the encoder output (*cross-attention*) and predicts one
class, possibly **"no object"**, and one box. In training, the 100 predictions are matched **one-to-one** with the
real objects by the Hungarian algorithm (cost = class probability + box distance + box overlap); every unmatched
query learns to say "no object". So duplicates are penalised and no non-maximum suppression is needed: at test time
you simply keep the confident predictions."""


RTDETR_TEXT = """### DETR vs RT-DETR: where the queries read
DETR trains slowly and misses small objects: its decoder queries start as blank learned vectors and each one reads
**every** cell of a single coarse feature grid (stride 32), with attention that is nearly uniform at first.
**RT-DETR** (Zhao et al., CVPR 2024) keeps DETR's set prediction and one-to-one matching but changes where the
queries read. Its **hybrid encoder** runs self-attention (AIFI) only on the coarse level and fuses it with two finer
levels (strides 8 and 16) by convolutions, so small objects keep detail. **Query selection** starts the 300 queries
at the encoder positions that already score highest, each with a reference box. **Deformable attention** lets each
query read only a few **sampled points** per head and level around its reference box, with learned offsets and
weights: cheap, focused from the start, so training converges far faster. In the Detect tab, an RT-DETR detection
shows these points as dots."""


def _square(name: str, size: int) -> Image.Image:
    """The example photo, center-cropped to a square and resized to `size`."""
    image = Image.open(EXAMPLES / name).convert("RGB")
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return image.crop(box).resize((size, size), Image.Resampling.BICUBIC)


def _arrow(
    draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float], color=INK, width: int = 3
) -> None:
    draw.line((start, end), fill=color, width=width)
    (x0, y0), (x1, y1) = start, end
    length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-6)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    size = 4 * width
    left = (x1 - ux * size - uy * size / 2, y1 - uy * size + ux * size / 2)
    right = (x1 - ux * size + uy * size / 2, y1 - uy * size - ux * size / 2)
    draw.polygon([end, left, right], fill=color)


def _box(draw: ImageDraw.ImageDraw, xy, text: str, fill, font, text_color=PAPER, radius: int = 8) -> None:
    draw.rounded_rectangle(xy, radius=radius, fill=fill)
    x0, y0, x1, y1 = xy
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, fill=text_color, font=font, anchor="mm", align="center")


def vit_figure() -> Image.Image:
    """Patch grid on the photo -> [CLS] + patch tokens -> encoder -> class."""
    side, n = 420, 14
    cell = side / n
    photo = _square("chelsea.png", side)
    canvas = Image.new("RGB", (1000, side + 60), PAPER)
    canvas.paste(photo, (20, 40))
    draw = ImageDraw.Draw(canvas)
    title, small, label = font(20), font(14), font(16)
    draw.text((20, 10), "224x224 photo -> 14x14 patches of 16x16 px", fill=INK, font=title)
    for i in range(n + 1):  # the patch grid
        p = round(i * cell)
        draw.line((20 + p, 40, 20 + p, 40 + side), fill=PAPER, width=1)
        draw.line((20, 40 + p, 20 + side, 40 + p), fill=PAPER, width=1)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (0, 2), (6, 7)]):  # highlight a few patches
        x, y = 20 + c * cell, 40 + r * cell
        draw.rectangle((x, y, x + cell, y + cell), outline=GOLD, width=3)
    # the token sequence
    x0, y0, t = 480, 70, 44
    draw.text((x0, y0 - 30), "tokens (+ position embeddings)", fill=INK, font=label)
    _box(draw, (x0, y0, x0 + t + 10, y0 + t), "CLS", VERMILLION, small)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (0, 2)]):
        crop = photo.crop((round(c * cell), round(r * cell), round((c + 1) * cell), round((r + 1) * cell)))
        xx = x0 + (k + 1) * (t + 8) + 10
        canvas.paste(crop.resize((t, t)), (xx, y0))
        draw.rectangle((xx, y0, xx + t, y0 + t), outline=GOLD, width=2)
    draw.text((x0 + 4 * (t + 8) + 22, y0 + t / 2), "...", fill=INK, font=title, anchor="lm")
    last = x0 + 4 * (t + 8) + 50
    crop = photo.crop((round(7 * cell), round(6 * cell), round(8 * cell), round(7 * cell)))
    canvas.paste(crop.resize((t, t)), (last, y0))
    draw.rectangle((last, y0, last + t, y0 + t), outline=GOLD, width=2)
    draw.text((last + t + 10, y0 + t / 2), "197 tokens", fill=GREY, font=small, anchor="lm")
    # encoder, CLS out, head
    enc = (x0, y0 + 90, 960, y0 + 170)
    _box(draw, enc, "Transformer encoder x 12 layers\nevery token attends to every token", BLUE, label)
    for k in range(6):
        xx = x0 + 25 + k * 80
        _arrow(draw, (xx, y0 + t + 4), (xx, enc[1] - 4), GREY, 2)
    _box(draw, (x0, enc[3] + 40, x0 + 54, enc[3] + 84), "CLS", VERMILLION, small)
    _arrow(draw, (x0 + 27, enc[3] + 4), (x0 + 27, enc[3] + 36), INK, 3)
    _arrow(draw, (x0 + 60, enc[3] + 62), (x0 + 130, enc[3] + 62), INK, 3)
    _box(draw, (x0 + 136, enc[3] + 40, x0 + 300, enc[3] + 84), "MLP head -> class", GREEN, label)
    draw.text(
        (x0, enc[3] + 100),
        "Only the CLS token is classified;\nrollout traces which patches fed it.",
        fill=INK,
        font=label,
    )
    return canvas


def _windows(
    draw: ImageDraw.ImageDraw, x0: int, y0: int, side: int, grid: int, window: int, shift: int, color, width: int = 4
) -> None:
    """Window borders of a `grid`x`grid` token map shown at `side` px, windows of `window` tokens, offset `shift`."""
    cell = side / grid
    for k in range(-1, grid // window + 1):
        p = (k * window + (window - shift if shift else 0)) * cell if shift else k * window * cell
        if 0 < p < side:
            draw.line((x0 + p, y0, x0 + p, y0 + side), fill=color, width=width)
            draw.line((x0, y0 + p, x0 + side, y0 + p), fill=color, width=width)
    draw.rectangle((x0, y0, x0 + side, y0 + side), outline=color, width=width)


def swin_figure() -> Image.Image:
    """Regular windows, shifted windows (stage 1, 56x56 patches, 7x7 windows, shift 3), and patch merging."""
    side, grid, window = 336, 56, 7
    photo = _square("chelsea.png", side)
    canvas = Image.new("RGB", (1000, side + 90), PAPER)
    draw = ImageDraw.Draw(canvas)
    title, label = font(18), font(15)
    panels = [(20, "block 1: 8x8 windows of 7x7 patches", 0), (360, "block 2: shifted by 3 patches", 3)]
    for x0, text, shift in panels:
        canvas.paste(photo, (x0, 40))
        cell = side / grid
        if shift:  # the first block's windows, thin, for comparison
            _windows(draw, x0, 40, side, grid, window, 0, GOLD, width=1)
        _windows(draw, x0, 40, side, grid, window, shift, GOLD if not shift else SKY)
        draw.text((x0, 12), text, fill=INK, font=title)
        if shift:  # one shifted window straddles four of the first block's windows
            wx = x0 + (window - shift) * cell + window * cell
            wy = 40 + (window - shift) * cell + window * cell
            draw.rectangle((wx, wy, wx + window * cell, wy + window * cell), outline=VERMILLION, width=4)
    # patch merging: 4x4 tokens -> 2x2
    x0, y0, t = 730, 70, 28
    draw.text((x0, 12), "patch merging between stages", fill=INK, font=title)
    colors = [GOLD, SKY, GREEN, VERMILLION]
    for r in range(4):
        for c in range(4):
            color = colors[(r // 2) * 2 + (c // 2)]
            draw.rectangle((x0 + c * t, y0 + r * t, x0 + (c + 1) * t - 3, y0 + (r + 1) * t - 3), fill=color)
    _arrow(draw, (x0 + 4 * t + 10, y0 + 2 * t), (x0 + 4 * t + 60, y0 + 2 * t), INK, 3)
    for r in range(2):
        for c in range(2):
            xx, yy = x0 + 4 * t + 70 + c * t, y0 + t + r * t
            draw.rectangle((xx, yy, xx + t - 3, yy + t - 3), fill=colors[r * 2 + c])
    draw.text(
        (x0, y0 + 4 * t + 16),
        "each 2x2 group -> one token:\n56x56 -> 28x28 -> 14x14 -> 7x7\nthe 7x7 window "
        "sees more\nof the photo at each stage",
        fill=INK,
        font=label,
    )
    draw.text(
        (20, side + 52),
        "Attention is computed inside each square only. The red window of block 2 spans parts "
        "of four windows of block 1 (thin lines).",
        fill=INK,
        font=label,
    )
    return canvas


def detr_figure() -> Image.Image:
    """Predictions on the photo and the one-to-one matching of queries to the two real objects."""
    photo = Image.open(EXAMPLES / "coffee.png").convert("RGB")
    scale = 420 / photo.width
    photo = photo.resize((420, round(photo.height * scale)), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (1000, max(photo.height + 60, 440)), PAPER)
    canvas.paste(photo, (20, 40))
    draw = ImageDraw.Draw(canvas)
    title, label, small = font(18), font(15), font(13)
    draw.text((20, 12), "ground truth (dashed) and three of the 100 predictions", fill=INK, font=title)
    s = scale
    gt = [("cup", (170, 15, 410, 285)), ("spoon", (325, 65, 425, 325))]
    preds = [
        (12, "cup 0.97", (175, 20, 405, 280), GOLD),
        (57, "spoon 0.88", (330, 70, 420, 320), SKY),
        (81, "cup 0.41", (160, 10, 395, 300), GREY),
    ]
    for q, text, (a, b, c, d), color in preds:
        draw.rectangle((20 + a * s, 40 + b * s, 20 + c * s, 40 + d * s), outline=color, width=3)
    for q, text, (a, b, c, d), color in preds[:2]:
        _box(
            draw,
            (20 + a * s + 4, 40 + d * s - 22, 20 + a * s + 84, 40 + d * s - 4),
            f"query {q}",
            color,
            small,
            radius=4,
        )
    for name, (a, b, c, d) in gt:
        x0, y0, x1, y1 = 20 + a * s, 40 + b * s, 20 + c * s, 40 + d * s
        for k in range(int(x0), int(x1), 12):
            draw.line((k, y0, min(k + 6, x1), y0), fill=PAPER, width=2)
            draw.line((k, y1, min(k + 6, x1), y1), fill=PAPER, width=2)
        for k in range(int(y0), int(y1), 12):
            draw.line((x0, k, x0, min(k + 6, y1)), fill=PAPER, width=2)
            draw.line((x1, k, x1, min(k + 6, y1)), fill=PAPER, width=2)
    # bipartite matching
    qx, ox, top = 520, 860, 60
    draw.text((qx - 20, 12), "Hungarian matching (training)", fill=INK, font=title)
    queries = [
        (3, "dining table 0.06", GREY),
        (12, "cup 0.97", GOLD),
        (30, "cup 0.04", GREY),
        (57, "spoon 0.88", SKY),
        (81, "cup 0.41", GREY),
        (99, "spoon 0.02", GREY),
    ]
    objects = [("cup", 1), ("spoon", 3)]
    ys = [top + 20 + k * 48 for k in range(len(queries))]
    for (q, text, color), y in zip(queries, ys):
        _box(draw, (qx - 20, y - 16, qx + 150, y + 16), f"query {q}: {text}", color, small)
    oy = {1: ys[1], 3: ys[3]}
    for name, k in objects:
        _box(draw, (ox, oy[k] - 18, ox + 110, oy[k] + 18), name, GREEN, label)
        _arrow(draw, (qx + 154, ys[k]), (ox - 6, oy[k]), GREEN, 3)
    for k in (0, 2, 4, 5):
        draw.text((qx + 160, ys[k]), "-> no object", fill=GREY, font=label, anchor="lm")
    draw.text(
        (qx - 20, ys[-1] + 30),
        "Each real object gets exactly one query (lowest total cost);\n"
        "the other 98 are trained to say 'no object'. The duplicate\n'cup 0.41' loses to query 12, so "
        "duplicates are unlearned:\nno NMS is needed.",
        fill=INK,
        font=label,
    )
    return canvas


def rtdetr_figure() -> Image.Image:
    """Left: a DETR query reading every cell of one coarse grid; right: an RT-DETR query reading a few sampled points
    per level (strides 8, 16, 32) around its reference box."""
    side = 300
    photo = _square("coffee.png", side)
    canvas = Image.new("RGB", (1000, side + 140), PAPER)
    draw = ImageDraw.Draw(canvas)
    title, label = font(18), font(15)
    draw.text((20, 12), "DETR: one grid (stride 32), every cell", fill=INK, font=title)
    draw.text((520, 12), "RT-DETR: 3 levels, a few points each", fill=INK, font=title)
    left, top = 20, 50
    canvas.paste(photo, (left, top))
    n = 10  # a coarse grid over the photo
    cell = side / n
    for k in range(n + 1):
        draw.line((left + k * cell, top, left + k * cell, top + side), fill=PAPER, width=1)
        draw.line((left, top + k * cell, left + side, top + k * cell), fill=PAPER, width=1)
    qx, qy = left + side + 110, top + side / 2
    _box(draw, (qx - 60, qy - 20, qx + 60, qy + 20), "query", GOLD, label)
    for r in range(0, n, 2):
        for c in range(0, n, 2):
            draw.line((qx - 60, qy, left + (c + 0.5) * cell, top + (r + 0.5) * cell), fill=(230, 200, 120), width=1)
    draw.text((left, top + side + 10), "each query attends to all cells; starts blank", fill=INK, font=label)

    x0 = 520
    sizes = (150, 100, 60)  # three levels drawn as stacked thumbnails: strides 8, 16, 32
    cells = (20, 10, 5)
    ref = (0.12, 0.02, 0.78, 0.58)  # the reference box (the cup), fractions of the photo
    points = (
        [(0.2, 0.25), (0.7, 0.2), (0.45, 0.5), (0.6, 0.1)],
        [(0.3, 0.35), (0.65, 0.4), (0.45, 0.15)],
        [(0.45, 0.3), (0.3, 0.5)],
    )
    y = top
    for size, grid, pts, color, name in zip(sizes, cells, points, (SKY, BLUE, VERMILLION), ("8", "16", "32")):
        canvas.paste(photo.resize((size, size), Image.Resampling.BICUBIC), (x0, y))
        step = size / grid
        for k in range(grid + 1):
            draw.line((x0 + k * step, y, x0 + k * step, y + size), fill=(235, 235, 235), width=1)
            draw.line((x0, y + k * step, x0 + size, y + k * step), fill=(235, 235, 235), width=1)
        rx0, ry0, rx1, ry1 = (v * size for v in ref)
        for k in range(int(rx0), int(rx1), 8):
            draw.line((x0 + k, y + ry0, x0 + min(k + 4, rx1), y + ry0), fill=PAPER, width=2)
            draw.line((x0 + k, y + ry1, x0 + min(k + 4, rx1), y + ry1), fill=PAPER, width=2)
        for k in range(int(ry0), int(ry1), 8):
            draw.line((x0 + rx0, y + k, x0 + rx0, y + min(k + 4, ry1)), fill=PAPER, width=2)
            draw.line((x0 + rx1, y + k, x0 + rx1, y + min(k + 4, ry1)), fill=PAPER, width=2)
        for px, py in pts:
            r = 5
            cx, cy = x0 + px * size, y + py * size
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color, outline=INK, width=2)
            _arrow(draw, (x0 + 330, top + side / 2), (cx + 6, cy), color, 1)
        draw.text((x0 + size + 8, y + 4), f"stride {name}", fill=INK, font=label)
        y += size + 8
    qx = x0 + 390
    _box(draw, (qx - 60, top + side / 2 - 20, qx + 60, top + side / 2 + 20), "query", GOLD, label)
    draw.text(
        (qx - 60, top + side / 2 + 30),
        "chosen from the\nencoder's best\npositions, with a\nreference box",
        fill=INK,
        font=label,
    )
    draw.text((x0, y + 4), "dashed white: reference box; dots: sampled points", fill=INK, font=label)
    return canvas


@lru_cache(maxsize=1)
def figures() -> dict[str, Image.Image]:
    """The four figures, made once per process."""
    return {"vit": vit_figure(), "swin": swin_figure(), "detr": detr_figure(), "rtdetr": rtdetr_figure()}
