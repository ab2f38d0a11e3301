"""What the app shows, computed from cached runs. Pure functions over pipeline objects, tensors and PIL; no Gradio.

The handlers (`vtdemo.ui.handlers`) call these and hand the results to Gradio components; the CLI-facing logic
(models, explanations, post-processing, drawing) stays in `vtdemo.pipeline`, `vtdemo.postprocess` and
`vtdemo.render`. Display images are capped at `DISPLAY_MAX` pixels on their long side (the browser shows them
smaller anyway); exports are at the original size.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .. import pipeline, postprocess, render
from ..errors import ExplainError

DISPLAY_MAX = 1280

METHOD_LABELS = {
    "rollout": "Attention rollout",
    "grad-rollout": "Gradient rollout (one class)",
    "cls-attention": "CLS attention, last layer",
    "swin-rollout": "Window-aware rollout",
    "swin-window": "Window around a clicked point",
    "swin-grad-rollout": "Gradient rollout (one class)",
}

#: The class-specific method of each classifier family (a click on a class in the top-5 switches to it).
CLASS_METHOD = {"vit": "grad-rollout", "swin": "swin-grad-rollout"}
CLASS_SPECIFIC = frozenset(CLASS_METHOD.values())

METHOD_NOTES = {
    "rollout": "How much each patch flows into the CLS token through all layers (Abnar & Zuidema 2020).",
    "grad-rollout": "Attention weighted by its gradient for one class (Chefer et al. 2021): click a class to change "
                    "it.",
    "cls-attention": "Where the CLS token looks in the last layer (one head, or the mean of all heads).",
    "swin-rollout": "Rollout through the shifted windows and patch merging; an approximation, since Swin has no CLS "
                    "token: it averages what the final tokens draw on.",
    "swin-window": "Click the image: the attention of the window around that point, in one block.",
    "swin-grad-rollout": "Window attention weighted by its gradient for one class (Chefer et al. 2021, carried "
                         "through the shifted windows and patch merging; an approximation like the rollout): click "
                         "a class to change it.",
}


def method_choices(family: str) -> list[tuple[str, str]]:
    """(label, value) pairs for a classifier family's method dropdown."""
    return [(METHOD_LABELS.get(m, m), m) for m in pipeline.CLASSIFIER_METHODS[family]]


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


# ---------------------------------------------------------------------------------------------------------------
# Classifiers


def top_classes(run: pipeline.ClassifierRun, k: int = 5) -> list[pipeline.Prediction]:
    return pipeline.predictions(run.loaded, run.logits, k)


def label_scores(predictions: Sequence[pipeline.Prediction]) -> dict[str, float]:
    """{class name: probability} for `gr.Label` (names are unique within a model)."""
    return {p.label: p.score for p in predictions}


def class_index_of(run: pipeline.ClassifierRun, name: str) -> int:
    """The class index of a name shown in the label list."""
    try:
        return run.loaded.labels.index(name)
    except ValueError:
        raise ExplainError(f"'{name}' is not a class of {run.loaded.id}") from None


@dataclasses.dataclass
class MapOptions:
    """The explanation settings of one classifier column."""

    method: str | None = None
    class_index: int | None = None
    head_fusion: str = "mean"
    discard: float = 0.0
    head: int | None = None
    point: tuple[float, float] | None = None
    block: int | None = None
    opacity: float = 0.5


def classifier_map(run: pipeline.ClassifierRun, opts: MapOptions) -> tuple[torch.Tensor, dict[str, Any], str]:
    """(map [rows, cols] max 1, target, method) for a cached run. swin-window without a point uses the centre."""
    method = opts.method or pipeline.CLASSIFIER_METHODS[run.loaded.family][0]
    point = opts.point
    if method == "swin-window" and point is None:
        x0, y0, x1, y1 = run.region
        point = ((x0 + x1) / 2, (y0 + y1) / 2)
    class_index = opts.class_index if method in CLASS_SPECIFIC else None
    block = opts.block
    if method == "swin-window" and block is None:
        block = default_swin_block(run)
    m, target = pipeline.classifier_map(run, method, class_index=class_index, head_fusion=opts.head_fusion,
                                        discard=opts.discard, head=opts.head, point=point, block=block)
    return m, target, method


def default_swin_block(run: pipeline.ClassifierRun) -> int:
    """The Swin block shown by default for "window around a point" (the deepest one with several windows)."""
    from ..explain import swin as ex_swin

    return ex_swin.default_block(run.attentions)


def window_outline(run: pipeline.ClassifierRun, point: tuple[float, float], block: int | None,
                   scale: float = 1.0) -> list[tuple[float, float, float, float]]:
    """The window around `point` (original pixels) in one Swin block, as boxes in displayed pixels."""
    from ..explain import swin as ex_swin

    x0, y0, x1, y1 = run.region
    fx = min(max((point[0] - x0) / (x1 - x0), 0.0), 1.0 - 1e-6)
    fy = min(max((point[1] - y0) / (y1 - y0), 0.0), 1.0 - 1e-6)
    block = default_swin_block(run) if block is None else block
    boxes = ex_swin.window_box(run.attentions, (fx, fy), block, reachable=False)
    w, h = x1 - x0, y1 - y0
    return [((x0 + a * w) * scale, (y0 + b * h) * scale, (x0 + c * w) * scale, (y0 + d * h) * scale)
            for a, b, c, d in boxes]


def classifier_overlay(run: pipeline.ClassifierRun, relevance: torch.Tensor, opts: MapOptions,
                       max_side: int = DISPLAY_MAX) -> Image.Image:
    """The map over the photo (the part outside the model's crop dimmed), display-sized, with the clicked point."""
    shown, scale = fit(run.image, max_side)
    region = [v * scale for v in run.region]
    out = render.overlay(shown, relevance.numpy(), region, opts.opacity)
    if opts.method == "swin-window":
        point = opts.point or ((run.region[0] + run.region[2]) / 2, (run.region[1] + run.region[3]) / 2)
        draw = ImageDraw.Draw(out)
        for box in window_outline(run, point, opts.block, scale):
            draw.rectangle(box, outline=(255, 255, 255), width=max(2, round(max(out.size) / 300)))
        out = mark_point(out, point, scale)
    return out


def map_caption(run: pipeline.ClassifierRun, method: str, target: dict[str, Any], opts: MapOptions) -> str:
    """One line under the map: what it shows."""
    text = f"**{METHOD_LABELS.get(method, method)}**"
    if method in CLASS_SPECIFIC:
        text += f" for *{target['label']}* ({target['score']:.1%})"
    if method in ("cls-attention", "swin-window"):
        text += " · mean of heads" if opts.head is None else f" · head {opts.head}"
    if method == "swin-window":
        block = default_swin_block(run) if opts.block is None else opts.block
        rec = run.attentions[block]
        text += f" · stage {rec.stage + 1}, block {rec.block + 1}{' (shifted)' if rec.shift else ''}"
    note = METHOD_NOTES.get(method)
    return f"{text}. {note}" if note else text


def num_heads(run: pipeline.ClassifierRun) -> int:
    """Heads of the last attention layer (for the head picker)."""
    last = run.attentions[-1]
    attn = getattr(last, "attn", last)  # Swin records wrap the tensor
    return int(attn.shape[-3])


def swin_blocks(run: pipeline.ClassifierRun) -> list[tuple[str, int]]:
    """(label, index) per Swin block, e.g. ("stage 1 · block 2 · shifted", 1)."""
    out = []
    for i, rec in enumerate(run.attentions):
        shifted = " · shifted" if getattr(rec, "shift", 0) else ""
        out.append((f"stage {rec.stage + 1} · block {rec.block + 1}{shifted}", i))
    return out


# ---------------------------------------------------------------------------------------------------------------
# DETR


@dataclasses.dataclass
class DetectOptions:
    threshold: float = 0.7
    classes: set[int] | None = None
    max_detections: int | None = None
    nms_iou: float | None = None


def class_ids(loaded_labels: Sequence[str], names: Sequence[str] | None) -> set[int] | None:
    """Class names picked in the filter -> ids (None = no filter)."""
    if not names:
        return None
    wanted = set(names)
    return {i for i, n in enumerate(loaded_labels) if n in wanted}


def detection_classes(labels: Sequence[str]) -> list[str]:
    """The names a DETR model can output, sorted, without the unused "N/A" ids (for the class filter)."""
    return sorted({n for n in labels if n != "N/A"}, key=str.lower)


def select(run: pipeline.DetrRun, opts: DetectOptions) -> list[pipeline.Detection]:
    """The detections to show, score-sorted: no model call, only `postprocess.select` on the cached scores."""
    keep = postprocess.select(run.scored, opts.threshold, opts.classes, opts.max_detections, opts.nms_iou)
    return pipeline.detections(run.loaded, run.scored, keep)


def detection_label(det: pipeline.Detection) -> str:
    return f"{det.label} {det.score:.2f}"


def box_label(det: pipeline.Detection, rank: int) -> str:
    """The legend text of a box: rank, class and score ("1 cat 0.93"). Ranks keep equal labels apart."""
    return f"{rank + 1} {det.label} {det.score:.2f}"


def hex_color(class_id: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*render.color_for(class_id))


def count_text(run: pipeline.DetrRun, dets: Sequence[pipeline.Detection], opts: DetectOptions) -> str:
    total = int(run.scored.scores.numel())
    text = f"**{len(dets)} of {total} queries kept** (score ≥ {opts.threshold:.2f})"
    if not dets:
        best = float(run.scored.scores.max()) if total else 0.0
        text += (f" · the most confident query scores {best:.2f}: lower the threshold (or widen the class filter) "
                 "to see what DETR found and where it looked")
    return text


def detection_rows(dets: Sequence[pipeline.Detection]) -> list[list[Any]]:
    """Rows for the detections table: #, class, score, x0, y0, x1, y1, query."""
    return [[i + 1, d.label, round(d.score, 3), *[round(v) for v in d.box], d.query] for i, d in enumerate(dets)]


DETECTION_HEADERS = ["#", "class", "score", "x0", "y0", "x1", "y1", "query"]


def detr_overlay(run: pipeline.DetrRun, relevance: torch.Tensor, opacity: float = 0.55,
                 box: Sequence[float] | None = None, point: tuple[float, float] | None = None,
                 max_side: int = DISPLAY_MAX) -> Image.Image:
    """A DETR map [h, w] over the photo (display-sized), with the explained box or the clicked point marked.

    The map covers the un-padded part of DETR's feature grid, which is the whole photo.
    """
    shown, scale = fit(run.image, max_side)
    out = render.overlay(shown, _unpadded(run, relevance).numpy(), None, opacity)
    if box is not None:
        draw = ImageDraw.Draw(out)
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=(255, 255, 255), width=max(2, round(max(out.size) / 320)))
    if point is not None:
        out = mark_point(out, point, scale)
    return out


def _unpadded(run: pipeline.DetrRun, relevance: torch.Tensor) -> torch.Tensor:
    """Crop a [h, w] map to the feature cells that cover the image (a batch of one has none padded)."""
    mask = getattr(run.output, "feature_mask", None)
    if mask is None:
        return relevance
    rows = int(mask[0].any(dim=1).sum())
    cols = int(mask[0].any(dim=0).sum())
    return relevance[: max(rows, 1), : max(cols, 1)]


# ---------------------------------------------------------------------------------------------------------------
# Set matching


GT_HEADERS = ["label", "x0", "y0", "x1", "y1"]


def ground_truth_rows(rows: Any) -> list[list[Any]]:
    """Dataframe rows (lists, or a pandas frame's values) -> [[label, x0, y0, x1, y1], ...], blank rows dropped."""
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # pandas DataFrame
        rows = rows.values.tolist()
    out = []
    for row in rows or []:
        cells = ["" if c is None or (isinstance(c, float) and np.isnan(c)) else c for c in list(row)[:5]]
        if all(str(c).strip() == "" for c in cells):
            continue
        out.append(cells)
    return out


def match(run: pipeline.DetrRun, ground_truth: Any) -> dict[str, Any]:
    """Hungarian matching of the cached predictions to ground truth (rows or JSON), with names and pixel boxes."""
    from ..explain import matching

    gt = matching.parse_ground_truth(ground_truth, run.loaded.labels)
    logits, boxes = run.output.logits[0].detach().cpu(), run.output.boxes[0].detach().cpu()
    result = matching.match(logits, boxes, gt, run.image.size)
    pairs = []
    for q, o, cost in zip(result.queries, result.objects, result.pair_costs):
        pairs.append({"object": o, "label": run.loaded.labels[int(gt.labels[o])], "gt_box": gt.boxes[o].tolist(),
                      "query": q, "predicted_label": run.loaded.labels[int(run.scored.labels[q])],
                      "predicted_score": float(run.scored.scores[q]), "predicted_box": run.scored.boxes[q].tolist(),
                      "cost": cost})
    return {"pairs": pairs, "losses": result.losses, "num_queries": int(logits.shape[0])}


MATCH_HEADERS = ["object", "query", "predicted", "score", "cost", "class", "L1", "-GIoU"]


def match_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [[f"{p['object'] + 1} {p['label']}", p["query"], p["predicted_label"], round(p["predicted_score"], 3),
             round(p["cost"]["total"], 3), round(p["cost"]["class"], 3), round(p["cost"]["l1"], 3),
             round(p["cost"]["giou"], 3)] for p in result["pairs"]]


def match_text(result: dict[str, Any]) -> str:
    losses = result["losses"]
    n, q = len(result["pairs"]), result["num_queries"]
    return (f"**{n} object{'s' if n != 1 else ''} matched to {n} of {q} queries**; the other {q - n} are trained "
            f"to say *no object*.  \nLoss = classification {losses['classification']:.3f} "
            f"+ 5 × L1 {losses['l1']:.3f} + 2 × GIoU {losses['giou']:.3f} = **{losses['total']:.3f}**")


def match_image(run: pipeline.DetrRun, result: dict[str, Any], max_side: int = DISPLAY_MAX) -> Image.Image:
    """Ground-truth boxes (white, dashed look) and the query matched to each (its class colour), joined by a line."""
    shown, scale = fit(run.image, max_side)
    out = shown.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 320))
    font = _font(max(12, round(max(out.size) / 45)))
    for p in result["pairs"]:
        gx0, gy0, gx1, gy1 = (v * scale for v in p["gt_box"])
        px0, py0, px1, py1 = (v * scale for v in p["predicted_box"])
        color = render.color_for(int(run.scored.labels[p["query"]]))
        draw.rectangle((px0, py0, px1, py1), outline=color, width=width)
        _dashed_rectangle(draw, (gx0, gy0, gx1, gy1), (255, 255, 255), width)
        draw.line(((gx0 + gx1) / 2, (gy0 + gy1) / 2, (px0 + px1) / 2, (py0 + py1) / 2), fill=color, width=width)
        draw.text((gx0 + 4, gy0 + 3), f"{p['object'] + 1} {p['label']} -> query {p['query']}", fill=(255, 255, 255),
                  stroke_width=2, stroke_fill=(0, 0, 0), font=font)
    return out


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], color, width: int, dash: int = 8) -> None:
    x0, y0, x1, y1 = box
    for a, b, horizontal, fixed in ((x0, x1, True, y0), (x0, x1, True, y1), (y0, y1, False, x0), (y0, y1, False, x1)):
        t = a
        while t < b:
            e = min(t + dash, b)
            draw.line((t, fixed, e, fixed) if horizontal else (fixed, t, fixed, e), fill=color, width=width)
            t += 2 * dash


# ---------------------------------------------------------------------------------------------------------------
# Webcam


def live_model(loaded, short_side: int):
    """The same model with DETR's input short side reduced to `short_side` (long side scaled as 1333/800).

    Weights are shared; only the preprocessing record differs, so nothing is loaded twice.
    """
    prep = loaded.preprocess
    short = min(int(short_side), prep.shortest_edge)
    longest = None if prep.longest_edge is None else max(short, round(short * prep.longest_edge / prep.shortest_edge))
    return dataclasses.replace(loaded, preprocess=dataclasses.replace(prep, shortest_edge=short, longest_edge=longest))


def shrink_frame(frame: np.ndarray, max_side: int = 640) -> np.ndarray:
    """A webcam frame [H, W, 3] uint8 scaled so that its long side is at most `max_side`."""
    import cv2

    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return frame
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def draw_detections(image: Image.Image, dets: Sequence[pipeline.Detection]) -> Image.Image:
    return render.draw_boxes(image, [d.box for d in dets], [detection_label(d) for d in dets],
                             [d.label_id for d in dets])


# ---------------------------------------------------------------------------------------------------------------
# Export


def safe_stem(name: str) -> str:
    stem = Path(name).stem or "image"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60] or "image"


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_npy(path: Path, relevance: torch.Tensor) -> Path:
    np.save(path, relevance.detach().cpu().float().numpy())
    return path


def deletion_plot(check: dict[str, Any], width: int = 480, height: int = 220) -> Image.Image:
    """The deletion curves of `pipeline.deletion_check` as a small chart: probability of the explained class
    (y) against the fraction of patches deleted (x), most-relevant-first (orange) and in random order (grey)."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = render._font(12)
    left, right, top, bottom = 48, width - 24, 14, height - 34
    top_p = max(max(check["probability"]), max(check["random_probability"]), 1e-6)
    draw.rectangle((left, top, right, bottom), outline=(190, 190, 190))
    for frac in (0.0, 0.5, 1.0):
        text = f"{frac:.0%}"
        x = left + frac * (right - left) - draw.textlength(text, font=font) / 2
        draw.text((x, bottom + 4), text, fill=(90, 90, 90), font=font)
    draw.text((4, top - 2), f"{top_p:.2g}", fill=(90, 90, 90), font=font)
    draw.text((left - 14, bottom - 12), "0", fill=(90, 90, 90), font=font)
    draw.text((left + (right - left) / 2 - 60, height - 15), "patches deleted", fill=(90, 90, 90), font=font)

    def points(ys: Sequence[float]) -> list[tuple[float, float]]:
        return [(left + f * (right - left), bottom - (p / top_p) * (bottom - top))
                for f, p in zip(check["fraction"], ys)]

    draw.line(points(check["random_probability"]), fill=(150, 150, 150), width=2)
    draw.line(points(check["probability"]), fill=(230, 120, 0), width=3)
    draw.text((right - 200, top + 6), f"this map: area {check['auc']:.3f}", fill=(230, 120, 0), font=font)
    draw.text((right - 200, top + 22), f"random order: area {check['random_auc']:.3f}", fill=(120, 120, 120),
              font=font)
    return img


def deletion_caption(check: dict[str, Any], target: dict[str, Any]) -> str:
    """One line under the chart: what the numbers mean for this map."""
    ratio = check["auc"] / max(check["random_auc"], 1e-12)
    verdict = ("the map points at patches the model uses" if ratio < 0.9 else
               "worse than random: the map points away from what the model uses" if ratio > 1.1 else
               "about the same as random: this map says little about what the model used")
    return (f"Deleting the patches this map marks first drops *{target['label']}* from {check['probability'][0]:.1%} "
            f"with area **{check['auc']:.3f}** under the curve, against **{check['random_auc']:.3f}** in random "
            f"order (lower is better): {verdict}.")
