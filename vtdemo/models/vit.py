"""Vision Transformer (ViT) and DeiT, in plain PyTorch.

Implements "An Image is Worth 16x16 Words" (Dosovitskiy et al. 2021, arXiv 2010.11929) and the DeiT variants
(Touvron et al. 2021, arXiv 2012.12877: same encoder, optional distillation token with its own head).

The structure and module names are the classic ones (`PatchEmbed`, `Attention`, `Mlp`, `Block`,
`VisionTransformer`), which are also timm's names (`timm/models/vision_transformer.py`), so a timm checkpoint loads
with no renaming. Differences from timm:
- no dropout / drop-path / representation layer (inference only, and no Hub checkpoint we load uses a pre-logits layer);
- attention probabilities are an explicit output (`return_attn=True`, plain softmax path); otherwise the fused
  `F.scaled_dot_product_attention` kernel runs;
- the input must have the configured size; the loader gives the matching preprocessing.
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


@dataclass(frozen=True)
class ViTConfig:
    """Architecture hyper-parameters.

    distilled: a DeiT distillation token follows CLS (`num_prefix_tokens` 2 instead of 1). distill_head: the
    distillation token has its own head and inference averages both heads (timm `deit_*_distilled_*`, transformers
    `DeiTForImageClassificationWithTeacher`); transformers' plain `DeiTForImageClassification` has the token but
    classifies from CLS alone.
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

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self.distilled else 1

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.img_size // self.patch_size, self.img_size // self.patch_size)


# timm naming: tiny/small/base/large = 192/384/768/1024 wide, 3/6/12/16 heads, 12/12/12/24 deep.
_WIDTHS = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
_ARCH_RE = re.compile(r"^(vit|deit)_(tiny|small|base|large)_(distilled_)?patch(\d+)_(\d+)$")

PRESETS: dict[str, ViTConfig] = {
    f"{family}_{size}_{'distilled_' if dist else ''}patch{p}_{img}": ViTConfig(
        img_size=img, patch_size=p, embed_dim=w, depth=d, num_heads=h, distilled=dist, distill_head=dist
    )
    for family, dist in (("vit", False), ("deit", False), ("deit", True))
    for size, (w, d, h) in _WIDTHS.items()
    for p, img in ((16, 224), (16, 384), (32, 224), (32, 384), (8, 224))
}

# timm keyword names that a `model_args` entry of a timm config.json may carry -> our fields.
_TIMM_ARGS = {"img_size": "img_size", "patch_size": "patch_size", "in_chans": "in_chans", "embed_dim": "embed_dim",
              "depth": "depth", "num_heads": "num_heads", "mlp_ratio": "mlp_ratio", "qkv_bias": "qkv_bias",
              "distilled": "distilled"}
# timm keywords we accept only at the value our architecture implements.
_DEFAULT_ONLY = {"global_pool": "token", "class_token": True, "no_embed_class": False, "reg_tokens": 0,
                 "pre_norm": False, "fc_norm": None, "qk_norm": False, "init_values": None}


def config_from_timm(architecture: str, num_classes: int, model_args: dict[str, Any] | None = None) -> ViTConfig:
    """Config for a timm architecture name (e.g. `vit_base_patch16_224`), with `model_args` overrides applied."""
    base = architecture.split(".")[0]
    if not _ARCH_RE.match(base) or base not in PRESETS:
        raise UnsupportedModelError(
            f"timm architecture '{architecture}' is not supported; supported ViT/DeiT names look like "
            "vit_base_patch16_224, deit_small_patch16_224, deit_base_distilled_patch16_224")
    cfg = replace(PRESETS[base], num_classes=num_classes)
    extra = {}
    for key, value in (model_args or {}).items():
        if key in _TIMM_ARGS:
            first = key == "img_size" and isinstance(value, (list, tuple))
            extra[_TIMM_ARGS[key]] = tuple(value)[0] if first else value
        elif key != "num_classes" and _DEFAULT_ONLY.get(key, object()) != value:
            raise UnsupportedModelError(f"timm model argument '{key}={value}' is not supported by our ViT")
    if "distilled" in extra:
        extra["distill_head"] = extra["distilled"]
    return replace(cfg, **extra)


def config_from_hf(config: dict[str, Any]) -> ViTConfig:
    """Config from a transformers ViT / DeiT `config.json` dict."""
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
    )


class PatchEmbed(nn.Module):
    """Image -> patch tokens with one strided convolution (kernel = stride = patch size)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = (img_size, img_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] -> [B, H/p * W/p, C], patches in row-major order."""
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input is {tuple(x.shape[-2:])}, this ViT expects {self.img_size}")
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, C, gh, gw] -> [B, gh*gw, C]


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


class Block(nn.Module):
    """Pre-norm encoder block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attn)
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return x, attn


class VisionTransformer(nn.Module):
    """ViT / DeiT classifier: patch tokens + [CLS] (+ [DIST]) + learned positions -> blocks -> LN -> head(s)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, C)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, C)) if cfg.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + cfg.num_prefix_tokens, C))
        self.blocks = nn.ModuleList(
            Block(C, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.ln_eps) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(C, eps=cfg.ln_eps)
        self.head = nn.Linear(C, cfg.num_classes)
        self.head_dist = nn.Linear(C, cfg.num_classes) if cfg.distill_head else None
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> ClassifierOutput:
        """x: [B, 3, H, W] normalised image -> logits [B, num_classes] (+ per-block attention [B, nh, N, N])."""
        x = self.patch_embed(x)  # [B, P, C]
        tokens = [self.cls_token] if self.dist_token is None else [self.cls_token, self.dist_token]
        prefix = [t.expand(x.shape[0], -1, -1) for t in tokens]  # each [B, 1, C]
        x = torch.cat([*prefix, x], dim=1) + self.pos_embed  # [B, N, C], N = prefix + P
        attentions = []
        for block in self.blocks:
            x, attn = block(x, return_attn)
            attentions.append(attn)
        x = self.norm(x)
        logits = self.head(x[:, 0])  # [B, K]
        if self.head_dist is not None:  # DeiT distilled: inference averages the two heads (as timm does)
            logits = (logits + self.head_dist(x[:, 1])) / 2
        return ClassifierOutput(logits=logits, attentions=attentions if return_attn else None)
