"""Pure drawings for the Classify tab's panels: the agreement matrix of the method comparison (a heat map of
Spearman rank correlations, `vtdemo.ui.compare_panel`) and the strip of Swin stage colours next to the photo crop
(`vtdemo.ui.stages_panel`). PIL only; no Gradio.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from .. import render
from ..explain.stages import StagePCA


def diverging(rho: float | None) -> tuple[int, int, int]:
    """A colour for a correlation in [-1, 1]: blue (-1), white (0), red (+1); grey for None (a constant map)."""
    if rho is None:
        return (200, 200, 200)
    r = max(-1.0, min(1.0, rho))
    if r >= 0:
        return (255, round(255 * (1 - r * 0.75)), round(255 * (1 - r * 0.8)))
    return (round(255 * (1 + r * 0.8)), round(255 * (1 + r * 0.6)), 255)


def agreement_heatmap(labels: Sequence[str], matrix: Sequence[Sequence[float | None]], cell: int = 56) -> Image.Image:
    """The M x M Spearman matrix as a heat map with the value in each cell, rows and columns named (rows in full,
    columns by number, so that long names fit)."""
    M = len(labels)
    small = render.font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = [f"{i + 1}. {name}" for i, name in enumerate(labels)]
    left = int(max((probe.textlength(n, font=small) for n in names), default=0)) + 12
    top = 22
    img = Image.new("RGB", (left + M * cell + 8, top + M * cell + 8), "white")
    draw = ImageDraw.Draw(img)
    for j in range(M):
        text = str(j + 1)
        draw.text((left + j * cell + cell / 2 - draw.textlength(text, font=small) / 2, 4), text, fill=(60, 60, 60))
    for i in range(M):
        draw.text((4, top + i * cell + cell / 2 - 7), names[i], fill=(40, 40, 40), font=small)
        for j in range(M):
            rho = matrix[i][j]
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=diverging(rho), outline=(255, 255, 255))
            text = "–" if rho is None else f"{rho:+.2f}"
            x = box[0] + cell / 2 - draw.textlength(text, font=small) / 2
            draw.text((x, box[1] + cell / 2 - 7), text, fill=(20, 20, 20), font=small)
    return img


def stage_strip(crop: Image.Image, stages: Sequence[StagePCA], tile: int = 168) -> Image.Image:
    """The photo crop the model saw, then each stage's first three principal components as RGB (nearest-neighbour
    upsampled, so that every token is a visible square), side by side, each titled with its grid and channels."""
    small = render.font(12)
    title, gap = 34, 8
    n = 1 + len(stages)
    img = Image.new("RGB", (n * tile + (n + 1) * gap, tile + title + gap), "white")
    draw = ImageDraw.Draw(img)
    img.paste(crop.convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR), (gap, title))
    draw.text((gap, 4), "what the model saw", fill=(40, 40, 40), font=small)
    draw.text((gap, 18), f"{crop.width}x{crop.height} px crop", fill=(110, 110, 110), font=small)
    for k, s in enumerate(stages, start=1):
        rgb = (s.rgb.clamp(0, 1) * 255).round().byte().numpy()  # [H, W, 3]
        tokens = Image.fromarray(rgb, "RGB").resize((tile, tile), Image.Resampling.NEAREST)
        x = gap + k * (tile + gap)
        img.paste(tokens, (x, title))
        draw.text((x, 4), f"stage {s.stage + 1}: {s.grid[0]}x{s.grid[1]} tokens", fill=(40, 40, 40), font=small)
        held = sum(s.explained)
        draw.text((x, 18), f"{s.channels} channels · PCs hold {held:.0%}", fill=(110, 110, 110), font=small)
    return img
