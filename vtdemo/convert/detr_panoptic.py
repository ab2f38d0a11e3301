"""DETR panoptic checkpoints -> `vtdemo.models.detr_panoptic.DetrPanoptic` names.

transformers `DetrForSegmentation` files (`facebook/detr-resnet-50-panoptic`) hold the detector under `detr.`
(`detr.model.backbone...`, `detr.class_labels_classifier`, ...: the names `vtdemo.convert.detr.from_hf` reads,
behind one more prefix) and the segmentation head under the original facebookresearch/detr names
(`bbox_attention.{q,k}_linear`, `mask_head.{lay1-5, gn1-5, out_lay, adapter1-3}`), which are ours.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import StateDict
from . import detr as detr_conv


def from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers DetrForSegmentation state dict (either backbone naming) -> ours."""
    detector = {k[len("detr.") :]: v for k, v in state_dict.items() if k.startswith("detr.")}
    head = {k: v for k, v in state_dict.items() if not k.startswith("detr.")}
    return {**{f"detr.{k}": v for k, v in detr_conv.from_hf(detector).items()}, **head}
