"""What the Detect tab shows, as pure functions of its cached state: which detections pass the options (from the
cached scores, no model call), the box legend, count line and table rows, DETR maps over the photo (with the explained
box or clicked point), the 2x2 box-edge relevance panel, and the layer picker's values. `vtdemo.ui.detect.tab` owns the
components and handlers that call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, ImageDraw

from ... import pipeline, render
from ...errors import ExplainError
from ...pipeline import DetrRun
from ..components import BoxCanvas

DETECTION_HEADERS = ["#", "class", "score", "x0", "y0", "x1", "y1", "query"]
DIRECTIONS = {"where it looks": "row", "who looks at it": "column"}
RELEVANCE_TARGETS = {"class": "class", "box edges": "box"}
RELEVANCE_CAPTION = (
    "Relevance is not attention: cross-attention says where one decoder layer looked; relevance (gradient-weighted "
    "attention carried through every encoder and decoder layer, Chefer, Gur & Wolf, ICCV 2021) says which image "
    "positions this output depends on."
)

RTDETR_RELEVANCE_CAPTION = (
    "Relevance here is Grad-CAM on the hybrid encoder's fused features (every level, summed on the stride-8 grid): "
    "the features the decoder samples, weighted by the mean gradient of the output. It ignores where inside a level "
    "the gradient sits and which sampling points carried it; it is not attention."
)


@dataclass
class DetectOptions:
    threshold: float = pipeline.DEFAULT_THRESHOLD
    classes: set[int] | None = None
    max_detections: int | None = None
    nms_iou: float | None = None


@dataclass
class DetectState:
    """The tab's cache: the detector's run (DETR or RT-DETR), the box view's files, what is shown, and the attention
    view."""

    run: Any  # pipeline.DetrRun | pipeline.RtDetrRun; None once released
    name: str
    canvas: BoxCanvas | None
    opts: DetectOptions = field(default_factory=DetectOptions)
    dets: list[pipeline.Detection] = field(default_factory=list)
    method: str = (
        ""  # the method on screen: the detection attention view's, or the point view's after a click (`attention.py`)
    )
    query: int | None = None
    label_id: int | None = None  # the clicked detection's class: RT-DETR entries are (query, class) pairs
    point: tuple[float, float] | None = None
    relevance: torch.Tensor | None = None
    released: bool = False
    superseded: bool = False  # a newer run of this session replaced it (`RunIndex.hold`)
    panoptic: Any = None  # a panoptic run's segments at the current threshold (`vtdemo.ui.detect.masks`)
    segment: int | None = None  # the query of the segment clicked in the Masks view

    def release(self) -> None:
        """Drop the run (with its attention) and the map. The box view's files stay until Gradio's cache expiry:
        a client may still be downloading them."""
        self.run, self.canvas, self.relevance, self.dets, self.released = None, None, None, [], True
        self.panoptic = None


def chosen_detection(state: DetectState) -> pipeline.Detection | None:
    """The detection of the chosen query (and class, when one was clicked: an RT-DETR query may be shown with several
    classes): one of those shown, or, for a segment picked in the Masks view that the
    box options hide (class filter, max detections, NMS), its record from the cached scores."""
    same = [d for d in state.dets if d.query == state.query]
    det = next((d for d in same if d.label_id == state.label_id), same[0] if same else None)
    if det is None and state.run is not None and state.query is not None and state.query == state.segment:
        det = pipeline.detections(state.run.loaded, state.run.scored, torch.tensor([state.query]))[0]
    return det


def detection_classes(labels: Sequence[str]) -> list[str]:
    """The names a DETR model can output, sorted, without the unused "N/A" ids (for the class filter)."""
    return sorted({n for n in labels if n != "N/A"}, key=str.lower)


def class_ids(labels: Sequence[str], names: Sequence[str] | None) -> set[int] | None:
    """Class names picked in the filter -> ids (None = no filter)."""
    if not names:
        return None
    wanted = set(names)
    return {i for i, n in enumerate(labels) if n in wanted}


def select(run: DetrRun, opts: DetectOptions) -> list[pipeline.Detection]:
    """The detections to show, score-sorted: no model call, only `postprocess.select` on the cached scores."""
    keep = run.select(opts.threshold, opts.classes, opts.max_detections, opts.nms_iou)
    return pipeline.detections(run.loaded, run.scored, keep)


def box_label(det: pipeline.Detection, rank: int) -> str:
    """The legend text of a box: rank, class and score ("1 cat 0.93"). Ranks keep equal labels apart."""
    return f"{rank + 1} {det.label} {det.score:.2f}"


def hex_color(class_id: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*render.color_for(class_id))


def count_text(run: DetrRun, dets: Sequence[pipeline.Detection], opts: DetectOptions) -> str:
    total = int(run.scored.scores.numel())
    text = f"**{len(dets)} of {total} queries kept** (score ≥ {opts.threshold:.2f})"
    if not dets:
        best = float(run.scored.scores.max()) if total else 0.0
        text += (
            f" · the most confident query scores {best:.2f}: lower the threshold (or widen the class filter) "
            "to see what DETR found and where it looked"
        )
    return text


def detection_rows(dets: Sequence[pipeline.Detection], size: tuple[int, int] | None = None) -> list[list[Any]]:
    """Rows for the detections table: #, class, score, x0, y0, x1, y1, query (boxes clipped to a photo of `size`,
    (width, height), when given: as the box view shows them)."""
    return [
        [i + 1, d.label, round(d.score, 3), *[round(v) for v in (clipped(d.box, size) if size else d.box)], d.query]
        for i, d in enumerate(dets)
    ]


def clipped(box: Sequence[float], size: tuple[int, int]) -> list[float]:
    """A box (x0, y0, x1, y1) clipped to the photo (width, height) for display: RT-DETR's boxes are not clipped (as
    transformers' post-processing), DETR's already are."""
    w, h = size
    return [min(max(float(v), 0.0), float(w if i % 2 == 0 else h)) for i, v in enumerate(box)]


def draw_detections(image: Image.Image, dets: Sequence[pipeline.Detection]) -> Image.Image:
    return render.draw_boxes(
        image,
        [clipped(d.box, image.size) for d in dets],
        [render.detection_label(d.label, d.score) for d in dets],
        [d.label_id for d in dets],
    )


def detr_overlay(
    run: DetrRun,
    relevance: torch.Tensor,
    opacity: float = 0.55,
    box: Sequence[float] | None = None,
    point: tuple[float, float] | None = None,
    max_side: int = render.DISPLAY_MAX,
) -> Image.Image:
    """A DETR map [h, w] over the photo (display-sized), with the explained box or the clicked point marked. The map
    covers the un-padded part of DETR's feature grid, which is the whole photo."""
    shown, scale = render.fit(run.image, max_side)
    out = render.overlay(shown, run.unpadded(relevance).numpy(), None, opacity)
    if box is not None:
        draw = ImageDraw.Draw(out)
        x0, y0, x1, y1 = (v * scale for v in clipped(box, run.image.size))
        draw.rectangle((x0, y0, x1, y1), outline=(255, 255, 255), width=max(2, round(max(out.size) / 320)))
    if point is not None:
        out = render.mark_point(out, point, scale)
    return out


#: Outline width of a sampling point per feature level (stride 8, 16, 32): thin to thick.
LEVEL_OUTLINE = (1, 2, 4)
SAMPLING_CAPTION = (
    "Deformable attention has no full map: each head of the query reads a few points per feature level around its "
    "reference box (dashed yellow; the solid box is the detection) and mixes them by these weights. Dot size and colour: attention weight (blue low, red "
    "high); outline: feature level (thin stride 8, medium stride 16, thick stride 32). Click the photo here for "
    "AIFI's self-attention at a point."
)


def sampling_image(
    run: Any,
    points: Any,
    head: int | None,
    box: Sequence[float],
    opacity: float = 0.55,
    max_side: int = render.DISPLAY_MAX,
) -> Image.Image:
    """One RT-DETR detection's sampling points (`vtdemo.explain.rtdetr.SamplingPoints`) on the photo, display-sized:
    every head's (or one head's) points at every level as dots sized and coloured by attention weight (jet, relative
    to the largest weight shown), the reference box dashed, the detection's box (clipped) solid. `opacity` dims the
    photo under the dots (0: the photo as it is)."""
    import cv2
    import numpy as np

    shown, scale = render.fit(run.image, max_side)
    out = Image.blend(shown.convert("RGB"), Image.new("RGB", shown.size, (0, 0, 0)), 0.6 * float(opacity))
    draw = ImageDraw.Draw(out)
    w, h = run.image.size
    xy, ref = points.in_pixels(w, h)  # [nh, L, P, 2] px, [4] px
    weights = points.weights  # [nh, L, P]
    if head is not None:
        if not -weights.shape[0] <= head < weights.shape[0]:
            raise ExplainError(f"head {head} is out of range: the decoder has {weights.shape[0]} heads")
        xy, weights = xy[head : head + 1], weights[head : head + 1]
    side = max(out.size)
    line = max(2, round(side / 320))
    x0, y0, x1, y1 = (v * scale for v in clipped(box, run.image.size))
    draw.rectangle((x0, y0, x1, y1), outline=(255, 255, 255), width=line)
    render.dashed_rectangle(draw, [v * scale for v in ref.tolist()], (255, 255, 0), line)
    top = float(weights.max()) if weights.numel() else 1.0
    levels = torch.arange(weights.shape[1]).view(1, -1, 1).expand_as(weights)  # [nh', L, P]
    order = weights.flatten().argsort()  # strongest drawn last (on top)
    flat_xy, flat_w, flat_l = xy.reshape(-1, 2), weights.flatten(), levels.flatten()
    share = (flat_w / max(top, 1e-12)).clamp(0, 1).numpy()
    colours = cv2.applyColorMap((share * 255).round().astype(np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
    for i in order.tolist():
        px, py = (float(v) * scale for v in flat_xy[i])
        r = side / 400 + side / 60 * float(share[i]) ** 0.5
        outline = LEVEL_OUTLINE[min(int(flat_l[i]), len(LEVEL_OUTLINE) - 1)]
        draw.ellipse(
            (px - r, py - r, px + r, py + r), fill=tuple(int(c) for c in colours[i]), outline=(0, 0, 0), width=outline
        )
    return out


def edge_panels(run: DetrRun, maps: dict[str, torch.Tensor], opacity: float, box: Sequence[float]) -> Image.Image:
    """The four box-edge relevance maps (x0, y0, x1, y1) as a 2x2 panel of overlays, each labelled."""
    tiles = [detr_overlay(run, maps[edge], opacity, box=box, max_side=render.DISPLAY_MAX // 2) for edge in maps]
    w, h = tiles[0].size
    panel = Image.new("RGB", (2 * w, 2 * h), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    label_font = render.font(max(14, w // 20))
    for i, (edge, tile) in enumerate(zip(maps, tiles, strict=True)):
        x, y = (i % 2) * w, (i // 2) * h
        panel.paste(tile, (x, y))
        draw.text((x + 8, y + 6), edge, fill=(255, 255, 255), stroke_width=3, stroke_fill=(0, 0, 0), font=label_font)
    return panel


def layer_index(run: DetrRun, value: str | None, encoder: bool) -> int:
    """A layer picker's value ("last", "1".."L") -> a list index, checked against the run's layers."""
    if value in (None, "", "last"):
        return -1
    layers = run.encoder_layers if encoder else run.decoder_layers
    index = int(value) - 1
    if not 0 <= index < layers:
        raise ExplainError(
            f"layer {value}: this model has {layers} {'encoder' if encoder else 'decoder'} layers "
            f"(choose last or 1..{layers})"
        )
    return index
