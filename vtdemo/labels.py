"""Class names used when a checkpoint carries none (timm files have no `id2label`).

ImageNet-1k and COCO names come from torchvision's weight metadata, which ships inside the torchvision package
(no download). A repo's own `id2label` always wins over these.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def imagenet() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index = class id."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@lru_cache(maxsize=1)
def coco() -> tuple[str, ...]:
    """The 91 COCO category ids 0..90 as DETR numbers them; unused ids are "N/A" (id 0 included)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    names = list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    names[0] = "N/A"  # torchvision calls id 0 "__background__"; DETR's id2label says "N/A"
    return tuple(names)


def for_classes(num_classes: int, id2label: dict | None, detection: bool = False) -> tuple[str, ...]:
    """Names for `num_classes` ids: the repo's `id2label`, else ImageNet / COCO when the count fits, else "class N"."""
    if id2label:
        table = {int(k): str(v) for k, v in id2label.items()}
        return tuple(table.get(i, f"class {i}") for i in range(num_classes))
    if detection and num_classes == 91:
        return coco()
    if not detection and num_classes == 1000:
        return imagenet()
    return tuple(f"class {i}" for i in range(num_classes))
