"""What each protocol does with a batch of images, shared by the local engine and the Ray engine.

A builder takes the loaded model and the protocol's options (plain, picklable values) and returns
`work(items) -> records`, where an item is `(name, RGB image, parts still missing)` and each record is one JSON
line of the results file. The Ray actors call the same builders, so both engines write the same lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .runner import Item

Work = Callable[[list[Item]], list[dict[str, Any]]]


def faithfulness(loaded: Any, options: dict[str, Any]) -> Work:
    """options: methods, batch_size, seed, labels ({name: class index}, may be empty)."""
    from .faithfulness import FaithfulnessEvaluator

    evaluator = FaithfulnessEvaluator(loaded, options["methods"], options["batch_size"], options["seed"])
    labels = options["labels"]

    def work(items: list[Item]) -> list[dict[str, Any]]:
        return [r for name, image, missing in items for r in evaluator.evaluate(name, image, labels.get(name), missing)]

    return work


def randomisation(loaded: Any, options: dict[str, Any]) -> Work:
    """options: seed, threshold."""
    from .randomisation import cascading_randomisation

    def work(items: list[Item]) -> list[dict[str, Any]]:
        out = []
        for name, image, missing in items:
            curves = cascading_randomisation(loaded, image, missing, options["seed"], options["threshold"])
            out += [{"image": name, "model": loaded.id, **curves[m].to_dict()} for m in missing]
        return out

    return work


def coco(loaded: Any, options: dict[str, Any]) -> Work:
    """options: ids ({name: COCO image id}) and, for RT-DETR, categories (the COCO id of each class index). One DETR
    forward pass per batch of images (padded, as DETR's eval); RT-DETR runs image by image (`forward_rtdetr`)."""
    from ..pipeline import forward_detr, forward_rtdetr
    from .coco import detections, rtdetr_detections

    ids = options["ids"]

    def work(items: list[Item]) -> list[dict[str, Any]]:
        if loaded.family == "rtdetr":
            records = []
            for name, image, _ in items:
                out = forward_rtdetr(loaded, image)
                found = rtdetr_detections(
                    out.logits[0].cpu(), out.boxes[0].cpu(), image.size, ids[name], options["categories"]
                )
                size = list(image.size)
                records.append(
                    {"image": name, "model": loaded.id, "image_id": ids[name], "size": size, "detections": found}
                )
            return records
        out = forward_detr(loaded, [image for _, image, _ in items])
        return [
            {
                "image": name,
                "model": loaded.id,
                "image_id": ids[name],
                "size": list(image.size),
                "detections": detections(out.logits[i].cpu(), out.boxes[i].cpu(), image.size, ids[name]),
            }
            for i, (name, image, _) in enumerate(items)
        ]

    return work


BUILDERS: dict[str, Callable[[Any, dict[str, Any]], Work]] = {
    "faithfulness": faithfulness,
    "randomisation": randomisation,
    "coco": coco,
}
