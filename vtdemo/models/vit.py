"""Vision Transformer (ViT), DeiT, DeiT III and ViTs with registers, in plain PyTorch.

Implements "An Image is Worth 16x16 Words" (Dosovitskiy et al. 2021, arXiv 2010.11929), the DeiT variants (Touvron
et al. 2021, arXiv 2012.12877: same encoder, optional distillation token with its own head), DeiT III (Touvron et al.
2022, "DeiT III: Revenge of the ViT", arXiv 2204.07118: LayerScale on both residual branches, position embeddings on
the patch tokens only) and ViTs with register tokens (Darcet et al., ICLR 2024, "Vision Transformers Need
Registers", arXiv 2309.16588; timm's `vit_*_reg*_gap_*` models: no CLS token, registers, average-pool readout).

The structure and module names are the classic ones (`PatchEmbed`, `Attention`, `Mlp`, `Block`,
`VisionTransformer`), which are also timm's names (`timm/models/vision_transformer.py`: `reg_token`, `ls1.gamma`,
`fc_norm`), so a timm checkpoint loads with no renaming. Token order and position embeddings follow timm's
`_pos_embed`: [CLS] [DIST] [REG x R] patches; with `no_embed_class` the position embeddings cover the patches only
and the prefix tokens are concatenated after adding them, otherwise they cover every token. Differences from timm:
- no dropout / drop-path / representation layer / pre-norm (inference only; no Hub checkpoint we load uses them);
- attention probabilities are an explicit output (`return_attn=True`, plain softmax path), and so are the block
  outputs (`return_tokens=True`); otherwise the fused `F.scaled_dot_product_attention` kernel runs;
- readouts "token" (CLS) and "avg" (mean of the patch tokens, prefix excluded) only;
- other input sizes (`dynamic_img_size`, timm's `dynamic_img_size=True` semantics): any height and width that are
  multiples of the patch size; the position embeddings of the patch grid are resampled bicubically as timm's
  `resample_abs_pos_embed` does (prefix positions kept; antialias on) or, for transformers checkpoints, as
  transformers' `interpolate_pos_encoding` does (antialias off). At the trained grid the stored embeddings are used
  unchanged. The run-time grid is returned on the output (`ClassifierOutput.grid`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModelError
from .outputs import ClassifierOutput

READOUTS = ("token", "avg")


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
    on exactly for "avg". init_values: LayerScale on both residual branches (`ls1.gamma`, `ls2.gamma`) when set.
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
        if self.global_pool == "token" and not self.class_token:
            raise UnsupportedModelError("a ViT with token readout needs its CLS token (class_token=True)")

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: CLS (if any) + DIST (DeiT distilled) + registers."""
        return int(self.class_token) + int(self.distilled) + self.reg_tokens

    @property
    def readout(self) -> str:
        """ "token": logits from the CLS token (row 0); "avg": from the mean of the patch tokens."""
        return self.global_pool

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
    extra = {}
    for key, value in (model_args or {}).items():
        if key in _TIMM_ARGS:
            if key == "img_size" and isinstance(value, (list, tuple)):
                if len(set(value)) != 1:
                    raise UnsupportedModelError(f"timm model argument img_size={value}: only square training sizes")
                value = value[0]
            extra[_TIMM_ARGS[key]] = value
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


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int],
    num_prefix: int,
    antialias: bool = True,
) -> torch.Tensor:
    """Position embeddings [1, prefix + gh*gw, C] of a trained grid -> [1, prefix + nh*nw, C] for another grid.

    The first `num_prefix` rows (CLS / DIST / register positions, when the embeddings cover them) are kept as they
    are; the patch rows are laid out on the old grid (row-major) and resized bicubically (align_corners False) in
    float32, as timm's `resample_abs_pos_embed` (antialias True) and transformers' `interpolate_pos_encoding`
    (antialias False) do. The trained grid returns the input unchanged.
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    C = patches.shape[-1]
    grid = patches.float().reshape(1, old_grid[0], old_grid[1], C).permute(0, 3, 1, 2)  # [1, C, gh, gw]
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=antialias)
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, C).to(pos_embed.dtype)  # [1, nh*nw, C]
    return torch.cat([prefix, patches], dim=1)


class PatchEmbed(nn.Module):
    """Image -> patch tokens with one strided convolution (kernel = stride = patch size)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, dynamic: bool = False) -> None:
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = patch_size
        self.dynamic = dynamic
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] -> [B, C, H/p, W/p] (the caller flattens after reading the grid)."""
        H, W = x.shape[-2:]
        if not self.dynamic and (H, W) != self.img_size:
            raise ValueError(f"input is {(H, W)}, this ViT expects {self.img_size}")
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(
                f"input is {(H, W)}: height and width must be multiples of the patch size {self.patch_size}"
            )
        return self.proj(x)  # [B, C, gh, gw]


class Attention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection (rows q, k, v)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [B, N, C] -> ([B, N, C], attention probabilities [B, nh, N, N] or None)."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)  # [B, N, 3, nh, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, nh, N, hd]
        if return_attn:
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # [B, nh, N, N]
            out = attn @ v  # [B, nh, N, hd]
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v)  # [B, nh, N, hd]
        out = out.transpose(1, 2).reshape(B, N, C)  # [B, N, nh*hd]
        return self.proj(out), attn


class Mlp(nn.Module):
    """Two-layer feed-forward network with exact GELU."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel scaling of a residual branch (CaiT / DeiT III): x * gamma, gamma [C] learnt (timm `gamma`)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm encoder block: x + LS1(Attn(LN(x))), then x + LS2(MLP(LN(x))); LS = identity without LayerScale."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float, init_values: float | None = None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.ls1: nn.Module = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2: nn.Module = LayerScale(dim, init_values) if init_values is not None else nn.Identity()

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attn)
        x = x + self.ls1(y)
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x, attn


class VisionTransformer(nn.Module):
    """ViT / DeiT / DeiT III / register-ViT classifier: [CLS] [DIST] [REG..] + patch tokens with learned positions
    -> blocks -> LN -> CLS or mean-of-patches readout (-> LN for fc_norm) -> head(s)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, C, cfg.dynamic_img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C)) if cfg.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, C)) if cfg.distilled else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, C)) if cfg.reg_tokens else None
        self.pos_prefix = 0 if cfg.no_embed_class else cfg.num_prefix_tokens  # prefix rows of pos_embed
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + self.pos_prefix, C))
        self.blocks = nn.ModuleList(
            Block(C, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.ln_eps, cfg.init_values) for _ in range(cfg.depth)
        )
        self.norm: nn.Module = nn.Identity() if cfg.use_fc_norm else nn.LayerNorm(C, eps=cfg.ln_eps)
        self.fc_norm: nn.Module = nn.LayerNorm(C, eps=cfg.ln_eps) if cfg.use_fc_norm else nn.Identity()
        self.head = nn.Linear(C, cfg.num_classes)
        self.head_dist = nn.Linear(C, cfg.num_classes) if cfg.distill_head else None
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for token in (self.cls_token, self.reg_token):
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """x: [B, 3, H, W] -> (tokens [B, N, C] with positions, N = prefix + gh*gw; the patch grid (gh, gw))."""
        x = self.patch_embed(x)  # [B, C, gh, gw]
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        x = x.flatten(2).transpose(1, 2)  # [B, gh*gw, C], patches row-major
        pos = resample_pos_embed(
            self.pos_embed, grid, self.patch_embed.grid_size, self.pos_prefix, self.cfg.pos_antialias
        )  # [1, pos_prefix + gh*gw, C]
        prefix = [
            t.expand(x.shape[0], -1, -1)  # [B, 1, C] / [B, R, C]
            for t in (self.cls_token, self.dist_token, self.reg_token)
            if t is not None
        ]
        if self.cfg.no_embed_class:  # DeiT III, register ViTs: positions on the patches, then concatenate
            x = torch.cat([*prefix, x + pos], dim=1)  # [B, N, C]
        else:  # ViT, DeiT: positions on every token
            x = torch.cat([*prefix, x], dim=1) + pos  # [B, N, C]
        return x, grid

    def forward(self, x: torch.Tensor, return_attn: bool = False, return_tokens: bool = False) -> ClassifierOutput:
        """x: [B, 3, H, W] normalised image -> logits [B, num_classes], the patch grid, and on request the per-block
        attention [B, nh, N, N] and the per-block output tokens [B, N, C] (the residual stream after each block,
        before the final norm)."""
        x, grid = self.embed(x)
        attentions, tokens = [], []
        for block in self.blocks:
            x, attn = block(x, return_attn)
            attentions.append(attn)
            tokens.append(x)
        x = self.norm(x)
        if self.cfg.readout == "avg":
            logits = self.head(self.fc_norm(x[:, self.cfg.num_prefix_tokens :].mean(dim=1)))  # [B, K]
        else:
            logits = self.head(self.fc_norm(x[:, 0]))  # [B, K]
        if self.head_dist is not None:  # DeiT distilled: inference averages the two heads (as timm does)
            logits = (logits + self.head_dist(x[:, 1])) / 2
        return ClassifierOutput(
            logits=logits,
            attentions=attentions if return_attn else None,
            grid=grid,
            tokens=tokens if return_tokens else None,
        )
