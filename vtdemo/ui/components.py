"""Two small Gradio component variants the app needs (same front-end as the originals).

- `SafeImage`: a `gr.Image` whose upload is handed over as a file path *without* being opened by Gradio, so that
  every image, good or bad, is read by `vtdemo.images.load_image`, which gives a one-line reason for anything it
  cannot use (text renamed .jpg, truncated files, decompression bombs) instead of Gradio's generic "Error".
- `BoxImage`: a `gr.AnnotatedImage` that accepts a `BoxView` and writes each box's mask once per run, small, and
  reuses it: re-thresholding a 1280x720 photo then costs a few milliseconds instead of one full-size PNG per box
  (which is what `gr.AnnotatedImage.postprocess` writes).
"""

from __future__ import annotations

import shutil
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import numpy as np
from gradio.components.annotated_image import AnnotatedImageData, Annotation
from gradio.data_classes import FileData
from PIL import Image

MASK_MAX = 480  # long side of the box masks; the browser stretches them over the photo


class SafeImage(gr.Image):
    """`gr.Image(type="filepath")` that never decodes the upload itself (see the module docstring)."""

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload):  # type: ignore[override]
        if payload is None:
            return None
        if self.type != "filepath" or (payload.url and payload.url.startswith("data:")):
            return super().preprocess(payload)
        if payload.path is None:
            return None
        return str(payload.path)


@dataclass
class BoxCanvas:
    """One photo's files for `BoxImage`: the display copy and a mask per query, written on first use."""

    folder: Path
    size: tuple[int, int]  # (width, height) of the display copy
    scale: float  # display / original
    base: Path
    masks: dict[int, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, cache_dir: str | Path, shown: Image.Image, scale: float) -> "BoxCanvas":
        folder = Path(cache_dir) / "vtdemo" / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        base = folder / "photo.jpg"
        shown.convert("RGB").save(base, quality=90)
        canvas = cls(folder=folder, size=shown.size, scale=scale, base=base)
        weakref.finalize(canvas, shutil.rmtree, folder, True)  # the files go with the canvas (run replaced or dropped)
        return canvas

    def mask(self, query: int, box: Sequence[float], color: tuple[int, int, int]) -> Path:
        """The RGBA mask of one box (original-image pixels), cached by query index."""
        path = self.masks.get(query)
        if path is not None and path.exists():
            return path
        w, h = self.size
        s = min(1.0, MASK_MAX / max(w, h))
        mw, mh = max(1, round(w * s)), max(1, round(h * s))
        k = s * self.scale  # original pixels -> mask pixels
        x0, y0, x1, y1 = (int(round(v * k)) for v in box)
        x0, x1 = min(max(x0, 0), mw - 1), min(max(x1, x0 + 1), mw)
        y0, y1 = min(max(y0, 0), mh - 1), min(max(y1, y0 + 1), mh)
        rgba = np.zeros((mh, mw, 4), dtype=np.uint8)  # [h, w, RGBA]
        rgba[y0:y1, x0:x1, :3] = color
        rgba[y0:y1, x0:x1, 3] = 40  # a light fill
        b = 2
        for sl in ((slice(y0, y1), slice(x0, min(x0 + b, x1))), (slice(y0, y1), slice(max(x1 - b, x0), x1)),
                   (slice(y0, min(y0 + b, y1)), slice(x0, x1)), (slice(max(y1 - b, y0), y1), slice(x0, x1))):
            rgba[sl[0], sl[1], 3] = 255  # the outline
        path = self.folder / f"q{query}.png"
        Image.fromarray(rgba, "RGBA").save(path, compress_level=1)
        self.masks[query] = path
        return path


@dataclass
class BoxView:
    """What `BoxImage` shows: the canvas and, per box, (query, box in original pixels, colour, label)."""

    canvas: BoxCanvas
    boxes: list[tuple[int, Sequence[float], tuple[int, int, int], str]]


class BoxImage(gr.AnnotatedImage):
    """`gr.AnnotatedImage` fed with a `BoxView` (anything else goes to the original postprocess)."""

    def get_block_name(self) -> str:
        return "annotatedimage"

    def postprocess(self, value: Any) -> AnnotatedImageData | None:  # type: ignore[override]
        if not isinstance(value, BoxView):
            return super().postprocess(value)
        canvas = value.canvas
        annotations = [Annotation(image=FileData(path=str(canvas.mask(q, box, color))), label=label)
                       for q, box, color, label in value.boxes]
        return AnnotatedImageData(image=FileData(path=str(canvas.base)), annotations=annotations)
