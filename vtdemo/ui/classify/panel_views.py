"""Pure drawings for the Classify tab's panels: the agreement matrix of the method comparison (a heat map of
Spearman rank correlations, `vtdemo.ui.classify.compare`) and the strip of Swin stage colours next to the photo crop
(`vtdemo.ui.classify.stages`). PIL only; no Gradio.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from ... import render
from ...pipeline import StagePCA


def diverging(rho: float | None) -> tuple[int, int, int]:
    """A colour for a correlation in [-1, 1]: blue (-1), white (0), red (+1); grey for None (a constant map)."""
    if rho is None:
        return (200, 200, 200)
    r = max(-1.0, min(1.0, rho))
    if r >= 0:
        return (255, round(255 * (1 - r * 0.75)), round(255 * (1 - r * 0.8)))
    return (round(255 * (1 + r * 0.8)), round(255 * (1 + r * 0.6)), 255)


def agreement_heatmap(labels: Sequence[str], matrix: Sequence[Sequence[float | None]], cell: int = 60) -> Image.Image:
    """The M x M Spearman matrix as a heat map with the value in each cell ("n/a" for a constant map), rows named
    in full, columns by number; a blank band on top, where the image's download button sits (it hid column M's
    number)."""
    M = len(labels)
    small = render.font(15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = [f"{i + 1}. {name}" for i, name in enumerate(labels)]
    left = int(max((probe.textlength(n, font=small) for n in names), default=0)) + 12
    band = 40  # under the download button
    top = band + 22
    img = Image.new("RGB", (left + M * cell + 8, top + M * cell + 8), "white")
    draw = ImageDraw.Draw(img)
    for j in range(M):
        text = str(j + 1)
        x = left + j * cell + cell / 2 - draw.textlength(text, font=small) / 2
        draw.text((x, band + 4), text, fill=(60, 60, 60), font=small)
    for i in range(M):
        draw.text((4, top + i * cell + cell / 2 - 7), names[i], fill=(40, 40, 40), font=small)
        for j in range(M):
            rho = matrix[i][j]
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=diverging(rho), outline=(255, 255, 255))
            text = "n/a" if rho is None else f"{rho:+.2f}"
            x = box[0] + cell / 2 - draw.textlength(text, font=small) / 2
            draw.text((x, box[1] + cell / 2 - 7), text, fill=(20, 20, 20), font=small)
    return img


def captioned(image: Image.Image, lines: Sequence[str], size: int = 18) -> Image.Image:
    """`image` under a white band holding `lines` (the first in dark text, the others grey): on top, because a
    gallery lays its own caption over the bottom of a thumbnail."""
    font = render.font(size)
    band = 6 + (size + 5) * len(lines)
    out = Image.new("RGB", (image.width, image.height + band), "white")
    out.paste(image.convert("RGB"), (0, band))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((4, 4 + k * (size + 5)), line, fill=(30, 30, 30) if k == 0 else (80, 80, 80), font=font)
    return out


def stage_strip(crop: Image.Image, stages: Sequence[StagePCA], tile: int = 200, columns: int = 3) -> Image.Image:
    """The photo crop the model saw, then each stage's first three principal components as RGB (nearest-neighbour
    upsampled, so that every token is a visible square), left to right and top to bottom (`columns` a row, so that
    the tiles stay large in a narrow column), each titled with its grid, channels and the variance the three
    components hold; the last cell, when free, says how patch merging links them."""
    small = render.font(15)
    title, gap = 40, 10
    n = 1 + len(stages)
    rows = -(-(n + 1) // columns)  # one more cell for the legend
    img = Image.new("RGB", (columns * tile + (columns + 1) * gap, rows * (tile + title + gap) + gap), "white")
    draw = ImageDraw.Draw(img)

    def cell(k: int) -> tuple[int, int]:
        return gap + (k % columns) * (tile + gap), gap + (k // columns) * (tile + title + gap)

    x, y = cell(0)
    img.paste(crop.convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR), (x, y + title))
    draw.text((x, y), "what the model saw", fill=(40, 40, 40), font=small)
    draw.text((x, y + 18), f"{crop.width}x{crop.height} px of the photo", fill=(110, 110, 110), font=small)
    for k, s in enumerate(stages, start=1):
        rgb = (s.rgb.clamp(0, 1) * 255).round().byte().numpy()  # [H, W, 3]
        x, y = cell(k)
        img.paste(Image.fromarray(rgb, "RGB").resize((tile, tile), Image.Resampling.NEAREST), (x, y + title))
        draw.text((x, y), f"stage {s.stage + 1}: {s.grid[0]}x{s.grid[1]} tokens", fill=(40, 40, 40), font=small)
        held = sum(s.explained)
        draw.text((x, y + 18), f"{s.channels} channels · PCs {held:.0%}", fill=(110, 110, 110), font=small)
    if n < rows * columns:
        x, y = cell(n)
        legend = [
            "patch merging:",
            "2x2 tokens -> 1,",
            "channels x2,",
            "grid / 2 each stage",
            "",
            "colour = PCs 1-3",
            "(red, green, blue)",
        ]
        for i, line in enumerate(legend):
            draw.text((x + 6, y + title + 8 + 22 * i), line, fill=(70, 70, 70), font=small)
    return img


def _grid_image(tiles: Sequence[tuple[Image.Image, str]], tile: int, columns: int, title: int = 22) -> Image.Image:
    """Titled square tiles, `columns` a row, on white."""
    small, gap = render.font(15), 8
    rows = -(-len(tiles) // columns)
    img = Image.new("RGB", (columns * (tile + gap) + gap, rows * (tile + title + gap) + gap), "white")
    draw = ImageDraw.Draw(img)
    for k, (picture, text) in enumerate(tiles):
        x, y = gap + (k % columns) * (tile + gap), gap + (k // columns) * (tile + title + gap)
        draw.text((x, y), text, fill=(40, 40, 40), font=small)
        img.paste(picture.convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR), (x, y + title))
    return img


def _masked(crop: Image.Image, mask) -> Image.Image:  # noqa: ANN001 - a bool tensor [gh, gw]
    """The crop where the mask holds, darkened to a fifth elsewhere (nearest-neighbour: each patch a square)."""
    import numpy as np

    keep = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, "L").resize(crop.size, Image.Resampling.NEAREST)
    return Image.composite(crop.convert("RGB"), Image.eval(crop.convert("RGB"), lambda v: v // 5), keep)


def heads_grid(crop: Image.Image, maps, masks, tile: int = 150, columns: int = 4) -> Image.Image:  # noqa: ANN001
    """Every head's CLS attention over the crop the model saw (maps [nh, gh, gw]), then DINO's mask of each
    (masks bool [nh, gh, gw]: the photo where the head keeps 60 % of its attention), head by head."""
    tiles: list[tuple[Image.Image, str]] = []
    for h in range(maps.shape[0]):
        tiles.append((render.overlay(crop, maps[h].numpy(), opacity=0.6), f"head {h + 1}: attention"))
        tiles.append((_masked(crop, masks[h].numpy()), f"head {h + 1}: 60% mask"))
    return _grid_image(tiles, tile, columns + columns % 2)  # an even count: attention and mask side by side


def feature_strip(crops: Sequence[Image.Image], colours: Sequence, tile: int = 220) -> Image.Image:  # noqa: ANN001
    """For each photo, the crop the model saw and its patch features' colours (`FeatureColours.rgb`, nearest
    upsampled: every patch a square; background black)."""
    tiles: list[tuple[Image.Image, str]] = []
    for k, (crop, c) in enumerate(zip(crops, colours, strict=True), start=1):
        rgb = (c.rgb.clamp(0, 1) * 255).round().byte().numpy()  # [gh, gw, 3]
        name = f"photo {k}" if len(crops) > 1 else "the photo"
        tiles.append((crop, f"{name}: what the model saw"))
        tiles.append((Image.fromarray(rgb, "RGB").resize((tile, tile), Image.Resampling.NEAREST), f"{name}: features"))
    return _grid_image(tiles, tile, 2)


def registers_pair(crop: Image.Image, maps: Sequence, titles: Sequence[str], tile: int = 220) -> Image.Image:  # noqa: ANN001
    """The same photo's last-layer CLS attention (mean of heads, [gh, gw] each) from two models, side by side."""
    return _grid_image(
        [(render.overlay(crop, m.numpy(), opacity=0.6), t) for m, t in zip(maps, titles, strict=True)], tile, 2
    )
