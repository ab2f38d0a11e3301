"""DETR's set matching: which of the 100 predictions answers which ground-truth object, and the loss it gives.

This is the paper's core idea (Carion et al. 2020, §3.1, eqs. 1-2; facebookresearch/detr `models/matcher.py` and
`SetCriterion`). Per image, the matching cost between prediction i and object j is

    C[i, j] = w_class * (-p_i(c_j)) + w_L1 * ||b_i - b_j||_1 + w_GIoU * (-GIoU(b_i, b_j))

with boxes as normalised (cx, cy, w, h) for L1 and as corners for GIoU, and weights 1 / 5 / 2. The optimal one-to-one
assignment comes from `scipy.optimize.linear_sum_assignment`; unmatched predictions are "no object". The loss terms
are then: cross-entropy over all queries (the no-object class weighted 0.1, a weighted mean as PyTorch computes it),
and L1 and 1 - GIoU over the matched pairs, each divided by the number of objects. Total = 1 * CE + 5 * L1 + 2 * GIoU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

from ..errors import ExplainError

COST_CLASS, COST_L1, COST_GIOU = 1.0, 5.0, 2.0
NO_OBJECT_WEIGHT = 0.1


@dataclass
class GroundTruth:
    """labels: [M] class ids; boxes: [M, 4] (x0, y0, x1, y1) pixels of the original image."""

    labels: torch.Tensor
    boxes: torch.Tensor


def parse_ground_truth(data: Any, label_names: Sequence[str]) -> GroundTruth:
    """Ground truth from JSON text or an already-parsed value.

    Accepted: COCO style (`{"annotations": [{"bbox": [x, y, w, h], "category_id": k}, ...]}` or the list of those
    dicts), or a simple list of `[label, x0, y0, x1, y1]` where label is a class id or a class name.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ExplainError(f"ground truth is not valid JSON: {exc}") from None
        except RecursionError:
            raise ExplainError(
                "ground truth JSON is nested too deeply: expected a list of [label, x0, y0, x1, y1] or COCO annotations"
            ) from None
    if isinstance(data, dict):
        data = data.get("annotations", [])
    if not isinstance(data, list):
        raise ExplainError("ground truth must be a list of [label, x0, y0, x1, y1] or COCO annotations")
    if len(data) > MAX_BOXES:
        raise ExplainError(f"the ground truth holds {len(data)} boxes; at most {MAX_BOXES} are accepted")
    by_name = {name.lower(): i for i, name in enumerate(label_names) if name != "N/A"}
    labels, boxes = [], []
    for item in data:
        try:
            if isinstance(item, dict):
                x, y, w, h = (_coordinate(v) for v in item["bbox"])
                label, box = item["category_id"], [x, y, x + w, y + h]
            else:
                label, box = item[0], [_coordinate(v) for v in item[1:5]]
                if len(item) != 5:
                    raise ValueError
        except (KeyError, TypeError, ValueError, IndexError):
            raise ExplainError(
                f"cannot read ground-truth entry {_short(item)}: expected [label, x0, y0, x1, y1] "
                f"with finite pixel coordinates (|v| <= {MAX_COORDINATE:g}) or "
                "{'bbox': [x, y, w, h], 'category_id': k}"
            ) from None
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise ExplainError(f"the label of ground-truth entry {_short(item)} must be a class id or name")
        if isinstance(label, str) and not label.strip().lstrip("-").isdigit():
            if label.strip().lower() not in by_name:
                raise ExplainError(f"unknown class name {_short(label)} in the ground truth")
            label = by_name[label.strip().lower()]
        label = int(label)
        if not 0 <= label < len(label_names):
            raise ExplainError(f"class id {label} in the ground truth is out of range (0..{len(label_names) - 1})")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ExplainError(f"ground-truth box {box} is empty: it needs x1 > x0 and y1 > y0")
        labels.append(label)
        boxes.append(box)
    if not labels:
        raise ExplainError("the ground truth holds no boxes")
    return GroundTruth(torch.tensor(labels, dtype=torch.long), torch.tensor(boxes, dtype=torch.float32))


MAX_COORDINATE = 1e6  # pixels; far beyond any photo, small enough that box arithmetic stays exact in float32
MAX_BOXES = 1000


def _coordinate(value: Any) -> float:
    """A finite pixel coordinate (a number or numeric string); ValueError otherwise (NaN, inf, 1e308, null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    x = float(value)
    if not abs(x) <= MAX_COORDINATE:  # also False for NaN
        raise ValueError(value)
    return x


def _short(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


def normalised_cxcywh(boxes_xyxy: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """[M, 4] xyxy pixels -> [M, 4] cxcywh relative to (width, height)."""
    w, h = image_size
    return box_convert(boxes_xyxy, "xyxy", "cxcywh") / torch.tensor([w, h, w, h], dtype=torch.float32)


def cost_matrix(
    logits: torch.Tensor, pred_boxes: torch.Tensor, gt_labels: torch.Tensor, gt_boxes: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The matching cost and its parts, each [Q, M].

    logits: [Q, K+1]; pred_boxes, gt_boxes: normalised cxcywh; gt_labels: [M].
    """
    prob = logits.float().softmax(-1)  # [Q, K+1]
    cost_class = -prob[:, gt_labels]  # [Q, M]
    cost_l1 = torch.cdist(pred_boxes.float(), gt_boxes.float(), p=1)  # [Q, M]
    giou = generalized_box_iou(
        box_convert(pred_boxes.float(), "cxcywh", "xyxy"), box_convert(gt_boxes.float(), "cxcywh", "xyxy")
    )  # [Q, M]
    total = COST_CLASS * cost_class + COST_L1 * cost_l1 + COST_GIOU * (-giou)
    return {"total": total, "class": cost_class, "l1": cost_l1, "giou": -giou}


def hungarian(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a [Q, M] cost (Q >= M): (query indices [M], object indices [M]),
    sorted by object."""
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    order = cols.argsort()
    return torch.as_tensor(rows[order], dtype=torch.long), torch.as_tensor(cols[order], dtype=torch.long)


def loss_terms(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    queries: torch.Tensor,
    objects: torch.Tensor,
) -> dict[str, float]:
    """DETR's loss for one image given a matching (queries[i] answers objects[i]).

    Returns classification (CE, no-object weight 0.1), l1 and giou (each / number of objects) and their weighted total.
    """
    Q, K1 = logits.shape
    num_objects = max(int(gt_labels.numel()), 1)
    target = torch.full((Q,), K1 - 1, dtype=torch.long)  # every query "no object" ...
    target[queries] = gt_labels[objects]  # ... except the matched ones
    weight = torch.ones(K1)
    weight[-1] = NO_OBJECT_WEIGHT
    ce = F.cross_entropy(logits.float(), target, weight=weight)  # weighted mean over queries
    matched_pred, matched_gt = pred_boxes[queries].float(), gt_boxes[objects].float()
    l1 = F.l1_loss(matched_pred, matched_gt, reduction="sum") / num_objects
    giou = torch.diag(
        generalized_box_iou(box_convert(matched_pred, "cxcywh", "xyxy"), box_convert(matched_gt, "cxcywh", "xyxy"))
    )
    giou_loss = (1 - giou).sum() / num_objects
    total = COST_CLASS * ce + COST_L1 * l1 + COST_GIOU * giou_loss
    return {"classification": float(ce), "l1": float(l1), "giou": float(giou_loss), "total": float(total)}


@dataclass
class MatchResult:
    """Which query answers which object, per-pair costs, and the loss terms."""

    queries: list[int]
    objects: list[int]
    pair_costs: list[dict[str, float]]  # per matched pair: total, class, l1, giou
    losses: dict[str, float]


def match(logits: torch.Tensor, pred_boxes: torch.Tensor, gt: GroundTruth, image_size: tuple[int, int]) -> MatchResult:
    """Match one image's predictions (logits [Q, K+1], boxes [Q, 4] normalised cxcywh) to ground truth in pixels."""
    if gt.labels.numel() > logits.shape[0]:
        raise ExplainError(f"{gt.labels.numel()} ground-truth boxes but only {logits.shape[0]} queries")
    gt_boxes = normalised_cxcywh(gt.boxes, image_size)
    costs = cost_matrix(logits, pred_boxes, gt.labels, gt_boxes)
    queries, objects = hungarian(costs["total"])
    pair_costs = [
        {name: round(float(c[q, o]), 6) for name, c in costs.items()} for q, o in zip(queries, objects, strict=True)
    ]
    losses = loss_terms(logits, pred_boxes, gt.labels, gt_boxes, queries, objects)
    return MatchResult(queries.tolist(), objects.tolist(), pair_costs, losses)
