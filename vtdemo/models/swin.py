"""Swin Transformer, in plain PyTorch.

Implements "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (Liu et al. 2021,
arXiv 2103.14030): a patch embedding, then four stages of blocks that attend only inside non-overlapping
windows of `ws x ws` tokens, every second block with the windows shifted by `ws // 2` (a cyclic roll plus a
mask, so that the shifted windows cost the same as the regular ones), a learned relative-position bias per head,
and a 2x2 patch merge (4C -> 2C) at the start of stages 1-3.

Reference implementations: microsoft/Swin-Transformer (`models/swin_transformer.py`), timm
(`timm/models/swin_transformer.py`, whose >= 0.9 parameter names we use, so a timm checkpoint loads almost as is)
and transformers (`models/swin/modeling_swin.py`; see `vtdemo.convert.swin` for its names).
Tokens are kept channels-last, [B, H, W, C], as in timm. Where we differ:
- inference only: no dropout, no drop-path, no gradient checkpointing, no feature-pyramid outputs;
- the input must have the configured size; `config_at_size` / `with_input_size` rebuild a model for another
  (square) size with the same weights, as timm's `create_model(..., img_size=S)` does: grids, windows, shifts and
  masks follow the new grid, the bias tables are kept, so each stage must end up with the window it was trained
  with (Swin-T: 224, 448, 672, ...; `allowed_sizes` lists them). timm and transformers would also run the sizes
  in between by zero-padding each stage to a multiple of its window, or resize the tables for another window
  (`resize_rel_pos_bias_table`): we refuse those sizes instead, naming the allowed ones, so that every window
  tiles the grid exactly and the explanations stay exact;
- the shifted-window mask uses -inf where the references use -100, so blocked pairs get exactly zero attention
  (the references give ~e^-100: the logits agree to float precision);
- attention probabilities are an explicit output (`return_attn=True`, plain softmax path, one `SwinAttention`
  record per block); otherwise `F.scaled_dot_product_attention` runs with bias + mask as its `attn_mask`;
- one LayerNorm eps for every norm (`ln_eps`); transformers uses its `layer_norm_eps` only in the blocks and the
  final norm and PyTorch's 1e-5 in the patch embedding and merges (all Hub configs say 1e-5, so they agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .outputs import ClassifierOutput
from .swin_config import (  # the config, its readers and the stage geometry: re-exported, callers import them from here
    PRESETS,
    TIMM_TRAINING_ARGS,
    StageLayout,
    SwinConfig,
    allowed_sizes,
    config_at_size,
    config_from_hf,
    config_from_timm,
    hf_fields,
    one_size,
    stage_window,
    stage_windows,
    timm_config,
)

__all__ = [
    "allowed_sizes",
    "ClassifierHead",
    "classify",
    "config_at_size",
    "config_from_hf",
    "config_from_timm",
    "hf_fields",
    "Mlp",
    "one_size",
    "PatchEmbed",
    "PatchMerging",
    "PRESETS",
    "relative_position_index",
    "shifted_window_mask",
    "Stage",
    "stage_window",
    "stage_windows",
    "StageLayout",
    "SwinAttention",
    "SwinBlock",
    "SwinConfig",
    "SwinStage",
    "SwinTransformer",
    "timm_config",
    "TIMM_TRAINING_ARGS",
    "window_partition",
    "window_reverse",
    "WindowAttention",
    "with_input_size",
    "with_weights_of",
]


def with_input_size(model: SwinTransformer, img_size: int) -> SwinTransformer:
    """A new model at input size `img_size` with `model`'s weights (the given model is not changed)."""
    if img_size == model.cfg.img_size:
        return model
    return with_weights_of(model, SwinTransformer(config_at_size(model.cfg, img_size)))


def with_weights_of(model: nn.Module, new: nn.Module) -> Any:
    """`new` (the same architecture at another size) with `model`'s weights, device, dtype, grad flag and mode."""
    param = next(model.parameters())
    new.load_state_dict(model.state_dict(), strict=True)
    new.requires_grad_(param.requires_grad)
    return new.to(device=param.device, dtype=param.dtype).train(model.training)


# ----------------------------------------------------------------------------------------------------------------
# Window geometry: pure tensor functions (the explanation code reuses them).


def window_partition(x: Tensor, window: int) -> Tensor:
    """Cut a token grid into non-overlapping windows, row-major over windows, then over tokens in a window.

    x: [B, H, W, C] with H and W multiples of `window` -> [B*nW, ws, ws, C], windows of image b first.
    """
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)  # [B, H/ws, ws, W/ws, ws, C]
    x = x.permute(0, 1, 3, 2, 4, 5)  # [B, H/ws, W/ws, ws, ws, C]
    return x.reshape(B * (H // window) * (W // window), window, window, C)  # [B*nW, ws, ws, C]


def window_reverse(windows: Tensor, window: int, H: int, W: int) -> Tensor:
    """Inverse of `window_partition`: [B*nW, ws, ws, C] -> [B, H, W, C]."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window, W // window, window, window, C)  # [B, H/ws, W/ws, ws, ws, C]
    x = x.permute(0, 1, 3, 2, 4, 5)  # [B, H/ws, ws, W/ws, ws, C]
    return x.reshape(-1, H, W, C)  # [B, H, W, C]


def relative_position_index(window: int) -> Tensor:
    """For every pair of tokens (i, j) of a ws x ws window, the row of the bias table for their offset.

    The offset (dy, dx) = pos_i - pos_j lies in [-(ws-1), ws-1]^2; it is shifted to be >= 0 and flattened
    row-major into (2*ws-1)^2 rows. Returns [N, N] long, N = ws*ws, tokens in row-major order.
    """
    coords = torch.arange(window)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")  # [ws, ws] each
    ys, xs = ys.flatten(), xs.flatten()  # [N]
    dy = ys[:, None] - ys[None, :] + window - 1  # [N, N], in [0, 2*ws-2]
    dx = xs[:, None] - xs[None, :] + window - 1  # [N, N]
    return dy * (2 * window - 1) + dx  # [N, N]


def shifted_window_mask(H: int, W: int, window: int, shift: int) -> Tensor:
    """Additive attention mask for windows cut from a grid rolled by (-shift, -shift).

    After the roll, the last row/column band of windows holds tokens that were far apart in the image (the rolled-in
    top rows next to the bottom rows). Every token gets a region label by where it sits in the rolled grid: along
    each axis band 0 = [0, H-ws), 1 = [H-ws, H-shift), 2 = [H-shift, H); two tokens of one window may attend to each
    other only with the same label. Returns [nW, N, N]: 0 where allowed, -inf where blocked.
    """
    rows, cols = torch.arange(H), torch.arange(W)
    row_band = (rows >= H - window).long() + (rows >= H - shift).long()  # [H] in {0, 1, 2}
    col_band = (cols >= W - window).long() + (cols >= W - shift).long()  # [W]
    label = (row_band[:, None] * 3 + col_band[None, :]).float()  # [H, W]
    label = window_partition(label[None, :, :, None], window).flatten(1)  # [nW, N]
    blocked = label[:, :, None] != label[:, None, :]  # [nW, N, N]
    return torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))


# ----------------------------------------------------------------------------------------------------------------
# Modules.


@dataclass
class SwinAttention:
    """Attention of one Swin block, with the geometry needed to place it on the image.

    attn: [B*nW, nh, N, N] softmax probabilities, N = window*window, windows as in `window_partition` of the grid
    rolled by (-shift, -shift) (undo with `window_reverse` and `torch.roll(+shift)`), rows sum to 1.
    """

    attn: Tensor  # [B*nW, nh, ws*ws, ws*ws]
    stage: int
    block: int
    grid: tuple[int, int]  # token grid (H, W) of this stage
    window: int
    shift: int


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned bias per head and relative offset."""

    relative_position_index: Tensor  # a buffer (derived, not saved)

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self) -> Tensor:
        """[nh, N, N]: the table looked up for every pair of tokens of a window."""
        N = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # [N*N, nh]
        return bias.view(N, N, -1).permute(2, 0, 1).contiguous()  # [nh, N, N] (contiguous, or SDPA falls back)

    def forward(self, x: Tensor, mask: Tensor | None = None, return_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """x: [B*nW, N, C], mask: [nW, N, N] additive (0 / -inf) or None.

        Returns the output [B*nW, N, C] and, with `return_attn`, the probabilities [B*nW, nh, N, N] (else None).
        """
        BnW, N, C = x.shape
        qkv = self.qkv(x).view(BnW, N, 3, self.num_heads, C // self.num_heads)  # [B*nW, N, 3, nh, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B*nW, nh, N, hd]
        bias = self.relative_position_bias()[None]  # [1, nh, N, N] (4-D: the fused kernel refuses a 3-D mask)
        if mask is not None:
            nW = mask.shape[0]
            bias = bias + mask[:, None]  # [nW, nh, N, N]
            bias = bias.expand(BnW // nW, -1, -1, -1, -1).reshape(BnW, -1, N, N)  # [B*nW, nh, N, N]
        attn = None
        if return_attn:
            scores = (q * self.scale) @ k.transpose(-2, -1) + bias  # [B*nW, nh, N, N]
            attn = scores.softmax(dim=-1)
            out = attn @ v  # [B*nW, nh, N, hd]
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # [B*nW, nh, N, hd]
        out = out.transpose(1, 2).reshape(BnW, N, C)  # [B*nW, N, C]
        return self.proj(out), attn


class Mlp(nn.Module):
    """Two Linear layers with exact GELU between them."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm block: (shifted) window attention, then MLP, each with a residual. Tokens [B, H, W, C]."""

    def __init__(self, cfg: SwinConfig, dim: int, num_heads: int, grid: int, shifted: bool) -> None:
        super().__init__()
        self.grid = (grid, grid)
        self.window, can_shift = stage_window(grid, cfg.window_size)
        self.shift = self.window // 2 if (shifted and can_shift) else 0
        if grid % self.window:
            raise ValueError(
                f"Swin: token grid {grid} is not a multiple of the window {self.window}; "
                "choose img_size / patch_size / window_size so that it is"
            )
        self.norm1 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.attn = WindowAttention(dim, num_heads, self.window, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        mask = shifted_window_mask(grid, grid, self.window, self.shift) if self.shift else None
        self.register_buffer("attn_mask", mask, persistent=False)  # [nW, N, N] or None

    def forward(self, x: Tensor, return_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """x: [B, H, W, C] -> ([B, H, W, C], attention [B*nW, nh, N, N] or None)."""
        B, H, W, C = x.shape
        ws, s = self.window, self.shift
        y = self.norm1(x)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))  # [B, H, W, C], row s is now row 0
        windows = window_partition(y, ws).view(-1, ws * ws, C)  # [B*nW, N, C]
        windows, attn = self.attn(windows, self.attn_mask, return_attn)  # [B*nW, N, C]
        y = window_reverse(windows.view(-1, ws, ws, C), ws, H, W)  # [B, H, W, C]
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))  # [B, H, W, C], back in place
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return x, attn


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens -> one token: concatenate (4C), LayerNorm, Linear to 2C without bias."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, H, W, C] -> [B, H/2, W/2, 2C]."""
        # The paper's order, also timm's and transformers': (row, col) offsets (0,0), (1,0), (0,1), (1,1).
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]  # 4 x [B, H/2, W/2, C]
        x = torch.cat(parts, dim=-1)  # [B, H/2, W/2, 4C]
        return self.reduction(self.norm(x))


class Stage(nn.Module):
    """A stage's forward, for Swin V1 and V2 alike: the patch merge (`downsample`, None in stage 0), then the blocks."""

    downsample: nn.Module | None
    blocks: nn.ModuleList

    def forward(self, x: Tensor, return_attn: bool = False) -> tuple[Tensor, list[Tensor]]:
        """x: [B, 2H, 2W, C/2] (or [B, H, W, C] in stage 0) -> [B, H, W, C], plus each block's attention if asked."""
        if self.downsample is not None:
            x = self.downsample(x)  # [B, H, W, C]
        attentions = []
        for block in self.blocks:
            x, attn = block(x, return_attn)
            if attn is not None:
                attentions.append(attn)
        return x, attentions


class SwinStage(Stage):
    """Optional patch merge (stages 1+), then `depth` blocks alternating regular and shifted windows."""

    downsample: PatchMerging | None

    def __init__(self, cfg: SwinConfig, index: int, grid: int) -> None:
        super().__init__()
        dim = cfg.embed_dim * 2**index
        self.downsample = PatchMerging(dim // 2, cfg.ln_eps) if index > 0 else None
        self.blocks = nn.ModuleList(
            SwinBlock(cfg, dim, cfg.num_heads[index], grid, shifted=b % 2 == 1) for b in range(cfg.depths[index])
        )


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> C channels (a strided conv), then LayerNorm."""

    def __init__(self, cfg: StageLayout) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.ln_eps)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, 3, H*p, W*p] -> [B, H, W, C]."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # [B, H, W, C]


class ClassifierHead(nn.Module):
    """Average over all tokens, then Linear."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, H, W, C] -> [B, num_classes]."""
        return self.fc(x.mean(dim=(1, 2)))


class SwinTransformer(nn.Module):
    """Swin image classifier. Input [B, 3, img_size, img_size], normalised as its checkpoint's config says."""

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        if len(cfg.depths) != len(cfg.num_heads):
            raise ValueError(f"Swin: depths {cfg.depths} and num_heads {cfg.num_heads} differ in length")
        if cfg.img_size % cfg.patch_size:
            raise ValueError(f"Swin: img_size {cfg.img_size} is not a multiple of patch_size {cfg.patch_size}")
        self.cfg = cfg
        grid = cfg.img_size // cfg.patch_size
        if grid % 2 ** (len(cfg.depths) - 1):
            raise ValueError(f"Swin: token grid {grid} cannot be halved {len(cfg.depths) - 1} times")
        self.patch_embed = PatchEmbed(cfg)
        self.layers = nn.ModuleList(SwinStage(cfg, i, grid // 2**i) for i in range(len(cfg.depths)))
        self.norm = nn.LayerNorm(cfg.num_features, eps=cfg.ln_eps)
        self.head = ClassifierHead(cfg.num_features, cfg.num_classes)

    def forward(self, x: Tensor, return_attn: bool = False) -> ClassifierOutput:
        """x: [B, 3, H, W] with H = W = img_size -> logits [B, num_classes] (+ one `SwinAttention` per block)."""
        return classify(self, x, return_attn, "Swin")


def classify(model: Any, x: Tensor, return_attn: bool, family: str) -> ClassifierOutput:
    """A Swin V1 / V2 classifier's forward: patch embedding, the stages, the final norm and the head.

    x: [B, 3, H, W] with H = W = img_size -> logits [B, num_classes] (+ one `SwinAttention` per block)."""
    size = model.cfg.img_size
    if x.ndim != 4 or x.shape[1] != model.cfg.in_chans or tuple(x.shape[-2:]) != (size, size):
        raise ValueError(f"{family} expects input [B, {model.cfg.in_chans}, {size}, {size}], got {list(x.shape)}")
    x = model.patch_embed(x)  # [B, H, W, C]
    attentions: list[SwinAttention] | None = [] if return_attn else None
    stage: Any  # a Stage (nn.ModuleList yields plain nn.Module)
    for s, stage in enumerate(model.layers):
        x, attns = stage(x, return_attn)  # [B, H, W, C] of this stage
        if attentions is not None:
            attentions += [
                SwinAttention(a, s, b, blk.grid, blk.window, blk.shift)
                for b, (a, blk) in enumerate(zip(attns, stage.blocks, strict=True))
            ]
    logits = model.head(model.norm(x))  # [B, num_classes]
    return ClassifierOutput(logits=logits, attentions=attentions)
