"""Swin Transformer V2, in plain PyTorch.

Implements "Swin Transformer V2: Scaling Up Capacity and Resolution" (Liu et al. 2022, arXiv 2111.09883): the
Swin V1 layout (patch embedding, four stages of (shifted) window attention, 2x2 patch merges; see
`vtdemo.models.swin`, whose window geometry this file reuses) with three changes to every block:
- scaled cosine attention: logits = cos(q_i, k_j) * exp(min(logit_scale, log 100)), one learnt scale per head;
- a log-spaced continuous relative position bias: a small MLP (`cpb_mlp`: 2 -> 512, ReLU, 512 -> heads) maps
  each offset (dy, dx), normalised by the (pretrained) window to [-8, 8] and log-spaced as
  sign(t) * log2(1 + |t|) / log2(8), to one bias per head, squashed as 16 * sigmoid(.);
- residual post-norm: x = x + LN(attn(x)), x = x + LN(mlp(x)) (V1 normalises before each branch);
and the V2 patch merge normalises after its 4C -> 2C reduction, not before. The query and value projections
have biases, the key projection none (timm: `q_bias`, `v_bias`; transformers: `key` without bias).

Reference implementations: microsoft/Swin-Transformer (`models/swin_transformer_v2.py`), timm
(`timm/models/swin_transformer_v2.py`, whose parameter names we use) and transformers
(`models/swinv2/modeling_swinv2.py`; `vtdemo.convert.swinv2` renames its files). Where we differ:
- inference only, square images and windows, one window size for all stages (as every Hub checkpoint has);
- no padding: every stage grid must be a multiple of its window (`stage_window`: a grid no larger than the window
  is one window, never shifted), else the size is refused with the sizes that work. Since the bias is computed from
  coordinates, any such size runs with the same weights (`with_input_size`), as timm's `create_model(...,
  img_size=S)` does; the window stays the configured one (timm's `set_input_size` would scale it with the grid);
- the shifted-window mask is the references' -100, not V1's -inf here: cosine logits reach +-100 + 16, so -100 is
  part of what the checkpoints were trained with, and blocked pairs get a very small, not exactly zero, weight.
  transformers adds its -100 mask twice (`Swinv2SelfAttention.forward`), so its outputs are those of -200:
  `config_from_hf` sets `mask_value=-200` so that a transformers checkpoint gives transformers' outputs;
- attention probabilities are an explicit output (`return_attn=True`, one `vtdemo.models.swin.SwinAttention`
  record per block, so the Swin explanations apply unchanged); otherwise `F.scaled_dot_product_attention` runs on
  the normalised, scaled queries with bias + mask as its `attn_mask` and `scale=1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from .outputs import ClassifierOutput
from .swin import (
    ClassifierHead,
    Mlp,
    PatchEmbed,  # the same conv + LayerNorm as V1
    Stage,
    classify,
    hf_fields,
    relative_position_index,
    shifted_window_mask,
    stage_window,
    timm_config,
    window_partition,
    window_reverse,
    with_weights_of,
)
from .swin import stage_windows as swin_stage_windows

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # the references' clamp: the scale is at most 100
MASK_VALUE = -100.0  # the references' shifted-window mask value


@dataclass(frozen=True)
class SwinV2Config:
    """Architecture hyper-parameters (square images and windows). Stage i has width `embed_dim * 2**i`.

    pretrained_window_sizes: per stage, the window the bias MLP was trained with when the checkpoint was fine-tuned
    at a larger window (its coordinates are normalised by that window), 0 = the stage's own window.
    mask_value: the additive shifted-window mask for blocked pairs (-100 as in the paper's code and timm; -200 for
    transformers files, whose implementation adds the mask twice).
    """

    img_size: int = 256
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 8
    pretrained_window_sizes: tuple[int, ...] = (0, 0, 0, 0)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_classes: int = 1000
    ln_eps: float = 1e-5
    mask_value: float = MASK_VALUE

    @property
    def num_features(self) -> int:
        """Width of the last stage (what the head sees)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


_T, _S, _B, _L = (
    (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    (192, (2, 2, 18, 2), (6, 12, 24, 48)),
)


def _preset(
    img: int,
    window: int,
    size: tuple[int, tuple[int, ...], tuple[int, ...]],
    pretrained: tuple[int, ...] = (0, 0, 0, 0),
) -> SwinV2Config:
    dim, depths, heads = size
    return SwinV2Config(
        img_size=img,
        window_size=window,
        embed_dim=dim,
        depths=depths,
        num_heads=heads,
        pretrained_window_sizes=pretrained,
    )


# Keyed by timm architecture name (timm's `model_args`, plus the input size from its pretrained_cfg).
PRESETS: dict[str, SwinV2Config] = {
    "swinv2_tiny_window8_256": _preset(256, 8, _T),
    "swinv2_tiny_window16_256": _preset(256, 16, _T),
    "swinv2_small_window8_256": _preset(256, 8, _S),
    "swinv2_small_window16_256": _preset(256, 16, _S),
    "swinv2_base_window8_256": _preset(256, 8, _B),
    "swinv2_base_window16_256": _preset(256, 16, _B),
    "swinv2_base_window12_192": _preset(192, 12, _B),
    "swinv2_base_window12to16_192to256": _preset(256, 16, _B, (12, 12, 12, 6)),
    "swinv2_base_window12to24_192to384": _preset(384, 24, _B, (12, 12, 12, 6)),
    "swinv2_large_window12_192": _preset(192, 12, _L),
    "swinv2_large_window12to16_192to256": _preset(256, 16, _L, (12, 12, 12, 6)),
    "swinv2_large_window12to24_192to384": _preset(384, 24, _L, (12, 12, 12, 6)),
}

_TIMM_ARGS = {
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "pretrained_window_sizes",
    "mlp_ratio",
    "qkv_bias",
    "num_classes",
}
_TIMM_DEFAULT_ONLY = {
    "global_pool": "avg",
    "always_partition": False,
    "strict_img_size": True,
    "dynamic_img_size": False,
    "act_layer": "gelu",
}


def config_from_timm(architecture: str, num_classes: int, model_args: dict[str, Any] | None = None) -> SwinV2Config:
    """Config for a timm `swinv2_*` architecture name (a `.tag` suffix is ignored), with `model_args` applied."""
    return timm_config(
        PRESETS,
        architecture,
        num_classes,
        model_args,
        family="Swin V2",
        args=_TIMM_ARGS,
        default_only=_TIMM_DEFAULT_ONLY,
        tuples=("depths", "num_heads", "pretrained_window_sizes"),
    )


def config_from_hf(config: dict[str, Any]) -> SwinV2Config:
    """Config from a transformers Swin V2 `config.json` dict (model_type "swinv2")."""
    fields = hf_fields(config, SwinV2Config(), "Swin V2")
    pretrained = config.get("pretrained_window_sizes") or (0,) * len(fields["depths"])
    return SwinV2Config(
        **fields,
        pretrained_window_sizes=tuple(int(v) for v in pretrained),
        mask_value=2 * MASK_VALUE,  # transformers adds the mask twice
    )


def stage_windows(cfg: SwinV2Config, img_size: int) -> list[tuple[int, int]]:
    """(grid, window) of every stage at input size `img_size` (`vtdemo.models.swin.stage_windows`, the same geometry);
    a refusal also lists the sizes this model runs at."""
    try:
        return swin_stage_windows(cfg, img_size)
    except UnsupportedModelError as exc:
        sizes = ", ".join(str(s) for s in allowed_sizes(cfg))
        raise UnsupportedModelError(f"Swin V2, without padding: {exc}; sizes it runs at: {sizes}") from None


def allowed_sizes(cfg: SwinV2Config, largest: int = 1536) -> list[int]:
    """Square input sizes up to `largest` at which every stage grid is a whole number of windows."""
    return [size for size in range(cfg.patch_size, largest + 1, cfg.patch_size) if _fits(cfg, size)]


def _fits(cfg: SwinV2Config, img_size: int) -> bool:
    try:
        swin_stage_windows(cfg, img_size)
    except UnsupportedModelError:
        return False
    return True


def config_at_size(cfg: SwinV2Config, img_size: int) -> SwinV2Config:
    """The same architecture at input size `img_size` (the bias MLP works for any window, so only the grid matters)."""
    stage_windows(cfg, img_size)
    return replace(cfg, img_size=int(img_size))


# ----------------------------------------------------------------------------------------------------------------
# Continuous position bias: a pure function of the window geometry.


def log_relative_coords(window: int, pretrained_window: int = 0) -> Tensor:
    """The MLP's inputs: every offset (dy, dx) of a ws x ws window, normalised and log-spaced.

    Offsets in [-(ws-1), ws-1] are divided by (pretrained_window - 1), or (ws - 1) when pretrained_window is 0
    (at least 1, as in timm), scaled to [-8, 8] and mapped to sign(t) * log2(1 + |t|) / log2(8).
    Returns [(2ws-1)^2, 2], rows in the order `relative_position_index` uses (dy major, dx minor).
    """
    span = torch.arange(-(window - 1), window, dtype=torch.float32)  # [2ws-1]
    dy, dx = torch.meshgrid(span, span, indexing="ij")  # [2ws-1, 2ws-1] each
    coords = torch.stack([dy, dx], dim=-1).reshape(-1, 2)  # [(2ws-1)^2, 2]
    coords = coords / max((pretrained_window or window) - 1, 1) * 8
    return torch.sign(coords) * torch.log2(coords.abs() + 1.0) / math.log2(8)


# ----------------------------------------------------------------------------------------------------------------
# Modules.


class WindowAttentionV2(nn.Module):
    """Scaled cosine attention inside each window, with the continuous (MLP) relative position bias."""

    def __init__(
        self, dim: int, num_heads: int, window: int, pretrained_window: int = 0, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, num_heads, bias=False))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)
        self.register_buffer(
            "relative_coords_table", log_relative_coords(window, pretrained_window), persistent=False
        )  # [(2ws-1)^2, 2]
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def relative_position_bias(self) -> Tensor:
        """[nh, N, N] in (0, 16): the MLP's output for every pair of tokens of a window, 16 * sigmoid."""
        N = self.window * self.window
        table = self.cpb_mlp(self.relative_coords_table)  # [(2ws-1)^2, nh]
        index: Tensor = self.relative_position_index  # type: ignore[assignment]
        bias = table[index.view(-1)].view(N, N, -1)  # [N, N, nh]
        return 16 * torch.sigmoid(bias.permute(2, 0, 1).contiguous())  # [nh, N, N]

    def forward(self, x: Tensor, mask: Tensor | None = None, return_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """x: [B*nW, N, C], mask: [nW, N, N] additive (0 / `mask_value`) or None.

        Returns the output [B*nW, N, C] and, with `return_attn`, the probabilities [B*nW, nh, N, N] (else None).
        """
        BnW, N, C = x.shape
        bias = None
        if self.q_bias is not None and self.v_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])  # [3C]: no key bias
        qkv = F.linear(x, self.qkv.weight, bias).view(BnW, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B*nW, nh, N, hd]
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()  # [nh, 1, 1]
        q = F.normalize(q, dim=-1) * scale  # [B*nW, nh, N, hd]: cosine logits times the head's scale
        k = F.normalize(k, dim=-1)
        pos = self.relative_position_bias()[None]  # [1, nh, N, N]
        if mask is not None:
            nW = mask.shape[0]
            pos = pos + mask[:, None]  # [nW, nh, N, N]
            pos = pos.expand(BnW // nW, -1, -1, -1, -1).reshape(BnW, -1, N, N)  # [B*nW, nh, N, N]
        attn = None
        if return_attn:
            attn = (q @ k.transpose(-2, -1) + pos).softmax(dim=-1)  # [B*nW, nh, N, N]
            out = attn @ v  # [B*nW, nh, N, hd]
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=pos.to(q.dtype), scale=1.0)  # [B*nW, nh, N, hd]
        out = out.transpose(1, 2).reshape(BnW, N, C)  # [B*nW, N, C]
        return self.proj(out), attn


class SwinV2Block(nn.Module):
    """Residual post-norm block: x + LN((shifted) window attention(x)), then x + LN(MLP(x)). Tokens [B, H, W, C]."""

    def __init__(
        self, cfg: SwinV2Config, dim: int, num_heads: int, grid: int, window: int, shifted: bool, pretrained_window: int
    ) -> None:
        super().__init__()
        self.grid = (grid, grid)
        self.window, can_shift = stage_window(grid, window)
        self.shift = self.window // 2 if (shifted and can_shift) else 0
        self.attn = WindowAttentionV2(dim, num_heads, self.window, pretrained_window, cfg.qkv_bias)
        self.norm1 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.norm2 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        mask = None
        if self.shift:
            mask = shifted_window_mask(grid, grid, self.window, self.shift).clamp(min=cfg.mask_value)  # [nW, N, N]
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor, return_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """x: [B, H, W, C] -> ([B, H, W, C], attention [B*nW, nh, N, N] or None)."""
        _, H, W, C = x.shape
        ws, s = self.window, self.shift
        y = torch.roll(x, shifts=(-s, -s), dims=(1, 2)) if s else x  # [B, H, W, C], row s is now row 0
        windows = window_partition(y, ws).view(-1, ws * ws, C)  # [B*nW, N, C]
        windows, attn = self.attn(windows, self.attn_mask, return_attn)  # [B*nW, N, C]
        y = window_reverse(windows.view(-1, ws, ws, C), ws, H, W)  # [B, H, W, C]
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))  # [B, H, W, C], back in place
        x = x + self.norm1(y)
        return x + self.norm2(self.mlp(x)), attn


class PatchMergingV2(nn.Module):
    """2x2 neighbouring tokens -> one token: concatenate (4C), Linear to 2C without bias, then LayerNorm."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, H, W, C] -> [B, H/2, W/2, 2C]."""
        B, H, W, C = x.shape
        # timm's order, which equals transformers' (0,0), (1,0), (0,1), (1,1) concatenation:
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5)  # [B, H/2, W/2, dx, dy, C]
        return self.norm(self.reduction(x.flatten(3)))  # [B, H/2, W/2, 2C]


class SwinV2Stage(Stage):
    """Optional V2 patch merge (stages 1+), then `depth` post-norm blocks alternating regular and shifted windows."""

    def __init__(self, cfg: SwinV2Config, index: int, grid: int) -> None:
        super().__init__()
        dim = cfg.embed_dim * 2**index
        pretrained = cfg.pretrained_window_sizes[index] if index < len(cfg.pretrained_window_sizes) else 0
        self.downsample = PatchMergingV2(dim // 2, cfg.ln_eps) if index > 0 else None
        self.blocks = nn.ModuleList(
            SwinV2Block(cfg, dim, cfg.num_heads[index], grid, cfg.window_size, b % 2 == 1, pretrained)
            for b in range(cfg.depths[index])
        )


class SwinTransformerV2(nn.Module):
    """Swin V2 image classifier. Input [B, 3, img_size, img_size], normalised as its checkpoint's config says."""

    def __init__(self, cfg: SwinV2Config) -> None:
        super().__init__()
        if len(cfg.depths) != len(cfg.num_heads):
            raise ValueError(f"Swin V2: depths {cfg.depths} and num_heads {cfg.num_heads} differ in length")
        try:
            stage_windows(cfg, cfg.img_size)
        except UnsupportedModelError as exc:
            raise ValueError(str(exc)) from None
        self.cfg = cfg
        grid = cfg.img_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg)
        self.layers = nn.ModuleList(SwinV2Stage(cfg, i, grid // 2**i) for i in range(len(cfg.depths)))
        self.norm = nn.LayerNorm(cfg.num_features, eps=cfg.ln_eps)
        self.head = ClassifierHead(cfg.num_features, cfg.num_classes)

    def forward(self, x: Tensor, return_attn: bool = False) -> ClassifierOutput:
        """x: [B, 3, H, W] with H = W = img_size -> logits [B, num_classes] (+ one `SwinAttention` per block)."""
        return classify(self, x, return_attn, "Swin V2")


def with_input_size(model: SwinTransformerV2, img_size: int) -> SwinTransformerV2:
    """A new model at input size `img_size` with `model`'s weights (the given model is not changed)."""
    if img_size == model.cfg.img_size:
        return model
    return with_weights_of(model, SwinTransformerV2(config_at_size(model.cfg, img_size)))
