"""COCO box AP of DETR (and RT-DETR), as DETR's own evaluation computes it (facebookresearch/detr `models/detr.py`
`PostProcess`, `datasets/coco_eval.py` `CocoEvaluator`), with the official COCO API (`pycocotools.cocoeval.COCOeval`,
iouType bbox).

- Every one of the Q queries of an image becomes one detection, no threshold and no NMS: score and label = the
  largest softmax probability over the real classes (the last, "no object", dropped); DETR's class indices are COCO
  category ids (1..90), so a label goes into the results as it is. COCO keeps at most 100 detections per image
  (`maxDets`), exactly DETR's 100 queries.
- Boxes: normalised (cx, cy, w, h) -> (x, y, w, h) in pixels of the original image, not clipped (DETR does not clip).
- RT-DETR (`rtdetr_detections`): as its processor's post-processing, the top Q (query, class) pairs by sigmoid
  score (COCO keeps the best 100 per image), boxes not clipped; its class indices are 0..K-1 (`id2label`), so each
  is mapped to the annotation file's category of the same name (`category_ids`), and a class the file does not
  name gives no detection.
- Images are matched to the annotation file's `images` by `file_name` (the path relative to the image folder, or
  its base name); the evaluation runs on the images that were actually evaluated (`params.imgIds`).
- The 12 numbers are `COCOeval.stats`, keyed as `KEYS`, in 0..1 (-1 where a size range has no ground truth).

Where we differ: an annotation without `area` gets w * h of its box and one without `iscrowd` gets 0 (the COCO files
have both; hand-made files often do not); everything else that pycocotools needs is checked up front, so a file
that is not COCO fails with one line instead of a traceback in the middle of a run.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.ops import box_convert

from ..errors import VtdemoError

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _fail(path: Any, reason: str) -> VtdemoError:
    return VtdemoError(f"--annotations {path} is not a COCO instances file: {reason}")


def check_annotations(data: Any, path: Any = "annotations") -> dict[str, Any]:
    """Validate a parsed COCO instances file and return a copy with `area` / `iscrowd` filled where missing."""
    if not isinstance(data, dict):
        raise _fail(path, "the top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(path, f"no '{key}' list")
    data = copy.deepcopy(data)
    ids = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not isinstance(img.get("file_name"), str):
            raise _fail(path, f"images[{i}] needs an integer 'id' and a string 'file_name'")
        ids.add(img["id"])
    if len(ids) != len(data["images"]):
        raise _fail(path, "image ids are not unique")
    cats = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise _fail(path, f"categories[{i}] needs an integer 'id'")
        cats.add(cat["id"])
    for i, ann in enumerate(data["annotations"]):
        box = ann.get("bbox") if isinstance(ann, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise _fail(path, f"annotations[{i}] needs a 'bbox' [x, y, width, height]")
        if not isinstance(ann.get("id"), int) or ann.get("image_id") not in ids or ann.get("category_id") not in cats:
            raise _fail(path, f"annotations[{i}] needs an integer 'id', a known 'image_id' and a known 'category_id'")
        ann.setdefault("area", float(box[2] * box[3]))
        ann.setdefault("iscrowd", 0)
    return data


def read_annotations(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a COCO instances JSON file (one-line `VtdemoError` when it is not one)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise VtdemoError(f"--annotations {path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None
    return check_annotations(data, path)


def match_images(annotations: dict[str, Any], names: Sequence[str]) -> dict[str, int]:
    """Folder names (relative paths) -> COCO image ids, by `file_name` (relative path first, then base name)."""
    by_name = {img["file_name"]: img["id"] for img in annotations["images"]}
    by_base = {Path(img["file_name"]).name: img["id"] for img in annotations["images"]}
    out = {}
    for name in names:
        image_id = by_name.get(name, by_base.get(Path(name).name))
        if image_id is not None:
            out[name] = image_id
    return out


def detections(logits: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], image_id: int) -> list[dict[str, Any]]:
    """One image's DETR output -> COCO results, one per query (no threshold).

    logits: [Q, K+1] (last = no object); boxes: [Q, 4] normalised cxcywh; size: (width, height) of the original image.
    Returns [{"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score"}, ...] of length Q.
    """
    scores, labels = logits.float().softmax(-1)[:, :-1].max(-1)  # [Q] each
    w, h = size
    xywh = box_convert(boxes.float(), "cxcywh", "xywh") * torch.tensor([w, h, w, h], dtype=torch.float32)  # [Q, 4]
    return [
        {
            "image_id": image_id,
            "category_id": int(c),
            "bbox": [round(float(v), 4) for v in b],
            "score": round(float(s), 6),
        }
        for c, b, s in zip(labels, xywh, scores, strict=False)
    ]


def category_ids(labels: Sequence[str], annotations: dict[str, Any]) -> list[int | None]:
    """For each model class name, the id of the annotation file's category of the same name (case and spaces
    ignored), or None. A VtdemoError in one line when no name matches at all (a model of other classes)."""
    by_name = {str(c.get("name", "")).strip().lower(): c["id"] for c in annotations["categories"]}
    ids = [by_name.get(str(label).strip().lower()) for label in labels]
    if labels and all(i is None for i in ids):
        raise VtdemoError(
            f"none of the model's class names ({', '.join(labels[:3])}, ...) is a category name of the annotations; "
            "an RT-DETR model's classes are matched to the COCO categories by name"
        )
    return ids


def rtdetr_detections(
    logits: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], image_id: int, categories: Sequence[int | None]
) -> list[dict[str, Any]]:
    """One image's RT-DETR output -> COCO results: the top Q (query, class) pairs (`postprocess.rtdetr_scores`).

    logits: [Q, K] sigmoid logits; boxes: [Q, 4] normalised cxcywh; size: (width, height) of the original image;
    categories: the COCO category id of each class index (None: dropped). At most Q results.
    """
    from ..postprocess import rtdetr_scores

    scored = rtdetr_scores(logits, boxes, size)  # xyxy pixels, unclipped
    xywh = box_convert(scored.boxes, "xyxy", "xywh")  # [Q, 4]
    results = []
    for c, b, s in zip(scored.labels.tolist(), xywh, scored.scores, strict=True):
        category = categories[c]
        if category is not None:
            bbox = [round(float(v), 4) for v in b]
            results.append({"image_id": image_id, "category_id": category, "bbox": bbox, "score": round(float(s), 6)})
    return results


def _coco(dataset: dict[str, Any]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
        coco.createIndex()
    return coco


def evaluate(
    annotations: dict[str, Any], results: Sequence[dict[str, Any]], image_ids: Sequence[int]
) -> dict[str, float]:
    """COCO box AP of `results` (COCO results format) on the images `image_ids` -> {key: value} for `KEYS`."""
    from pycocotools.cocoeval import COCOeval

    gt = _coco(annotations)
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(copy.deepcopy(list(results)))  # loadRes adds fields to what it is given
    else:  # loadRes refuses an empty list; no detections is a valid (zero) answer
        dt = _coco({"images": annotations["images"], "categories": annotations["categories"], "annotations": []})
    ev = COCOeval(gt, dt, iouType="bbox")
    ev.params.imgIds = sorted(set(image_ids))
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(KEYS, ev.stats, strict=False)}


def table(stats: dict[str, float]) -> list[str]:
    """The 12 numbers in pycocotools' own wording."""
    rows = [
        ("Precision", "0.50:0.95", "all", 100, "AP"),
        ("Precision", "0.50", "all", 100, "AP50"),
        ("Precision", "0.75", "all", 100, "AP75"),
        ("Precision", "0.50:0.95", "small", 100, "APs"),
        ("Precision", "0.50:0.95", "medium", 100, "APm"),
        ("Precision", "0.50:0.95", "large", 100, "APl"),
        ("Recall", "0.50:0.95", "all", 1, "AR1"),
        ("Recall", "0.50:0.95", "all", 10, "AR10"),
        ("Recall", "0.50:0.95", "all", 100, "AR100"),
        ("Recall", "0.50:0.95", "small", 100, "ARs"),
        ("Recall", "0.50:0.95", "medium", 100, "ARm"),
        ("Recall", "0.50:0.95", "large", 100, "ARl"),
    ]
    return [
        f" Average {what:<9} (A{what[0]}) @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = "
        f"{stats[key]:.3f}   {key}"
        for what, iou, area, dets, key in rows
    ]
