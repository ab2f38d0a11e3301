"""The Vision Transformer's configuration, in plain data: the frozen config (ViT, DeiT, DeiT III, register ViTs),
the timm architecture names it builds, and the readers of timm and transformers `config.json` files.

`vtdemo.models.vit` (the modules) re-exports every name here; see its docstring for the papers and the references.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UnsupportedModelError

#: "token": the CLS token; "avg": the mean of the patch tokens; "token_avg": both, concatenated (transformers'
#: `Dinov2ForImageClassification`: a linear head on [CLS, mean of patches], 2C wide).
READOUTS = ("token", "avg", "token_avg")


@dataclass(frozen=True)
class ViTConfig:
    """Architecture hyper-parameters (timm's keyword names where timm has one).

    distilled: a DeiT distillation token follows CLS. distill_head: the distillation token has its own head and
    inference averages both heads (timm `deit_*_distilled_*`, transformers `DeiTForImageClassificationWithTeacher`);
    transformers' plain `DeiTForImageClassification` has the token but classifies from CLS alone.
    class_token / reg_tokens: a CLS token; R register tokens after it (timm `reg_token` [1, R, C]).
    no_embed_class: position embeddings for the patch tokens only (DeiT III, register ViTs).
    global_pool: the readout, "token" (the CLS token) or "avg" (mean over the patch tokens, registers excluded).
    fc_norm: the final LayerNorm after the pooling (`fc_norm`) instead of before it (`norm`); None = timm's default,
    on exactly for "avg". num_classes 0: no head, the model returns the pooled features [B, C] in place of logits
    (timm's `num_classes=0`; DINOv2's backbones). init_values: LayerScale on both residual branches (`ls1.gamma`,
    `ls2.gamma`) when set.
    img_size: the trained input size; dynamic_img_size: accept other multiples of the patch size at run time
    (position embeddings resampled; `pos_antialias` as timm, off for transformers checkpoints).
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_classes: int = 1000
    distilled: bool = False
    distill_head: bool = False
    ln_eps: float = 1e-6
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False
    global_pool: str = "token"
    fc_norm: bool | None = None
    init_values: float | None = None
    dynamic_img_size: bool = False
    pos_antialias: bool = True

    def __post_init__(self) -> None:
        if self.global_pool not in READOUTS:
            raise UnsupportedModelError(f"ViT readout '{self.global_pool}' is not supported (only {READOUTS})")
        if self.global_pool in ("token", "token_avg") and not self.class_token:
            raise UnsupportedModelError("a ViT with token readout needs its CLS token (class_token=True)")

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: CLS (if any) + DIST (DeiT distilled) + registers."""
        return int(self.class_token) + int(self.distilled) + self.reg_tokens

    @property
    def readout(self) -> str:
        """ "token": logits from the CLS token (row 0); "avg": from the mean of the patch tokens; "token_avg": from
        both (concatenated)."""
        return self.global_pool

    @property
    def has_head(self) -> bool:
        """False for a feature model (num_classes 0): no classes to predict or to explain."""
        return self.num_classes > 0

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool == "avg" if self.fc_norm is None else bool(self.fc_norm)

    @property
    def grid_size(self) -> tuple[int, int]:
        """The trained patch grid (rows, cols); a run at another size reports its own (`ClassifierOutput.grid`)."""
        return (self.img_size // self.patch_size, self.img_size // self.patch_size)


# timm naming: tiny/small/base/large = 192/384/768/1024 wide, 3/6/12/16 heads, 12/12/12/24 deep.
_WIDTHS = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}

PRESETS: dict[str, ViTConfig] = {
    f"{family}_{size}_{'distilled_' if dist else ''}patch{p}_{img}": ViTConfig(
        img_size=img, patch_size=p, embed_dim=w, depth=d, num_heads=h, distilled=dist, distill_head=dist
    )
    for family, dist in (("vit", False), ("deit", False), ("deit", True))
    for size, (w, d, h) in _WIDTHS.items()
    for p, img in ((16, 224), (16, 384), (32, 224), (32, 384), (8, 224))
}
# DeiT III (timm `deit3_*`, models/deit.py): LayerScale 1e-6, positions on the patches only, CLS readout.
_DEIT3 = {
    "small": (384, 12, 6),
    "medium": (512, 12, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
for _name, _patch, _img in (
    ("small", 16, 224),
    ("small", 16, 384),
    ("medium", 16, 224),
    ("base", 16, 224),
    ("base", 16, 384),
    ("large", 16, 224),
    ("large", 16, 384),
    ("huge", 14, 224),
):
    _w, _d, _h = _DEIT3[_name]
    PRESETS[f"deit3_{_name}_patch{_patch}_{_img}"] = ViTConfig(
        img_size=_img, patch_size=_patch, embed_dim=_w, depth=_d, num_heads=_h, no_embed_class=True, init_values=1e-6
    )
# ViTs with registers and average pooling (timm `vit_*_reg*_gap_*`, models/vision_transformer.py), as timm defines
# them: name -> (width, depth, heads, mlp_ratio, init_values, extra arguments).
_REG_GAP: dict[str, tuple[int, int, int, float, float | None, dict[str, Any]]] = {
    "wee_patch16_reg1_gap_256": (256, 14, 4, 5.0, 1e-5, {}),
    "little_patch16_reg1_gap_256": (320, 14, 5, 5.6, 1e-5, {}),
    "little_patch16_reg4_gap_256": (320, 14, 5, 5.6, 1e-5, {}),
    "medium_patch16_reg1_gap_256": (512, 12, 8, 4.0, 1e-5, {}),
    "medium_patch16_reg4_gap_256": (512, 12, 8, 4.0, 1e-5, {}),
    "mediumd_patch16_reg4_gap_256": (512, 20, 8, 4.0, 1e-5, {}),
    "mediumd_patch16_reg4_gap_384": (512, 20, 8, 4.0, 1e-5, {}),
    "betwixt_patch16_reg1_gap_256": (640, 12, 10, 4.0, 1e-5, {}),
    "betwixt_patch16_reg4_gap_256": (640, 12, 10, 4.0, 1e-5, {}),
    "betwixt_patch16_reg4_gap_384": (640, 12, 10, 4.0, 1e-5, {}),
    "base_patch16_reg4_gap_256": (768, 12, 12, 4.0, None, {}),
    "so150m_patch16_reg4_gap_256": (896, 18, 14, 2.572, None, {"no_embed_class": False, "fc_norm": False}),
    "so150m_patch16_reg4_gap_384": (896, 18, 14, 2.572, None, {"no_embed_class": False, "fc_norm": False}),
    "so150m2_patch16_reg1_gap_256": (832, 21, 13, 34 / 13, 1e-5, {"no_embed_class": False, "qkv_bias": False}),
    "so150m2_patch16_reg1_gap_384": (832, 21, 13, 34 / 13, 1e-5, {"no_embed_class": False, "qkv_bias": False}),
    "so150m2_patch16_reg1_gap_448": (832, 21, 13, 34 / 13, 1e-5, {"no_embed_class": False, "qkv_bias": False}),
}
for _name, (_w, _d, _h, _mlp, _init, _extra) in _REG_GAP.items():
    _m = re.match(r"^\w+_patch(\d+)_reg(\d+)_gap_(\d+)$", _name)
    assert _m is not None
    PRESETS[f"vit_{_name}"] = ViTConfig(
        **{
            "img_size": int(_m.group(3)),
            "patch_size": int(_m.group(1)),
            "embed_dim": _w,
            "depth": _d,
            "num_heads": _h,
            "mlp_ratio": _mlp,
            "init_values": _init,
            "class_token": False,
            "reg_tokens": int(_m.group(2)),
            "no_embed_class": True,
            "global_pool": "avg",
            **_extra,
        }
    )

# timm keyword names that a `model_args` entry of a timm config.json may carry -> our fields.
_TIMM_ARGS = {
    "img_size": "img_size",
    "patch_size": "patch_size",
    "in_chans": "in_chans",
    "embed_dim": "embed_dim",
    "depth": "depth",
    "num_heads": "num_heads",
    "mlp_ratio": "mlp_ratio",
    "qkv_bias": "qkv_bias",
    "distilled": "distilled",
    "class_token": "class_token",
    "reg_tokens": "reg_tokens",
    "no_embed_class": "no_embed_class",
    "global_pool": "global_pool",
    "fc_norm": "fc_norm",
    "init_values": "init_values",
}
# timm keywords we accept only at the value our architecture implements (dynamic_img_size: we always are).
_DEFAULT_ONLY = {
    "pre_norm": False,
    "qk_norm": False,
    "final_norm": True,
    "pos_embed": "learn",
    "dynamic_img_pad": False,
    "pool_include_prefix": False,
    "proj_bias": True,
}
_IGNORED = {"num_classes", "dynamic_img_size"}


def square_side(value: Any, what: str) -> int:
    """An image or patch size given as one number or as (height, width) -> one side; only squares are supported."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise UnsupportedModelError(f"{what}={list(value)}: only square sizes are supported")
        value = value[0]
    return int(value)


def supported_timm_architectures() -> list[str]:
    """Every timm architecture name `config_from_timm` knows, sorted."""
    return sorted(PRESETS)


def config_from_timm(architecture: str, num_classes: int, model_args: dict[str, Any] | None = None) -> ViTConfig:
    """Config for a timm architecture name (e.g. `vit_base_patch16_224`, `deit3_small_patch16_224`,
    `vit_medium_patch16_reg4_gap_256`), with `model_args` overrides applied; accepts other input sizes."""
    base = architecture.split(".")[0]
    if base not in PRESETS:
        raise UnsupportedModelError(
            f"timm architecture '{architecture}' is not supported; supported ViT/DeiT names look like "
            "vit_base_patch16_224, deit_small_patch16_224, deit_base_distilled_patch16_224, deit3_base_patch16_384, "
            "vit_medium_patch16_reg4_gap_256"
        )
    cfg = replace(PRESETS[base], num_classes=num_classes, dynamic_img_size=True)
    extra: dict[str, Any] = {}
    for key, value in (model_args or {}).items():
        if key in _TIMM_ARGS:
            extra[_TIMM_ARGS[key]] = square_side(value, "timm model argument img_size") if key == "img_size" else value
        elif key not in _IGNORED and _DEFAULT_ONLY.get(key, object()) != value:
            raise UnsupportedModelError(f"timm model argument '{key}={value}' is not supported by our ViT")
    if "distilled" in extra:
        extra["distill_head"] = extra["distilled"]
    return replace(cfg, **extra)


def config_from_hf(config: dict[str, Any]) -> ViTConfig:
    """Config from a transformers ViT / DeiT `config.json` dict; accepts other input sizes (transformers'
    `interpolate_pos_encoding`: bicubic without antialias)."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise UnsupportedModelError(f"ViT with activation '{config['hidden_act']}' is not supported (only gelu)")
    hidden = int(config.get("hidden_size", 768))
    return ViTConfig(
        img_size=int(config.get("image_size", 224)),
        patch_size=int(config.get("patch_size", 16)),
        in_chans=int(config.get("num_channels", 3)),
        embed_dim=hidden,
        depth=int(config.get("num_hidden_layers", 12)),
        num_heads=int(config.get("num_attention_heads", 12)),
        mlp_ratio=int(config.get("intermediate_size", 4 * hidden)) / hidden,
        qkv_bias=bool(config.get("qkv_bias", True)),
        num_classes=len(config.get("id2label") or {}) or int(config.get("num_labels", 1000)),
        distilled=config.get("model_type") == "deit",
        distill_head="DeiTForImageClassificationWithTeacher" in (config.get("architectures") or []),
        ln_eps=float(config.get("layer_norm_eps", 1e-12)),
        dynamic_img_size=True,
        pos_antialias=False,
    )
