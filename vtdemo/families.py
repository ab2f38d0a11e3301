"""The family registry: which model families vtdemo runs, and which architecture implements each checkpoint.

A *family* (`Family`: vit, swin, detr) is what the rest of vtdemo sees: the explanations that apply (the method
registry keys on it), the app's column or tab, the default repo and the suggested ones. An *architecture*
(`Architecture`) is one implementation inside a family, found from a checkpoint's `config.json` (a timm
`architecture` name prefix, or a transformers `model_type`, optionally with its `architectures` class), with the
module that builds it (`config_from_timm` / `config_from_hf` and the model class) and its converter. Adding a
checkpoint family is one `Architecture` entry plus its model and converter modules (as timm's `register_model` and
facebookresearch/detr's `hubconf.py` make one entry point per model).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .errors import UnsupportedModelError


@dataclass(frozen=True)
class Family:
    """A model family as the app and the explanations see it."""

    name: str  # "vit" | "swin" | "detr" | "rtdetr"
    display: str
    task: str  # "classify" | "detect"
    default: str  # the default Hub repo
    known: tuple[str, ...]  # suggested repos for the app's pickers (any supported repo id works)


@dataclass(frozen=True)
class Architecture:
    """One implementation of a family, and how to recognise its checkpoints."""

    name: str
    family: str
    model: str  # module under vtdemo.models with config_from_timm / config_from_hf
    model_class: str
    converter: str  # module under vtdemo.convert with from_timm / from_hf
    timm_prefixes: tuple[str, ...] = ()
    hf_model_types: tuple[str, ...] = ()
    hf_architectures: tuple[str, ...] = ()  # if set, one of these must be in config.json's "architectures"
    model_module: str | None = None  # where model_class lives, when not in `model`

    def matches(self, config: dict[str, Any]) -> str | None:
        """ "timm" / "transformers" if this architecture reads `config`, else None."""
        if "architecture" in config:
            return "timm" if str(config["architecture"]).startswith(self.timm_prefixes or ("\0",)) else None
        if config.get("model_type") not in self.hf_model_types:
            return None
        if self.hf_architectures and not set(self.hf_architectures) & set(config.get("architectures") or []):
            return None
        return "transformers"

    def modules(self) -> tuple[ModuleType, Callable[[Any], Any], ModuleType]:
        """(config module, model class, converter module), imported on first use."""
        arch = importlib.import_module(f"vtdemo.models.{self.model}")
        holder = importlib.import_module(f"vtdemo.models.{self.model_module}") if self.model_module else arch
        return arch, getattr(holder, self.model_class), importlib.import_module(f"vtdemo.convert.{self.converter}")


DEFAULT_VIT = "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
DEFAULT_SWIN = "timm/swin_tiny_patch4_window7_224.ms_in1k"
DEFAULT_DETR = "facebook/detr-resnet-50"
DEFAULT_RTDETR = "PekingU/rtdetr_r18vd"
PANOPTIC_DETR = "facebook/detr-resnet-50-panoptic"  # offered in the Detect picker for the Masks view
#: The detectors' default confidence threshold (DETR's own demos; the CLI, the API and the app's sliders start here).
DEFAULT_THRESHOLD = 0.7

FAMILIES: dict[str, Family] = {
    "vit": Family(
        name="vit",
        display="ViT / DeiT",
        task="classify",
        default=DEFAULT_VIT,
        known=(
            DEFAULT_VIT,
            "timm/vit_base_patch16_224.augreg_in21k_ft_in1k",
            "timm/deit_small_patch16_224.fb_in1k",
            "timm/deit_base_patch16_224.fb_in1k",
            "google/vit-base-patch16-224",
            "facebook/deit-base-patch16-224",
            "timm/deit3_small_patch16_224.fb_in22k_ft_in1k",
            "timm/vit_medium_patch16_reg4_gap_256.sbb_in1k",
            "timm/vit_betwixt_patch16_reg4_gap_256.sbb_in1k",
            "facebook/dinov2-small-imagenet1k-1-layer",
            "facebook/dinov2-with-registers-small-imagenet1k-1-layer",
        ),
    ),
    "swin": Family(
        name="swin",
        display="Swin",
        task="classify",
        default=DEFAULT_SWIN,
        known=(
            DEFAULT_SWIN,
            "timm/swin_small_patch4_window7_224.ms_in1k",
            "timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k",
            "microsoft/swin-tiny-patch4-window7-224",
            "timm/swinv2_tiny_window8_256.ms_in1k",
            "microsoft/swinv2-tiny-patch4-window8-256",
        ),
    ),
    "detr": Family(
        name="detr",
        display="DETR",
        task="detect",
        default=DEFAULT_DETR,
        known=(DEFAULT_DETR, "facebook/detr-resnet-101", PANOPTIC_DETR, "facebook/detr-resnet-50@no_timm"),
    ),
    "rtdetr": Family(
        name="rtdetr",
        display="RT-DETR",
        task="detect",
        default=DEFAULT_RTDETR,
        known=(
            DEFAULT_RTDETR,
            "PekingU/rtdetr_r34vd",
            "PekingU/rtdetr_r50vd",
            "PekingU/rtdetr_r101vd",
            "PekingU/rtdetr_r50vd_coco_o365",
            "PekingU/rtdetr_r101vd_coco_o365",
            "PekingU/rtdetr_v2_r18vd",
            "PekingU/rtdetr_v2_r34vd",
            "PekingU/rtdetr_v2_r50vd",
            "PekingU/rtdetr_v2_r101vd",
        ),
    ),
}

#: Tried in order: the more specific entries first (DINOv2 before ViT, Swin V2 before Swin, panoptic DETR before DETR).
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture(
        name="dinov2",
        family="vit",
        model="dinov2",
        model_class="VisionTransformer",
        model_module="vit",
        converter="dinov2",
        timm_prefixes=tuple(
            f"vit_{size}_patch14_{reg}dinov2" for size in ("small", "base", "large", "giant") for reg in ("", "reg4_")
        ),
        hf_model_types=("dinov2", "dinov2_with_registers"),
    ),
    Architecture(
        name="vit",
        family="vit",
        model="vit",
        model_class="VisionTransformer",
        converter="vit",
        timm_prefixes=("vit_", "deit_", "deit3_"),
        hf_model_types=("vit", "deit"),
    ),
    Architecture(
        name="swinv2",
        family="swin",
        model="swinv2",
        model_class="SwinTransformerV2",
        converter="swinv2",
        timm_prefixes=("swinv2_",),
        hf_model_types=("swinv2",),
    ),
    Architecture(
        name="swin",
        family="swin",
        model="swin",
        model_class="SwinTransformer",
        converter="swin",
        timm_prefixes=("swin_",),
        hf_model_types=("swin",),
    ),
    Architecture(
        name="detr-panoptic",
        family="detr",
        model="detr",
        model_class="DetrPanoptic",
        converter="detr_panoptic",
        hf_model_types=("detr",),
        hf_architectures=("DetrForSegmentation",),
        model_module="detr_panoptic",
    ),
    Architecture(
        name="detr",
        family="detr",
        model="detr",
        model_class="DETR",
        converter="detr",
        hf_model_types=("detr",),
    ),
    Architecture(
        name="rtdetr",
        family="rtdetr",
        model="rtdetr",
        model_class="RTDETR",
        converter="rtdetr",
        hf_model_types=("rt_detr", "rt_detr_v2", "d_fine"),  # d_fine: config_from_hf refuses it in one line
    ),
)

SUPPORTED = (
    "timm vit_*/deit_*/deit3_*/vit_*_reg*_gap_*/vit_*_patch14_*dinov2/swin_*/swinv2_* repos and transformers ViT, "
    "DeiT, DINOv2 (with or without registers), Swin, Swin V2, DETR (ResNet-50/101, detection or panoptic) and "
    "RT-DETR / RT-DETRv2 (ResNet-vd R18/R34/R50/R101) repos"
)


def architecture_of(config: dict[str, Any], source: str) -> tuple[str, Architecture]:
    """(format "timm" | "transformers", architecture) for a config.json dict; `UnsupportedModelError` naming what
    is supported otherwise."""
    for arch in ARCHITECTURES:
        fmt = arch.matches(config)
        if fmt is not None:
            return fmt, arch
    if "architecture" in config:
        raise UnsupportedModelError(f"{source} is a timm '{config['architecture']}' model; vtdemo supports {SUPPORTED}")
    model_type = config.get("model_type")
    kind = f"a '{model_type}' model" if model_type else "not a model config vtdemo knows"
    raise UnsupportedModelError(f"{source} is {kind}; vtdemo supports {SUPPORTED}")
