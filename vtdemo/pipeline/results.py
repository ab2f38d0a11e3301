"""Image in, result out: `classify`, `detect`, `match`, `explain` and `compare` of one image (the CLI's commands and
`vtdemo.classify` / `vtdemo.detect`). Each loads the image (`vtdemo.images`) and the model (`vtdemo.loader`), runs it
once, and returns a record whose `to_dict()` is the CLI's JSON. `forward_classifier` and `forward_detr` return the
raw outputs of a batch (the evaluate protocols and the webcam use them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from PIL import Image

from .. import engine, loader, postprocess, preprocess
from ..device import inference
from ..errors import ExplainError, VtdemoError
from ..explain import registry
from ..explain.api import Explanation, deletion_check, explain_run, pick_detection
from ..explain.compare import Comparison, compare
from ..explain.registry import ExplainOptions
from ..families import DEFAULT_DETR, DEFAULT_VIT, FAMILIES
from ..hub import LoadedModel
from ..images import ImageSource, load_image
from ..models.outputs import ClassifierOutput
from ..records import ClassifyResult, DetectResult, detections, predictions
from .runs import run_classifier, run_detr, run_rtdetr


def _as_loaded(model: str | LoadedModel, family: str | None = None) -> LoadedModel:
    """The loaded model, checked for a use: "classifier", "detect" (DETR or RT-DETR) or "detr" (DETR only)."""
    loaded = model if isinstance(model, LoadedModel) else loader.load(model)
    detector = FAMILIES[loaded.family].task == "detect"
    if family == "classifier" and detector:
        raise VtdemoError(f"{loaded.id} is a detection model; use detect (or pick a ViT/DeiT/Swin model)")
    if family in ("detr", "detect") and not detector:
        raise VtdemoError(f"{loaded.id} is an image classifier; use classify (or pick a DETR model)")
    if family == "detr" and loaded.family != "detr":
        raise VtdemoError(
            f"{loaded.id} is an RT-DETR model; set matching and explanations are implemented for DETR models only"
        )
    return loaded


def _name(src: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    return str(src) if isinstance(src, (str,)) or hasattr(src, "__fspath__") else "image"


def runtime_info(
    loaded: LoadedModel, method: str | None = None, input_size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Which engine and precision produced a result (`vtdemo.engine.runtime_info`) at model input `input_size`
    (height, width; None: the processor's own). For a method that needs gradients on a fast model, the forward pass
    is fast but the map comes from the exact PyTorch model (the fast engine runs it whenever gradients are on):
    `"gradients": "exact"`."""
    out = engine.runtime_info(loaded, input_size)
    if method in registry.METHODS and registry.METHODS[method].needs_gradients and out["precision"] == "fast":
        out["gradients"] = "exact"
    return out


def forward_classifier(loaded: LoadedModel, image: Image.Image, return_attn: bool = False) -> ClassifierOutput:
    """RGB image -> raw classifier output (logits [1, K] fp32, attentions if asked)."""
    x = preprocess.classifier_input(image, loaded.preprocess).to(loaded.device)
    with inference(loaded.device):
        out = loaded.model(x, return_attn=return_attn)
    out.logits = out.logits.float()
    return out


def forward_detr(loaded: LoadedModel, images: Sequence[Image.Image], return_attn: bool = False):
    """RGB images -> DETR's raw output for the padded batch (see `vtdemo.models.detr.DetrOutput`)."""
    pixel_values, pixel_mask = preprocess.detr_inputs(images, loaded.preprocess)
    with inference(loaded.device):
        out = loaded.model(pixel_values.to(loaded.device), pixel_mask.to(loaded.device), return_attn=return_attn)
    out.logits, out.boxes = out.logits.float(), out.boxes.float()
    return out


def forward_rtdetr(loaded: LoadedModel, image: Image.Image, return_attn: bool = False) -> Any:
    """RGB image -> RT-DETR's raw output (see `vtdemo.models.rtdetr.RtDetrOutput`), batch of one, logits fp32."""
    x = preprocess.classifier_input(image, loaded.preprocess).to(loaded.device)  # [1, 3, 640, 640], squashed
    with inference(loaded.device):
        out = loaded.model(x, return_attn=return_attn)
    out.logits, out.boxes = out.logits.float(), out.boxes.float()
    return out


def classify(
    image: ImageSource, model: str | LoadedModel = DEFAULT_VIT, top_k: int = 5, name: str | None = None
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
    model: str | LoadedModel = DEFAULT_DETR,
    threshold: float = postprocess.DEFAULT_THRESHOLD,
    classes: set[int] | None = None,
    max_detections: int | None = None,
    nms_iou: float | None = None,
    name: str | None = None,
) -> DetectResult:
    """DETR or RT-DETR detections of one image, score >= threshold, sorted by score; boxes in original-image pixels
    (DETR's clipped to the image, RT-DETR's as its processor gives them, unclipped)."""
    loaded = _as_loaded(model, "detect")
    rgb = load_image(image)
    if loaded.family == "rtdetr":
        out = forward_rtdetr(loaded, rgb)
        scored = postprocess.rtdetr_scores(out.logits[0].cpu(), out.boxes[0].cpu(), rgb.size)
    else:
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


def match(image: ImageSource, model: str | LoadedModel, ground_truth: Any, name: str | None = None) -> dict[str, Any]:
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
    loaded: LoadedModel, logits: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], ground_truth: Any
) -> dict[str, Any]:
    """Hungarian matching of one image's DETR output (logits [Q, K+1], boxes [Q, 4] normalised cxcywh) to ground
    truth; used by `match` (the CLI) and the app (on its cached run).

    Returns {"pairs": [{"object", "label", "box", "query", "predicted_label", "predicted_label_id",
    "predicted_score", "probability_of_object_class", "predicted_box", "cost": {...}}], "losses": {...},
    "num_queries"}, boxes xyxy in original pixels.
    """
    from ..explain import matching

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


def explain(
    image: ImageSource,
    model: str | LoadedModel = DEFAULT_VIT,
    method: str | None = None,
    options: ExplainOptions | None = None,
    *,
    detection: int = 0,
    threshold: float = postprocess.DEFAULT_THRESHOLD,
    name: str | None = None,
    deletion: bool = False,
    input_size: int | None = None,
    keep_aspect: bool = False,
    **fields: Any,
) -> Explanation:
    """One explanation map for one image (the CLI's `explain`); see `explain_run` for the methods' options.

    options: an `ExplainOptions`; `fields` are its fields given as keywords instead (`class_index=281`, `head=3`,
    ...), applied on top. detection / threshold: which detection a DETR detection method explains (the K-th kept by
    score). deletion: also run the deletion and insertion checks (classifiers only); the result goes to
    `Explanation.deletion`. input_size / keep_aspect: a ViT at another input size (`runs.run_classifier`).
    """
    loaded = _as_loaded(model)
    rgb = load_image(image)
    label = _name(image, name)
    opts = replace(options or ExplainOptions(), **fields)
    meth = registry.get(method, loaded.family)
    check, size = None, None  # size: a classifier's input (height, width), which decides its engine
    if loaded.family in ("detr", "rtdetr"):
        run: Any = run_rtdetr(loaded, rgb) if loaded.family == "rtdetr" else run_detr(loaded, rgb)
        if meth.target == "detection":
            try:
                entry = pick_detection(run, detection, threshold)
            except ExplainError as exc:
                raise ExplainError(f"{label}: {exc}") from None
            # an RT-DETR entry is a (query, class) pair: explain that query for that class
            chosen = int(run.scored.labels[entry]) if loaded.family == "rtdetr" else opts.class_index
            opts = replace(opts, query=run.scored.query_of(entry), class_index=chosen)
        result = explain_run(run, meth.name, opts)
    else:
        run = run_classifier(loaded, rgb, input_size, keep_aspect)
        size = run.input_size
        result = explain_run(run, meth.name, opts)
        check = deletion_check(run, result.map, result.target["index"]) if deletion else None
    return Explanation(
        label,
        loaded.id,
        meth.name,
        result.target,
        result.map,
        run.region,
        check,
        result.maps,
        runtime_info(loaded, meth.name, size),
    )


def compare_image(
    image: Any,
    model: Any,
    options: ExplainOptions | None = None,
    detection: int = 0,
    threshold: float = postprocess.DEFAULT_THRESHOLD,
    name: str | None = None,
    **kwargs: Any,
) -> Comparison:
    """image -> `compare` (the CLI's `explain --method all`): one forward pass with attention, then every method.
    model: repo id, folder or loaded model; detection / threshold: which DETR detection (K-th kept by score)."""
    loaded = _as_loaded(model)
    if loaded.family == "rtdetr":
        raise ExplainError(
            f"{loaded.id}: the side-by-side comparison is not written for RT-DETR; explain one method at a time "
            "(rtdetr-sampling, rtdetr-aifi, rtdetr-gradcam)"
        )
    rgb = load_image(image)
    label = _name(image, name)
    options = options or ExplainOptions()
    if loaded.family == "detr":
        drun = run_detr(loaded, rgb)
        try:
            options = replace(options, query=pick_detection(drun, detection, threshold))
        except ExplainError as exc:
            raise ExplainError(f"{label}: {exc}") from None
        return compare(drun, options, image_name=label, **kwargs)
    return compare(run_classifier(loaded, rgb), options, image_name=label, **kwargs)
