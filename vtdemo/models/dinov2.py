"""DINOv2 (with and without registers) as configurations of our Vision Transformer (`vtdemo.models.vit`).

DINOv2 (Oquab et al., TMLR 2024, "DINOv2: Learning Robust Visual Features without Supervision", arXiv 2304.07193)
is a plain ViT trained without labels: patch 14, LayerScale on both residual branches, position embeddings for a
37x37 grid (518 px) resampled bicubically to the input's grid. The register variants (Darcet et al., ICLR 2024,
"Vision Transformers Need Registers", arXiv 2309.16588) add 4 learnt tokens after CLS that carry no position.
Nothing here is a new module: `VisionTransformer` runs them with these configs, so every ViT explanation applies.

The references, and what each file format means for us:
- timm `vit_{small,base,large}_patch14_dinov2` and `..._reg4_dinov2` (`timm/models/vision_transformer.py`):
  feature models (`num_classes=0`: the CLS token after the final norm), `init_values=1e-5`; the register variant
  keeps positions for the patches only (`no_embed_class`: timm folded the CLS position into `cls_token`).
  Resampling as timm's `resample_abs_pos_embed` (antialias on).
- transformers `dinov2` / `dinov2_with_registers` (`modeling_dinov2*.py`): position embeddings for CLS and the
  patches; registers are inserted between CLS and the patches after the positions are added. We convert the
  register files to timm's form (CLS position added to the CLS token, see `vtdemo.convert.dinov2`), which computes
  the same sums. Resampling: bicubic without antialias for `dinov2`, with antialias for `dinov2_with_registers`
  (as each `interpolate_pos_encoding` does). `Dinov2Model` is a feature model; `Dinov2ForImageClassification` (the
  `*-imagenet1k-1-layer` repos) reads out [CLS, mean of the patch tokens] into one linear layer ("token_avg").
- ViT-g/14 uses a SwiGLU feed-forward network, which our ViT does not have: refused by name.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from ..errors import UnsupportedModelError
from .vit_config import ViTConfig, square_side

__all__ = ["PRESETS", "config_from_hf", "config_from_timm", "registers_partner", "SUPPORTED"]

# name -> (width, depth, heads): timm's and transformers' sizes of the DINOv2 ViTs.
_SIZES = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
SUPPORTED = "DINOv2 ViT-S/14, ViT-B/14 and ViT-L/14, with or without registers"
_GIANT = (
    f"DINOv2 ViT-g/14 uses a SwiGLU feed-forward network, which vtdemo's ViT does not implement; supported: {SUPPORTED}"
)

PRESETS: dict[str, ViTConfig] = {
    f"vit_{size}_patch14_{'reg4_' if reg else ''}dinov2": ViTConfig(
        img_size=518,
        patch_size=14,
        embed_dim=w,
        depth=d,
        num_heads=h,
        num_classes=0,
        init_values=1e-5,
        reg_tokens=4 if reg else 0,
        no_embed_class=reg,
    )
    for size, (w, d, h) in _SIZES.items()
    for reg in (False, True)
}

# timm keywords of a `model_args` entry we read; others must keep timm's default for these presets.
_TIMM_ARGS = {
    "img_size",
    "in_chans",
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "init_values",
    "reg_tokens",
}
_IGNORED = {"num_classes", "dynamic_img_size", "no_embed_class", "class_token", "global_pool"}


def config_from_timm(architecture: str, num_classes: int, model_args: dict[str, Any] | None = None) -> ViTConfig:
    """Config for a timm DINOv2 architecture (`vit_small_patch14_dinov2`, `vit_base_patch14_reg4_dinov2`, ...) with
    `model_args` overrides; any input size that is a multiple of 14 runs."""
    base = architecture.split(".")[0]
    if base.startswith("vit_giant"):
        raise UnsupportedModelError(f"timm architecture '{architecture}': {_GIANT}")
    if base not in PRESETS:
        raise UnsupportedModelError(f"timm architecture '{architecture}' is not supported; {SUPPORTED} are")
    extra: dict[str, Any] = {}
    for key, value in (model_args or {}).items():
        if key in _TIMM_ARGS:
            extra[key] = square_side(value, "timm model argument img_size") if key == "img_size" else value
        elif key not in _IGNORED:
            raise UnsupportedModelError(f"timm model argument '{key}={value}' is not supported for DINOv2")
    cfg = replace(PRESETS[base], num_classes=num_classes, dynamic_img_size=True, **extra)
    if num_classes:  # a timm DINOv2 fine-tuned with a head classifies from its CLS token (timm's default)
        cfg = replace(cfg, global_pool="token")
    return cfg


def config_from_hf(config: dict[str, Any]) -> ViTConfig:
    """Config from a transformers `dinov2` / `dinov2_with_registers` `config.json`: a feature model unless its
    architecture is `...ForImageClassification` (then the [CLS, mean of patches] linear head)."""
    if config.get("use_swiglu_ffn"):
        raise UnsupportedModelError(_GIANT)
    if config.get("hidden_act", "gelu") != "gelu":
        raise UnsupportedModelError(f"DINOv2 with activation '{config['hidden_act']}' is not supported (only gelu)")
    image_size = square_side(config.get("image_size", 518), "DINOv2 image_size")
    patch_size = square_side(config.get("patch_size", 14), "DINOv2 patch_size")
    registers = int(config.get("num_register_tokens", 0)) if config.get("model_type") == "dinov2_with_registers" else 0
    classifier = any(a.endswith("ForImageClassification") for a in config.get("architectures") or [])
    num_classes = (len(config.get("id2label") or {}) or int(config.get("num_labels", 2))) if classifier else 0
    hidden = int(config.get("hidden_size", 768))
    return ViTConfig(
        img_size=image_size,
        patch_size=patch_size,
        in_chans=int(config.get("num_channels", 3)),
        embed_dim=hidden,
        depth=int(config.get("num_hidden_layers", 12)),
        num_heads=int(config.get("num_attention_heads", 12)),
        mlp_ratio=float(config.get("mlp_ratio", 4)),
        qkv_bias=bool(config.get("qkv_bias", True)),
        num_classes=num_classes,
        ln_eps=float(config.get("layer_norm_eps", 1e-6)),
        reg_tokens=registers,
        no_embed_class=registers > 0,  # converted to timm's form (`vtdemo.convert.dinov2`)
        global_pool="token_avg" if classifier else "token",
        init_values=float(config.get("layerscale_value", 1.0)),
        dynamic_img_size=True,
        pos_antialias=config.get("model_type") == "dinov2_with_registers",
    )


# The two names of one DINOv2 model, without and with registers, in each format's repos.
_PARTNERS = (
    (re.compile(r"^(.*/)?dinov2-with-registers-(.+)$"), r"\1dinov2-\2"),
    (re.compile(r"^(.*/)?dinov2-(?!with-registers-)(.+)$"), r"\1dinov2-with-registers-\2"),
    (re.compile(r"^(.*vit_\w+_patch14_)reg4_(dinov2.*)$"), r"\1\2"),
    (re.compile(r"^(.*vit_\w+_patch14_)(dinov2.*)$"), r"\1reg4_\2"),
)


def registers_partner(model_id: str) -> str | None:
    """The same DINOv2 model with registers if `model_id` has none, and without if it has (Hub naming:
    `facebook/dinov2-small` <-> `facebook/dinov2-with-registers-small`, `timm/vit_small_patch14_dinov2.lvd142m` <->
    `timm/vit_small_patch14_reg4_dinov2.lvd142m`); None for any other id."""
    name = model_id.partition("@")[0]  # a revision of one repo says nothing of the other's
    for pattern, replacement in _PARTNERS:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return None
