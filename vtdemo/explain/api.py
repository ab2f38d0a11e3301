"""Explanation orchestration: resolve the target, dispatch through the method registry, scale, and check.

- `explain_run(run, method, options)`: one registered method on a cached run -> `MapResult` (map max 1, optional
  named sub-maps, the target it explains). Everything else here is built on it.
- `classifier_map`: the long-standing keyword interface for a classifier run, a thin wrapper.
- `deletion_check`: deletion and insertion curves of a classifier map, each against a random order
  (`vtdemo.explain.deletion`).

The image-level entry points (`explain(image, model, ...)`, the CLI's `explain`) are `vtdemo.pipeline`'s: it loads
the image and the model, then calls these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from .. import hub
from ..device import inference
from ..errors import ExplainError
from . import normalize_map, registry
from .registry import ExplainOptions, Method
from .runs import ClassifierRun, DetrRun, RtDetrRun


@dataclass
class MapResult:
    """One method's output. map: [rows, cols], max 1; maps: named sub-maps (e.g. box edges x0, y0, x1, y1), each
    max 1, or None; target: what was explained (class index/label/score, or the detection, or the point)."""

    method: Method
    map: torch.Tensor
    target: dict[str, Any]
    maps: dict[str, torch.Tensor] | None = None


@dataclass
class Explanation:
    """A relevance map on the model's own grid. map: [rows, cols], scaled so that its maximum is 1."""

    image: str
    model: str
    method: str
    target: dict[str, Any]
    map: torch.Tensor
    region: tuple[float, float, float, float]  # original-image pixels the map covers
    deletion: dict[str, Any] | None = None  # deletion / insertion check, when asked for
    maps: dict[str, torch.Tensor] | None = None  # named sub-maps (detr-relevance --target box: x0, y0, x1, y1)
    runtime: dict[str, Any] | None = None  # engine and precision (`vtdemo.pipeline.runtime_info`)

    @property
    def grid(self) -> list[int]:
        return list(self.map.shape)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "image": self.image,
            "model": self.model,
            "method": self.method,
            "target": self.target,
            "grid": self.grid,
            "map": _rows(self.map),
        }
        if self.maps is not None:
            d["maps"] = {k: _rows(v) for k, v in self.maps.items()}
        if self.deletion is not None:
            d["deletion"] = {
                k: (round(v, 6) if isinstance(v, float) else [round(x, 6) for x in v]) for k, v in self.deletion.items()
            }
        if self.runtime:
            d["runtime"] = self.runtime
        return d


def _rows(m: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in m]


def methods_for_model(loaded: hub.LoadedModel) -> list[Method]:
    """The registered methods that apply to this model (each entry decides: `Method.why_not`)."""
    return [m for m in registry.methods_for(loaded.family) if m.why_not(loaded) is None]


def methods_for_run(run: ClassifierRun | DetrRun | RtDetrRun) -> list[Method]:
    """The methods that apply to one cached run (e.g. the ViT LRP walks only at the trained input size)."""
    return [m for m in registry.methods_for(run.family) if m.why_not(run.loaded, run) is None]


def classifier_methods(loaded: hub.LoadedModel) -> tuple[str, ...]:
    """The names of `methods_for_model`."""
    return tuple(m.name for m in methods_for_model(loaded))


def class_target(run: ClassifierRun, class_index: int | None) -> dict[str, Any]:
    """{"index", "label", "score"} of the class to explain (None = the top class); ExplainError if out of range.
    A model without a head (a feature model) has no class: {} (its maps explain the CLS token, not a class)."""
    if not run.loaded.labels:
        return {}
    probs = run.logits.softmax(-1)
    index = int(probs.argmax()) if class_index is None else int(class_index)
    if not 0 <= index < probs.numel():
        raise ExplainError(
            f"class index {index} is out of range: {run.loaded.id} has {probs.numel()} classes (0..{probs.numel() - 1})"
        )
    return {"index": index, "label": run.loaded.labels[index], "score": float(probs[index])}


def detection_target(run: DetrRun, query: int) -> dict[str, Any]:
    """{"query", "label_id", "label", "score", "box"} of one decoder query (box xyxy in original pixels)."""
    s = run.scored
    label_id = int(s.labels[query])
    return {
        "query": int(query),
        "label_id": label_id,
        "label": run.loaded.labels[label_id],
        "score": float(s.scores[query]),
        "box": [round(float(v), 2) for v in s.boxes[query]],
    }


def rtdetr_target(run: RtDetrRun, query: int, class_index: int | None) -> dict[str, Any]:
    """{"query", "label_id", "label", "score", "box"} of one RT-DETR decoder query and class (None = the query's
    best class): sigmoid score, box xyxy in original pixels (not clipped, as the detections)."""
    logits = run.output.logits[0].detach().float().cpu()  # [Q, K]
    Q, K = logits.shape
    if not 0 <= int(query) < Q:
        raise ExplainError(f"query {query} is out of range: {run.loaded.id} has {Q} queries (0..{Q - 1})")
    label_id = int(logits[query].argmax()) if class_index is None else int(class_index)
    if not 0 <= label_id < K:
        raise ExplainError(f"class index {label_id} is out of range: {run.loaded.id} has {K} classes (0..{K - 1})")
    w, h = run.image.size
    cx, cy, bw, bh = run.output.boxes[0, query].detach().float().cpu().tolist()
    box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
    return {
        "query": int(query),
        "label_id": label_id,
        "label": run.loaded.labels[label_id],
        "score": float(logits[query, label_id].sigmoid()),
        "box": [round(v, 2) for v in box],
    }


def on_exact_model(run: ClassifierRun | DetrRun | RtDetrRun) -> Any:
    """The run with its model on the exact fp32 PyTorch path (itself for an exact model): gradient methods (and
    anything that walks the module, such as LRP, Grad-CAM hooks or DETR relevance) run there, never on the fast
    engine's compiled graph; the cached forward outputs are kept."""
    from ..engine import exact_model

    return run if getattr(run.loaded, "precision", "exact") != "fast" else replace(run, loaded=exact_model(run.loaded))


def explain_run(
    run: ClassifierRun | DetrRun | RtDetrRun, method: str | None = None, options: ExplainOptions | None = None
) -> MapResult:
    """One registered method on a cached run. method None = the family's default.

    Classifiers: the target is the class `options.class_index` (None = the top class), reported for every method.
    DETR: a detection method needs `options.query`; a point method `options.point` (original pixels).
    RT-DETR: as DETR; `options.query` is the decoder query, `options.class_index` its class (None = its best).
    Raises ExplainError (one line) for a method that does not apply, a class out of range, a missing point/query.
    """
    options = options or ExplainOptions()
    meth = registry.get(method, run.family)
    why = meth.why_not(run.loaded, run)
    if why is not None:
        raise ExplainError(why)
    if options.target_kind not in registry.TARGET_KINDS:
        raise ExplainError(f"target '{options.target_kind}' is unknown; choose from {', '.join(registry.TARGET_KINDS)}")
    if options.mask_outliers and "mask_outliers" not in meth.controls:
        raise ExplainError("masking high-norm outliers applies to the ViT rollout only")
    if isinstance(run, RtDetrRun):
        if meth.target == "detection":
            if options.query is None:
                raise ExplainError(f"{meth.name} needs a detection (query index)")
            target = rtdetr_target(run, options.query, options.class_index)
            options = replace(options, class_index=target["label_id"])
            if "target_kind" in meth.controls:
                target["kind"] = options.target_kind
        else:
            target = {"point": list(options.point) if options.point else None}
    elif isinstance(run, DetrRun):
        if meth.target == "detection":
            if options.query is None:
                raise ExplainError(f"{meth.name} needs a detection (query index)")
            target = detection_target(run, options.query)
            if "target_kind" in meth.controls:
                target["kind"] = options.target_kind
        else:
            target = {"point": list(options.point) if options.point else None}
    else:
        target = class_target(run, options.class_index)
        options = replace(options, class_index=target.get("index"))
    raw = meth.fn(on_exact_model(run) if meth.needs_gradients else run, options)
    if isinstance(raw, dict):
        maps = {k: normalize_map(v.detach().cpu()) for k, v in raw.items()}
        combined = normalize_map(torch.stack(list(maps.values())).mean(0))  # [rows, cols]
        return MapResult(meth, combined, target, maps)
    return MapResult(meth, normalize_map(raw.detach().cpu()), target)


def classifier_map(
    run: ClassifierRun, method: str | None = None, options: ExplainOptions | None = None, **fields: Any
) -> tuple[torch.Tensor, dict]:
    """A relevance map [rows, cols] (max 1) and its target for a cached classifier run (see `explain_run`).

    method: a registered method of the run's family (default: rollout for ViT, swin-rollout for Swin); options: an
    `ExplainOptions`, or its fields as keywords (`class_index=...`, `head=...`), applied on top.
    """
    result = explain_run(run, method, replace(options or ExplainOptions(), **fields))
    return result.map, result.target


def pick_detection(run: DetrRun, detection: int, threshold: float) -> int:
    """The decoder query of the `detection`-th kept detection (score >= threshold, by score); ExplainError if none."""
    from .. import postprocess

    if not 0.0 <= threshold <= 1.0:
        raise ExplainError(f"threshold must be between 0 and 1, not {threshold:g}")
    keep = postprocess.select(run.scored, threshold)
    if not 0 <= detection < len(keep):
        allowed = f"choose 0..{len(keep) - 1}" if len(keep) else "lower --threshold"
        raise ExplainError(
            f"only {len(keep)} detections with score >= {threshold:g}; detection {detection} does not exist ({allowed})"
        )
    return int(keep[detection])


def deletion_check(
    run: ClassifierRun, relevance: torch.Tensor, class_index: int, steps: int = 20, seed: int = 0
) -> dict[str, Any]:
    """Sanity checks of a classifier map (see `explain.deletion`), each against the same random patch order:
    deletion (most relevant patches removed first; lower area = the map found what the model used) and insertion
    (most relevant patches added first to the baseline image; higher area = better).

    relevance: [rows, cols] on the model's grid. Returns {"auc", "random_auc", "fraction", "probability",
    "random_probability", "insertion_auc", "random_insertion_auc", "insertion_probability",
    "random_insertion_probability"} (fraction = share of patches removed, or added, at each step);
    ~(steps - 1) / 8 batched forward passes per curve, four curves, and one of the two end images they share.
    """
    from . import deletion

    probability = class_probability(run, class_index)
    grid = (int(relevance.shape[0]), int(relevance.shape[1]))
    order = deletion.patch_order(relevance)
    random_order = torch.randperm(relevance.numel(), generator=torch.Generator().manual_seed(seed))
    ends = deletion.end_points(probability, run.x)  # the full and the empty image, shared by the four curves
    frac, prob = deletion.deletion_curve(probability, run.x, order, grid, steps, ends=ends)
    _, rand = deletion.deletion_curve(probability, run.x, random_order, grid, steps, ends=ends)
    _, ins = deletion.insertion_curve(probability, run.x, order, grid, steps, ends=ends)
    _, rand_ins = deletion.insertion_curve(probability, run.x, random_order, grid, steps, ends=ends)
    auc = deletion.area_under_curve
    return {
        "auc": auc(frac, prob),
        "random_auc": auc(frac, rand),
        "fraction": frac.tolist(),
        "probability": prob.tolist(),
        "random_probability": rand.tolist(),
        "insertion_auc": auc(frac, ins),
        "random_insertion_auc": auc(frac, rand_ins),
        "insertion_probability": ins.tolist(),
        "random_insertion_probability": rand_ins.tolist(),
    }


def class_probability(run: ClassifierRun, class_index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """images [B, 3, H, W] -> [B] softmax probability of `class_index` (the perturbation curves' measure)."""

    def probability(images: torch.Tensor) -> torch.Tensor:
        with inference(run.loaded.device):
            return run.loaded.model(images).logits.float().softmax(-1)[:, class_index].cpu()

    return probability
