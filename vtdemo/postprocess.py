"""Model outputs -> predictions: top-k classes, and DETR's and RT-DETR's sets of boxes.

DETR post-processing follows the paper and `DetrImageProcessor.post_process_object_detection`: softmax over the
K+1 classes, drop the last ("no object"), score and label = max over the rest, boxes (cx, cy, w, h) normalised to
the un-padded image -> (x0, y0, x1, y1) pixels of the *original* image. We also clip boxes to the image and sort by
score; no NMS is needed by design, but a class-aware NMS (`torchvision.ops.batched_nms`) is offered as an option.

RT-DETR post-processing follows `RTDetrImageProcessor.post_process_object_detection` (focal scores): sigmoid of every
query x class logit, the top Q pairs over the flattened [Q * K] (label = index % K, query = index // K, so one query
can give several detections), boxes cxcywh -> xyxy scaled by (w, h, w, h) of the original image and **not clipped**
(`rtdetr_scores`). The reference keeps score > threshold; `select` keeps score >= threshold (equal scores aside, the
same set).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, box_convert, clip_boxes_to_image

from . import checks
from .families import DEFAULT_THRESHOLD


def top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits: [K] -> (probabilities [k] descending, class indices [k]); k is capped at K."""
    probs = logits.float().softmax(dim=-1)
    return probs.topk(min(k, probs.shape[-1]))


@dataclass
class DetrScores:
    """Per-query scores of one image, before any threshold. scores/labels: [Q]; boxes: [Q, 4] xyxy pixels.

    queries: None for DETR (entry i is query i); for RT-DETR [M], the query each (query, class) entry comes from.
    """

    scores: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    queries: torch.Tensor | None = None

    def query_of(self, entry: int) -> int:
        """The decoder query behind entry `entry` (an index into scores / labels / boxes)."""
        return int(entry if self.queries is None else self.queries[entry])


def detr_scores(logits: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int]) -> DetrScores:
    """logits: [Q, K+1]; boxes: [Q, 4] normalised cxcywh; image_size: (width, height) of the original image.

    Returns every query's best real class and its box in original-image pixels (xyxy), clipped to the image.
    """
    probs = logits.float().softmax(dim=-1)[:, :-1]  # [Q, K]: drop "no object"
    scores, labels = probs.max(dim=-1)  # [Q]
    w, h = image_size
    xyxy = box_convert(boxes.float(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h], dtype=torch.float32)
    xyxy = clip_boxes_to_image(xyxy, (h, w))  # [Q, 4]
    return DetrScores(scores=scores, labels=labels, boxes=xyxy)


def rtdetr_scores(logits: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int]) -> DetrScores:
    """logits: [Q, K] (sigmoid focal logits); boxes: [Q, 4] normalised cxcywh; image_size: (width, height) of the
    original image. Returns the Q best (query, class) pairs by sigmoid score, descending, boxes xyxy in original
    pixels, not clipped (as `RTDetrImageProcessor.post_process_object_detection`); `queries` names each pair's query.
    """
    Q, K = logits.shape
    probs = logits.float().sigmoid().flatten()  # [Q*K]
    scores, index = probs.topk(Q)  # [Q]
    labels, queries = index % K, torch.div(index, K, rounding_mode="floor")  # [Q], [Q]
    w, h = image_size
    xyxy = box_convert(boxes.float(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h], dtype=torch.float32)  # [Q, 4]
    return DetrScores(scores=scores, labels=labels, boxes=xyxy[queries], queries=queries)


def select(
    det: DetrScores,
    threshold: float = DEFAULT_THRESHOLD,
    classes: set[int] | None = None,
    max_detections: int | None = None,
    nms_iou: float | None = None,
) -> torch.Tensor:
    """Indices of the queries to show, sorted by score descending.

    threshold: keep score >= threshold (0 keeps all queries); classes: keep only these label ids;
    max_detections: keep at most this many; nms_iou: if set, class-aware NMS at this IoU.
    Values out of range (a NaN threshold would silently keep nothing) raise `vtdemo.errors.InputError`.
    """
    threshold = checks.number(threshold, "the threshold", 0.0, 1.0)
    if max_detections is not None:
        max_detections = checks.whole(max_detections, "max detections", 1, None)
    if nms_iou is not None:
        nms_iou = checks.number(nms_iou, "the NMS IoU", 0.0, 1.0, lo_open=True)
    keep = det.scores >= threshold
    if classes is not None:
        keep &= torch.isin(det.labels, torch.tensor(sorted(classes), dtype=det.labels.dtype))
    idx = keep.nonzero().flatten()
    if nms_iou is not None and idx.numel():
        idx = idx[batched_nms(det.boxes[idx], det.scores[idx], det.labels[idx], nms_iou)]
    idx = idx[det.scores[idx].argsort(descending=True, stable=True)]
    if max_detections is not None:
        idx = idx[:max_detections]
    return idx
