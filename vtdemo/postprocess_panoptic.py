"""Panoptic post-processing of DETR's class logits and mask logits: pure tensor functions.

Follows transformers' `DetrImageProcessor.post_process_panoptic_segmentation` (its `remove_low_and_no_objects`,
`compute_segments`, `check_segment_validity`), itself a port of facebookresearch/detr's `PostProcessPanoptic`
(`models/segmentation.py`), step by step:
1. per query, score and label = max of the softmax over classes (the "no object" column included); keep the queries
   whose label is not "no object" and whose score is > `threshold`;
2. mask probabilities = sigmoid(mask logits), resized bilinearly to the target size, each multiplied by its query's
   score; every pixel goes to the query with the largest weighted probability (argmax);
3. a query becomes a segment if it won some pixels and at least one pixel of its weighted probability is
   >= `mask_threshold`, and the pixels it won are > `overlap_mask_area_threshold` of those (small leftovers of a
   query that lost most of its mask to others are dropped);
4. labels in `fuse` (e.g. the "stuff" classes: one sky, not several) share one segment id per label.
Segment ids count from 1 in query order; 0 = no segment (transformers fills its map with -1 when no query passes
step 1). Where we differ: a new segment always gets the next unused
id (transformers reuses its counter after a fused label, so a later new segment can get an id already taken and
two segments merge in its map), the segment list holds one entry per id (the first query's score), and each entry
also names its queries, its area and whether its label is a "thing" (COCO panoptic rule, `coco_is_thing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: COCO panoptic: the 80 "thing" categories have ids 1-90, the 53 "stuff" categories ids 92-200
#: (cocodataset/panopticapi `panoptic_coco_categories.json`, `isthing`).
COCO_THING_MAX_ID = 90


def coco_is_thing(label_id: int) -> bool:
    """True for a COCO panoptic "thing" (countable object), False for "stuff" (sky, grass, wall, ...)."""
    return 1 <= label_id <= COCO_THING_MAX_ID


def coco_stuff_ids(num_labels: int) -> set[int]:
    """The label ids of a COCO panoptic head with `num_labels` classes that are "stuff" (to fuse per label)."""
    return {i for i in range(num_labels) if i > COCO_THING_MAX_ID}


@dataclass
class Segment:
    """One panoptic segment. id: its value in `PanopticResult.segmentation`; queries: the DETR queries in it."""

    id: int
    label_id: int
    score: float
    was_fused: bool
    queries: list[int] = field(default_factory=list)
    area: int = 0  # pixels at the result's size
    isthing: bool = True


@dataclass
class PanopticResult:
    """segmentation: [H, W] int32, 0 = no segment, else a `Segment.id`; segments in id order."""

    segmentation: Tensor
    segments: list[Segment]

    def mask(self, segment_id: int) -> Tensor:
        """[H, W] bool: the pixels of one segment."""
        return self.segmentation == segment_id


def panoptic_segments(
    logits: Tensor,
    mask_logits: Tensor,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    fuse: set[int] | None = None,
    target_size: tuple[int, int] | None = None,
) -> PanopticResult:
    """One image's panoptic segmentation (see the module docstring).

    logits: [Q, K+1] class logits (last column "no object"); mask_logits: [Q, h, w] (DETR's `pred_masks` of one image,
    covering exactly the image: run images one at a time); target_size: (H, W) of the result (default (h, w)).
    """
    fuse = fuse or set()
    scores, labels = logits.softmax(-1).max(-1)  # [Q], [Q]
    keep = (labels != logits.shape[-1] - 1) & (scores > threshold)  # [Q]
    queries = keep.nonzero().flatten().tolist()
    H, W = target_size or tuple(mask_logits.shape[-2:])
    segmentation = torch.zeros((H, W), dtype=torch.int32, device=logits.device)
    if not queries:
        return PanopticResult(segmentation, [])
    probs = mask_logits[keep].sigmoid()  # [S, h, w]
    if target_size is not None:
        probs = F.interpolate(probs[None], size=target_size, mode="bilinear", align_corners=False)[0]  # [S, H, W]
    probs = probs * scores[keep][:, None, None]  # [S, H, W]
    owner = probs.argmax(0)  # [H, W], index into the kept queries
    segments: dict[int, Segment] = {}
    id_of_label: dict[int, int] = {}
    for k, query in enumerate(queries):
        won = owner == k  # [H, W]
        won_area, own_area = int(won.sum()), int((probs[k] >= mask_threshold).sum())
        if won_area == 0 or own_area == 0 or not won_area / own_area > overlap_mask_area_threshold:
            continue
        label = int(labels[query])
        fused = label in fuse
        if fused and label in id_of_label:
            seg = segments[id_of_label[label]]
        else:
            seg = Segment(
                id=len(segments) + 1,
                label_id=label,
                score=round(float(scores[query]), 6),
                was_fused=fused,
                isthing=coco_is_thing(label),
            )
            segments[seg.id] = seg
            if fused:
                id_of_label[label] = seg.id
        segmentation[won] = seg.id
        seg.queries.append(query)
    for seg in segments.values():
        seg.area = int((segmentation == seg.id).sum())
    return PanopticResult(segmentation, [s for s in segments.values() if s.area > 0])


def segments_of_output(output: Any, image_size: tuple[int, int], **options: Any) -> PanopticResult:
    """`panoptic_segments` of image 0 of a `vtdemo.models.detr_panoptic.PanopticOutput` (a batch of one image, as
    `vtdemo.pipeline.run_detr` makes it), at the original image size `image_size` = (width, height) in pixels."""
    logits, masks = output.logits, getattr(output, "pred_masks", None)
    if masks is None:
        raise ValueError(
            "this DETR has no mask head (load a DetrForSegmentation checkpoint, e.g. facebook/detr-resnet-50-panoptic)"
        )
    width, height = image_size
    return panoptic_segments(logits[0].float(), masks[0].float(), target_size=(height, width), **options)
