"""The one place that strings the steps together: image -> load model -> preprocess -> forward -> post-process.

`classify` and `detect` are the public Python API (re-exported by `vtdemo`), used by the CLI and the app. Their
results are small dataclasses whose `to_dict()` is exactly the CLI's JSON schema. `forward_classifier` and
`forward_detr` return the raw outputs, which the app caches so that changing a threshold never re-runs a model.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence, cast

import torch
from PIL import Image

from . import hub, postprocess, preprocess
from .errors import ExplainError, VtdemoError
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for det in d["detections"]:
            det.pop("query")
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


def inference(device: torch.device) -> contextlib.ExitStack:
    """`torch.inference_mode()`, plus fp16 autocast on CUDA (VTDEMO_AUTOCAST=0 turns it off).

    Convolutions and matrix products run in half precision on the GPU, softmax and LayerNorm stay in fp32 (autocast's
    own lists); callers cast outputs back to fp32 before post-processing. On CPU and MPS everything stays fp32.
    """
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if device.type == "cuda" and os.environ.get("VTDEMO_AUTOCAST", "1") != "0":
        stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
    return stack


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
    return [Detection(label_id=int(scored.labels[q]), label=loaded.labels[int(scored.labels[q])],
                      score=float(scored.scores[q]), box=[round(float(v), 2) for v in scored.boxes[q]], query=int(q))
            for q in keep]


def classify(image: ImageSource, model: str | hub.LoadedModel = hub.DEFAULT_VIT, top_k: int = 5,
             name: str | None = None) -> ClassifyResult:
    """Top-k classes of one image. `image`: path, bytes, PIL image or array; `model`: repo id / folder / loaded."""
    loaded = _as_loaded(model, "classifier")
    rgb = load_image(image)
    out = forward_classifier(loaded, rgb)
    return ClassifyResult(image=_name(image, name), model=loaded.id,
                          predictions=predictions(loaded, out.logits[0], top_k))


def detect(image: ImageSource, model: str | hub.LoadedModel = hub.DEFAULT_DETR, threshold: float = 0.7,
           classes: set[int] | None = None, max_detections: int | None = None, nms_iou: float | None = None,
           name: str | None = None) -> DetectResult:
    """DETR detections of one image, score >= threshold, sorted by score; boxes in original-image pixels."""
    loaded = _as_loaded(model, "detr")
    rgb = load_image(image)
    out = forward_detr(loaded, [rgb])
    scored = postprocess.detr_scores(out.logits[0].cpu(), out.boxes[0].cpu(), rgb.size)
    keep = postprocess.select(scored, threshold, classes, max_detections, nms_iou)
    return DetectResult(image=_name(image, name), model=loaded.id, size=list(rgb.size),
                        detections=detections(loaded, scored, keep))


# ----------------------------------------------------------------------------------------------------------------
# Explanations. A "run" keeps one image's forward pass (with attention); maps are then computed from it without
# running the model again (except gradient rollout, which needs a backward pass for the chosen class).

CLASSIFIER_METHODS = {"vit": ("rollout", "grad-rollout", "cls-attention"),
                      "swin": ("swin-rollout", "swin-grad-rollout", "swin-window")}
DETR_METHODS = ("detr-decoder", "detr-encoder")


@dataclass
class ClassifierRun:
    """One classifier forward pass kept for explanations. logits: [K]; attentions as the model returned them."""

    loaded: hub.LoadedModel
    image: Image.Image
    x: torch.Tensor  # [1, 3, h, w] model input
    logits: torch.Tensor  # [K]
    attentions: list[Any]

    @property
    def region(self) -> tuple[float, float, float, float]:
        """Original-image pixels (x0, y0, x1, y1) that the model input covers."""
        return preprocess.input_region(self.image.size, self.loaded.preprocess)


@dataclass
class DetrRun:
    """One DETR forward pass (batch of one) kept for explanations and re-thresholding."""

    loaded: hub.LoadedModel
    image: Image.Image
    output: Any  # vtdemo.models.detr.DetrOutput with attentions
    scored: postprocess.DetrScores


@dataclass
class Explanation:
    """A relevance map on the model's own grid. map: [rows, cols], scaled so that its maximum is 1."""

    image: str
    model: str
    method: str
    target: dict[str, Any]
    map: torch.Tensor
    region: tuple[float, float, float, float]  # original-image pixels the map covers
    deletion: dict[str, Any] | None = None  # deletion-curve check, when asked for

    @property
    def grid(self) -> list[int]:
        return list(self.map.shape)

    def to_dict(self) -> dict[str, Any]:
        d = {"image": self.image, "model": self.model, "method": self.method, "target": self.target,
             "grid": self.grid, "map": [[round(float(v), 6) for v in row] for row in self.map]}
        if self.deletion is not None:
            d["deletion"] = {k: (round(v, 6) if isinstance(v, float) else [round(x, 6) for x in v])
                             for k, v in self.deletion.items()}
        return d


def run_classifier(loaded: hub.LoadedModel, image: Image.Image) -> ClassifierRun:
    """Forward once with attention (plain softmax path)."""
    x = preprocess.classifier_input(image, loaded.preprocess).to(loaded.device)
    with inference(loaded.device):
        out = loaded.model(x, return_attn=True)
    attentions = [a[0] for a in out.attentions] if loaded.family == "vit" else list(out.attentions)
    return ClassifierRun(loaded=loaded, image=image, x=x, logits=out.logits[0].float().cpu(), attentions=attentions)


def run_detr(loaded: hub.LoadedModel, image: Image.Image, keep_dtype: torch.dtype | None = None) -> DetrRun:
    """Forward once with attention; keeps per-query scores and boxes in original-image pixels.

    keep_dtype: store the attention maps in this dtype (the app keeps float16: an 800-px photo's six encoder maps
    are ~150 MB in float32); maps are computed in float32 either way.
    """
    out = forward_detr(loaded, [image], return_attn=True)
    if keep_dtype is not None:
        for name in ("encoder_attn", "decoder_self_attn", "decoder_cross_attn"):
            setattr(out, name, [a.to(keep_dtype) for a in getattr(out, name)])
    scored = postprocess.detr_scores(out.logits[0].cpu(), out.boxes[0].cpu(), image.size)
    return DetrRun(loaded=loaded, image=image, output=out, scored=scored)


def _class_target(run: ClassifierRun, class_index: int | None) -> dict[str, Any]:
    probs = run.logits.softmax(-1)
    index = int(probs.argmax()) if class_index is None else int(class_index)
    if not 0 <= index < probs.numel():
        raise ExplainError(f"class index {index} is out of range: {run.loaded.id} has {probs.numel()} classes")
    return {"index": index, "label": run.loaded.labels[index], "score": float(probs[index])}


def classifier_map(run: ClassifierRun, method: str | None = None, class_index: int | None = None,
                   head_fusion: str = "mean", discard: float = 0.0, start_layer: int = 0, head: int | None = None,
                   point: tuple[float, float] | None = None, block: int | None = None) -> tuple[torch.Tensor, dict]:
    """A relevance map [rows, cols] (max 1) and its target for a cached classifier run.

    method: see CLASSIFIER_METHODS (default: rollout for ViT, swin-rollout for Swin); class_index: the class for
    grad-rollout / swin-grad-rollout (default: the top class); head: one head instead of the fusion (cls-attention,
    swin-window); point: (x, y) original-image pixels for swin-window; block: Swin block index for swin-window
    (default: the last block whose stage still has several windows, see `explain.swin.default_block`).
    """
    from .explain import normalize_map

    family = run.loaded.family
    method = method or CLASSIFIER_METHODS[family][0]
    if method not in CLASSIFIER_METHODS[family]:
        raise VtdemoError(f"method '{method}' does not apply to {family}; choose from "
                          f"{', '.join(CLASSIFIER_METHODS[family])}")
    target = _class_target(run, class_index)
    if family == "vit":
        from .explain import vit as ex

        cfg = run.loaded.config
        prefix = cfg.num_prefix_tokens
        if method == "rollout":
            flat = ex.rollout(run.attentions, head_fusion, discard, start_layer, prefix)
        elif method == "grad-rollout":
            _, attns, grads = ex.class_gradients(run.loaded.model, run.x, target["index"])
            flat = ex.grad_rollout(cast("list[torch.Tensor]", attns), grads, prefix)  # ViT: tensors
        else:
            per_head = ex.cls_attention(run.attentions, prefix)  # [nh, P]
            flat = per_head.mean(0) if head is None else per_head[head]
        relevance = flat.view(*cfg.grid_size)  # [gh, gw]
    else:
        from .explain import swin as ex_swin

        if method == "swin-rollout":
            relevance = ex_swin.rollout(run.attentions, head_fusion=head_fusion, discard_ratio=discard)
        elif method == "swin-grad-rollout":
            _, swin_attns, swin_grads = ex_swin.class_gradients(run.loaded.model, run.x, target["index"])
            relevance = ex_swin.grad_rollout(cast("list[ex_swin.SwinAttention]", swin_attns), swin_grads)
        else:
            if point is None:
                raise VtdemoError("swin-window needs a point: --point X,Y in image pixels")
            relevance = ex_swin.window_attention_at(run.attentions, _point_in_input(run, point), block=block,
                                                    head=head)
    return normalize_map(relevance.detach().cpu()), target


def _point_in_input(run: ClassifierRun, point: tuple[float, float]) -> tuple[float, float]:
    """(x, y) in original pixels -> (x, y) as fractions [0, 1) of the model input (inside the seen region)."""
    x0, y0, x1, y1 = run.region
    fx = min(max((point[0] - x0) / (x1 - x0), 0.0), 1.0 - 1e-6)
    fy = min(max((point[1] - y0) / (y1 - y0), 0.0), 1.0 - 1e-6)
    return fx, fy


def detr_map(run: DetrRun, method: str = "detr-decoder", query: int | None = None,
             point: tuple[float, float] | None = None, layer: int = -1, head: int | None = None,
             direction: str = "row") -> torch.Tensor:
    """A DETR map on the backbone grid [h, w] (max 1): decoder cross-attention of `query`, or encoder
    self-attention at `point` (x, y original pixels; direction 'row' = where it looks, 'column' = who looks at it)."""
    from .explain import detr as ex_detr
    from .explain import normalize_map

    if method == "detr-decoder":
        if query is None:
            raise VtdemoError("detr-decoder needs a detection (query index)")
        m = ex_detr.decoder_attention(run.output, query, layer=layer, head=head)
    elif method == "detr-encoder":
        if point is None:
            raise VtdemoError("detr-encoder needs a point: --point X,Y in image pixels")
        w, h = run.image.size
        m = ex_detr.encoder_attention(run.output, (point[0] / w, point[1] / h), layer=layer, head=head,
                                      direction=direction)
    else:
        raise VtdemoError(f"method '{method}' does not apply to DETR; choose from {', '.join(DETR_METHODS)}")
    return normalize_map(m.detach().cpu())


def explain(image: ImageSource, model: str | hub.LoadedModel = hub.DEFAULT_VIT, method: str | None = None,
            class_index: int | None = None, head_fusion: str = "mean", discard: float = 0.0, start_layer: int = 0,
            detection: int = 0, threshold: float = 0.7, point: tuple[float, float] | None = None,
            head: int | None = None, name: str | None = None, deletion: bool = False) -> Explanation:
    """One explanation map for one image (the CLI's `explain`). See `classifier_map` and `detr_map`.

    deletion: also run the deletion-curve sanity check (classifiers only); the result goes to `Explanation.deletion`.
    """
    loaded = _as_loaded(model)
    rgb = load_image(image)
    label = _name(image, name)
    if loaded.family != "detr":
        run = run_classifier(loaded, rgb)
        method = method or CLASSIFIER_METHODS[loaded.family][0]
        m, target = classifier_map(run, method, class_index, head_fusion, discard, start_layer, head, point)
        check = deletion_check(run, m, target["index"]) if deletion else None
        return Explanation(label, loaded.id, method, target, m, run.region, check)
    detr_run = run_detr(loaded, rgb)
    method = method or DETR_METHODS[0]
    keep = postprocess.select(detr_run.scored, threshold)
    query = None
    if method == "detr-decoder":
        if detection >= len(keep):
            raise ExplainError(f"{label}: only {len(keep)} detections with score >= {threshold:g}; "
                              f"detection {detection} does not exist (lower --threshold)")
        det = detections(loaded, detr_run.scored, keep[detection:detection + 1])[0]
        query = det.query
        target = {"query": det.query, "label_id": det.label_id, "label": det.label, "score": det.score, "box": det.box}
    else:
        target = {"point": list(point) if point else None}
    m = detr_map(detr_run, method, query=query, point=point, head=head)
    return Explanation(label, loaded.id, method, target, m, (0.0, 0.0, float(rgb.width), float(rgb.height)))


def match(image: ImageSource, model: str | hub.LoadedModel, ground_truth: Any, name: str | None = None
          ) -> dict[str, Any]:
    """DETR set matching of one image against ground truth (JSON text or parsed; see `explain.matching`).

    Returns {"image", "model", "size", "pairs": [{"object", "label", "box", "query", "predicted_label",
    "predicted_score", "predicted_box", "cost": {...}}], "losses": {...}} with boxes in original pixels.
    """
    from .explain import matching

    loaded = _as_loaded(model, "detr")
    rgb = load_image(image)
    gt = matching.parse_ground_truth(ground_truth, loaded.labels)
    out = forward_detr(loaded, [rgb])
    result = matching.match(out.logits[0].cpu(), out.boxes[0].cpu(), gt, rgb.size)
    scored = postprocess.detr_scores(out.logits[0].cpu(), out.boxes[0].cpu(), rgb.size)
    probs = out.logits[0].float().softmax(-1).cpu()
    pairs = []
    for q, o, cost in zip(result.queries, result.objects, result.pair_costs, strict=True):
        label = int(gt.labels[o])
        pairs.append({"object": o, "label": loaded.labels[label], "box": [round(float(v), 2) for v in gt.boxes[o]],
                      "query": q, "predicted_label": loaded.labels[int(scored.labels[q])],
                      "predicted_score": round(float(scored.scores[q]), 6),
                      "probability_of_object_class": round(float(probs[q, label]), 6),
                      "predicted_box": [round(float(v), 2) for v in scored.boxes[q]], "cost": cost})
    return {"image": _name(image, name), "model": loaded.id, "size": list(rgb.size), "pairs": pairs,
            "losses": result.losses}


def deletion_check(run: ClassifierRun, relevance: torch.Tensor, class_index: int, steps: int = 20,
                   seed: int = 0) -> dict[str, Any]:
    """Sanity check of a classifier map: delete its most relevant patches first and follow the class probability,
    against a random deletion order (see `explain.deletion`). Lower area = the map found what the model used.

    relevance: [rows, cols] on the model's grid. Returns {"auc", "random_auc", "fraction", "probability",
    "random_probability"}; ~(steps + 1) / 8 batched forward passes per curve.
    """
    from .explain import deletion

    def probability(images: torch.Tensor) -> torch.Tensor:
        with inference(run.loaded.device):
            return run.loaded.model(images).logits.float().softmax(-1)[:, class_index].cpu()

    grid = (relevance.shape[0], relevance.shape[1])  # [gh, gw]
    frac, prob = deletion.deletion_curve(probability, run.x, deletion.patch_order(relevance), grid, steps)
    g = torch.Generator().manual_seed(seed)
    _, rand = deletion.deletion_curve(probability, run.x, torch.randperm(relevance.numel(), generator=g), grid, steps)
    return {"auc": deletion.area_under_curve(frac, prob), "random_auc": deletion.area_under_curve(frac, rand),
            "fraction": frac.tolist(), "probability": prob.tolist(), "random_probability": rand.tolist()}
