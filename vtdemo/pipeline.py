"""The one place that strings the steps together: image -> load model -> preprocess -> forward -> post-process.

`classify` and `detect` are the public Python API (re-exported by `vtdemo`), used by the CLI and the app;
`explain` and the cached runs come from `vtdemo.explain` and are re-exported here. Their
results are small dataclasses whose `to_dict()` is exactly the CLI's JSON schema. `forward_classifier` and
`forward_detr` return the raw outputs, which the app caches so that changing a threshold never re-runs a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from PIL import Image

from . import hub, postprocess, preprocess
from .device import inference
from .errors import VtdemoError

# Explanations live in vtdemo.explain (runs, the method registry, the API); re-exported here for existing callers.
from .explain.api import (  # noqa: F401
    Explanation,
    classifier_map,
    classifier_methods,
    deletion_check,
    explain,
    methods_for_run,
)
from .explain.artefacts import inspect as artefact_maps  # noqa: F401
from .explain.runs import ClassifierRun, DetrRun, run_classifier, run_detr  # noqa: F401
from .images import ImageSource, load_image
from .models.outputs import ClassifierOutput


@dataclass
class Prediction:
    index: int
    label: str
    score: float  # softmax probability


@dataclass
class ClassifyResult:
    image: str
    model: str
    predictions: list[Prediction]
    runtime: dict[str, Any] = field(default_factory=dict)  # engine and precision (`engine.runtime_info`)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["runtime"]:  # a result built without it (older callers): no empty key in the JSON
            d.pop("runtime")
        return d


@dataclass
class Detection:
    label_id: int
    label: str
    score: float
    box: list[float]  # [x0, y0, x1, y1] pixels of the original image
    query: int = field(default=-1, repr=False)  # which of the decoder's queries produced it (not in the JSON)


@dataclass
class DetectResult:
    image: str
    model: str
    size: list[int]  # [width, height]
    detections: list[Detection]
    runtime: dict[str, Any] = field(default_factory=dict)  # engine and precision (`engine.runtime_info`)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for det in d["detections"]:
            det.pop("query")
        if not d["runtime"]:
            d.pop("runtime")
        return d


def _as_loaded(model: str | hub.LoadedModel, family: str | None = None) -> hub.LoadedModel:
    loaded = model if isinstance(model, hub.LoadedModel) else hub.load(model)
    if family == "classifier" and loaded.family == "detr":
        raise VtdemoError(f"{loaded.id} is a detection model; use detect (or pick a ViT/DeiT/Swin model)")
    if family == "detr" and loaded.family != "detr":
        raise VtdemoError(f"{loaded.id} is an image classifier; use classify (or pick a DETR model)")
    return loaded


def _name(src: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    return str(src) if isinstance(src, (str,)) or hasattr(src, "__fspath__") else "image"


def runtime_info(loaded: hub.LoadedModel, method: str | None = None) -> dict[str, Any]:
    """Which engine and precision produced a result (`vtdemo.engine.runtime_info`). For a method that needs
    gradients on a fast model, the forward pass is fast but the map comes from the exact PyTorch model (the fast
    engine runs it whenever gradients are on): `"gradients": "exact"`."""
    from .engine import runtime_info as info
    from .explain import registry

    out = info(loaded)
    if method in registry.METHODS and registry.METHODS[method].needs_gradients and out["precision"] == "fast":
        out["gradients"] = "exact"
    return out


def forward_classifier(loaded: hub.LoadedModel, image: Image.Image, return_attn: bool = False) -> ClassifierOutput:
    """RGB image -> raw classifier output (logits [1, K] fp32, attentions if asked)."""
    x = preprocess.classifier_input(image, loaded.preprocess).to(loaded.device)
    with inference(loaded.device):
        out = loaded.model(x, return_attn=return_attn)
    out.logits = out.logits.float()
    return out


def forward_detr(loaded: hub.LoadedModel, images: Sequence[Image.Image], return_attn: bool = False):
    """RGB images -> DETR's raw output for the padded batch (see `vtdemo.models.detr.DetrOutput`)."""
    pixel_values, pixel_mask = preprocess.detr_inputs(images, loaded.preprocess)
    with inference(loaded.device):
        out = loaded.model(pixel_values.to(loaded.device), pixel_mask.to(loaded.device), return_attn=return_attn)
    out.logits, out.boxes = out.logits.float(), out.boxes.float()
    return out


def predictions(loaded: hub.LoadedModel, logits: torch.Tensor, top_k: int) -> list[Prediction]:
    """logits [K] -> the top-k predictions with names."""
    probs, idx = postprocess.top_k(logits.detach().cpu(), top_k)
    return [Prediction(int(i), loaded.labels[int(i)], float(p)) for p, i in zip(probs, idx, strict=True)]


def detections(loaded: hub.LoadedModel, scored: postprocess.DetrScores, keep: torch.Tensor) -> list[Detection]:
    """Selected queries -> Detection records (box rounded to 0.01 px)."""
    return [
        Detection(
            label_id=int(scored.labels[q]),
            label=loaded.labels[int(scored.labels[q])],
            score=float(scored.scores[q]),
            box=[round(float(v), 2) for v in scored.boxes[q]],
            query=int(q),
        )
        for q in keep
    ]


def classify(
    image: ImageSource, model: str | hub.LoadedModel = hub.DEFAULT_VIT, top_k: int = 5, name: str | None = None
) -> ClassifyResult:
    """Top-k classes of one image. `image`: path, bytes, PIL image or array; `model`: repo id / folder / loaded."""
    loaded = _as_loaded(model, "classifier")
    rgb = load_image(image)
    out = forward_classifier(loaded, rgb)
    return ClassifyResult(
        image=_name(image, name),
        model=loaded.id,
        predictions=predictions(loaded, out.logits[0], top_k),
        runtime=runtime_info(loaded),
    )


def detect(
    image: ImageSource,
    model: str | hub.LoadedModel = hub.DEFAULT_DETR,
    threshold: float = 0.7,
    classes: set[int] | None = None,
    max_detections: int | None = None,
    nms_iou: float | None = None,
    name: str | None = None,
) -> DetectResult:
    """DETR detections of one image, score >= threshold, sorted by score; boxes in original-image pixels."""
    loaded = _as_loaded(model, "detr")
    rgb = load_image(image)
    out = forward_detr(loaded, [rgb])
    scored = postprocess.detr_scores(out.logits[0].cpu(), out.boxes[0].cpu(), rgb.size)
    keep = postprocess.select(scored, threshold, classes, max_detections, nms_iou)
    return DetectResult(
        image=_name(image, name),
        model=loaded.id,
        size=list(rgb.size),
        detections=detections(loaded, scored, keep),
        runtime=runtime_info(loaded),
    )


def match(
    image: ImageSource, model: str | hub.LoadedModel, ground_truth: Any, name: str | None = None
) -> dict[str, Any]:
    """DETR set matching of one image against ground truth (JSON text, rows or parsed; see `explain.matching`).

    Returns {"image", "model", "size", "pairs", "losses", "num_queries"}; see `match_output` for the pairs.
    """
    loaded = _as_loaded(model, "detr")
    rgb = load_image(image)
    out = forward_detr(loaded, [rgb])
    result = match_output(loaded, out.logits[0].cpu(), out.boxes[0].cpu(), rgb.size, ground_truth)
    return {
        "image": _name(image, name),
        "model": loaded.id,
        "size": list(rgb.size),
        **result,
        "runtime": runtime_info(loaded),
    }


def match_output(
    loaded: hub.LoadedModel, logits: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], ground_truth: Any
) -> dict[str, Any]:
    """Hungarian matching of one image's DETR output (logits [Q, K+1], boxes [Q, 4] normalised cxcywh) to ground
    truth; used by `match` (the CLI) and the app (on its cached run).

    Returns {"pairs": [{"object", "label", "box", "query", "predicted_label", "predicted_label_id",
    "predicted_score", "probability_of_object_class", "predicted_box", "cost": {...}}], "losses": {...},
    "num_queries"}, boxes xyxy in original pixels.
    """
    from .explain import matching

    gt = matching.parse_ground_truth(ground_truth, loaded.labels)
    result = matching.match(logits, boxes, gt, image_size)
    scored = postprocess.detr_scores(logits, boxes, image_size)
    probs = logits.float().softmax(-1)
    pairs = []
    for q, o, cost in zip(result.queries, result.objects, result.pair_costs, strict=True):
        label = int(gt.labels[o])
        pairs.append(
            {
                "object": o,
                "label": loaded.labels[label],
                "box": [round(float(v), 2) for v in gt.boxes[o]],
                "query": q,
                "predicted_label": loaded.labels[int(scored.labels[q])],
                "predicted_label_id": int(scored.labels[q]),
                "predicted_score": round(float(scored.scores[q]), 6),
                "probability_of_object_class": round(float(probs[q, label]), 6),
                "predicted_box": [round(float(v), 2) for v in scored.boxes[q]],
                "cost": cost,
            }
        )
    return {"pairs": pairs, "losses": result.losses, "num_queries": int(logits.shape[0])}
