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
- readouts "token" (CLS), "avg" (mean of the patch tokens, prefix excluded) and "token_avg" (both concatenated:
  the linear heads of DINOv2, `vtdemo.models.dinov2`); `num_classes=0` keeps no head (features out, as timm);
- other input sizes (`dynamic_img_size`, timm's `dynamic_img_size=True` semantics): any height and width that are
  multiples of the patch size; the position embeddings of the patch grid are resampled bicubically as timm's
  `resample_abs_pos_embed` does (prefix positions kept; antialias on) or, for transformers checkpoints, as
  transformers' `interpolate_pos_encoding` does (antialias off). At the trained grid the stored embeddings are used
  unchanged. The run-time grid is returned on the output (`ClassifierOutput.grid`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .outputs import ClassifierOutput
from .vit_config import (  # the config and its readers: re-exported, callers import them from here
    PRESETS,
    READOUTS,
    ViTConfig,
    config_from_hf,
    config_from_timm,
    supported_timm_architectures,
)

__all__ = [
    "Attention",
    "Block",
    "config_from_hf",
    "config_from_timm",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "PRESETS",
    "READOUTS",
    "resample_pos_embed",
    "supported_timm_architectures",
    "VisionTransformer",
    "ViTConfig",
]


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
        head_in = 2 * C if cfg.readout == "token_avg" else C  # [CLS, mean of patches] for "token_avg"
        self.head: nn.Module = nn.Linear(head_in, cfg.num_classes) if cfg.has_head else nn.Identity()
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
        """x: [B, 3, H, W] normalised image -> logits [B, num_classes] (a model without a head: the pooled features
        [B, C]), the patch grid, and on request the per-block
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
        elif self.cfg.readout == "token_avg":  # DINOv2's linear classifiers: [CLS, mean of the patch tokens]
            pooled = torch.cat([x[:, 0], x[:, self.cfg.num_prefix_tokens :].mean(dim=1)], dim=-1)  # [B, 2C]
            logits = self.head(self.fc_norm(pooled))  # [B, K]
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
