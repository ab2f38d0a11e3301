"""Layer-wise relevance propagation for Swin: AttnLRP and CP-LRP through (shifted) windows and patch merges.

The rules are those of `vtdemo.explain.lrp` (AttnLRP, Achtibat et al., ICML 2024, arXiv 2402.05602; CP-LRP, Ali et
al., ICML 2022, arXiv 2202.07304; public reference implementation rachtibat/LRP-eXplains-Transformers, PyPI `lxt`,
which has no Swin model), applied in a relevance-aware forward pass over our `SwinTransformer`'s modules (the model
file is untouched and its `forward` is not called), then one backward pass of the chosen logit. What is particular
to Swin (Liu et al. 2021, arXiv 2103.14030):

- patch embedding: a strided convolution (epsilon rule, epsilon -> 0: the plain gradient) then a LayerNorm (std
  constant); the input relevance is gradient x input at the pixels, summed over channels and over each p x p patch,
  so the map lies on the patch-embedding grid, which *is* the stage-1 token grid (56 x 56 for Swin-T at 224: stage 1
  has no merge), the finest grid the model has tokens on;
- cyclic shift (`torch.roll`), window partition and its reverse: permutations of tokens; relevance moves with its
  token (their gradients are the inverse permutations), nothing is created or lost;
- window attention: the rule of `lrp.attention` per window, with scores q k^T * scale + B + M. B, the learned
  relative-position bias, is a constant addend of the scores: under AttnLRP its epsilon-rule share of the
  softmax-input relevance (half of it, after the uniform rule of A @ V) stays there, like a bias's (it is computed
  without gradient, as that share never reaches the pixels); under CP-LRP the probabilities are constants and B
  receives nothing. M, the shift mask, is -inf across regions: those pairs
  get probability exactly 0 and exchange no relevance (nor gradient: softmax's gradient vanishes there);
- MLP: Linear, GELU (identity rule), Linear; residual adds by the epsilon rule (the plain gradient);
- patch merging: the 2x2 children are concatenated (routing: each child's channels keep their relevance), then the
  LayerNorm rule over the 4C channels, then the Linear 4C -> 2C (no bias) by the epsilon rule, which sends each
  coarse token's relevance back to its four children in proportion to their contributions;
- head: final LayerNorm (std constant), the average pool over all final tokens (linear: each token gets relevance in
  proportion to its share of the mean) and the classifier Linear.

Conservation, as for ViT: with CP-LRP, logit_c = sum(map) + the relevance kept by all biases (patch conv, q/k/v,
out-proj, MLP, head) and LayerNorm betas, exactly (checked to float64 precision in tests/parity/test_explain_lrp.py);
with AttnLRP the relative-position bias and the softmax steps keep relevance too. tests/parity/test_explain_lrp.py also
checks the windowed propagation against a dense construction (global attention over the whole stage grid with the window
and shift structure as an explicit [HW, HW] mask and bias, built from coordinates) using lxt's own rule functions.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.swin import PatchMerging, SwinBlock, SwinStage, SwinTransformer, window_partition, window_reverse
from .lrp import RESOLUTIONS, RULES, attention, check_request, explain, gelu, layer_norm

__all__ = ["RESOLUTIONS", "RULES", "swin_forward", "swin_lrp"]


def _merge(merge: PatchMerging, x: Tensor) -> Tensor:
    """A 2x2 patch merge under the rules: [B, H, W, C] -> [B, H/2, W/2, 2C] (same values as `merge(x)`)."""
    parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]  # 4 x [B, H/2, W/2, C]
    return merge.reduction(layer_norm(torch.cat(parts, dim=-1), merge.norm))  # [B, H/2, W/2, 4C] -> 2C


def _block(block: SwinBlock, x: Tensor, rule: str) -> Tensor:
    """One (shifted) window-attention block under the rules: [B, H, W, C] -> [B, H, W, C]."""
    _, H, W, C = x.shape
    ws, s = block.window, block.shift
    att = block.attn
    y = layer_norm(x, block.norm1)
    if s:
        y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))  # [B, H, W, C], row s is now row 0
    windows = window_partition(y, ws).view(-1, ws * ws, C)  # [B*nW, N, C]
    BnW, N, _ = windows.shape
    qkv = att.qkv(windows).view(BnW, N, 3, att.num_heads, C // att.num_heads)  # [B*nW, N, 3, nh, hd]
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B*nW, nh, N, hd]
    with torch.no_grad():  # a constant addend of the scores: its share of relevance is absorbed, never needed
        bias = att.relative_position_bias()[None]  # [1, nh, N, N]
    mask = cast(Tensor | None, block.attn_mask)
    if mask is not None:
        nW = mask.shape[0]
        bias = bias + mask[:, None]  # [nW, nh, N, N]
        bias = bias.expand(BnW // nW, -1, -1, -1, -1).reshape(BnW, -1, N, N)  # [B*nW, nh, N, N]
    out = attention(q, k, v, att.scale, bias, rule).transpose(1, 2).reshape(BnW, N, C)  # [B*nW, N, C]
    y = window_reverse(att.proj(out).view(-1, ws, ws, C), ws, H, W)  # [B, H, W, C]
    if s:
        y = torch.roll(y, shifts=(s, s), dims=(1, 2))  # [B, H, W, C], back in place
    x = x + y
    return x + block.mlp.fc2(gelu(block.mlp.fc1(layer_norm(x, block.norm2))))


def swin_forward(model: SwinTransformer, x: Tensor, rule: str) -> Tensor:
    """The model's logits [B, K] for x [B, 3, H, W], computed with the rules of `rule` (same values as `model(x)`)."""
    size = model.cfg.img_size
    if x.ndim != 4 or x.shape[1] != model.cfg.in_chans or tuple(x.shape[-2:]) != (size, size):
        raise ValueError(f"Swin expects input [B, {model.cfg.in_chans}, {size}, {size}], got {list(x.shape)}")
    h = layer_norm(model.patch_embed.proj(x).permute(0, 2, 3, 1), model.patch_embed.norm)  # [B, H1, W1, C]
    for stage in cast(list[SwinStage], model.layers):
        if stage.downsample is not None:
            h = _merge(stage.downsample, h)  # [B, H, W, C] of this stage
        for block in cast(list[SwinBlock], stage.blocks):
            h = _block(block, h, rule)
    h = layer_norm(h, model.norm)  # [B, H, W, C]
    return F.linear(h.mean(dim=(1, 2)), model.head.fc.weight, model.head.fc.bias)  # [B, K]


def swin_lrp(
    model: SwinTransformer, x: Tensor, class_index: int, rule: str = "attnlrp", resolution: str = "patch"
) -> Tensor:
    """LRP relevance of each stage-1 token (or pixel) of one image for logit `class_index` of a Swin classifier.

    x: [1, 3, H, W], preprocessed as the model expects. rule: "attnlrp" (Achtibat et al. 2024) or "cplrp" (Ali et
    al. 2022); see the module docstrings here and in `vtdemo.explain.lrp` for the rule applied to each operation.
    resolution: "patch" -> [H1, W1], the patch-embedding grid = the stage-1 token grid (56 x 56 for Swin-T at 224),
    row-major; "pixel" -> [H, W]. Returns a signed float32 map (positive: evidence for the class), not normalised;
    its sum is the part of the logit that reaches the pixels (the rest sits in biases and LayerNorm betas, and for
    AttnLRP in the relative-position bias and the softmax). One relevance-aware forward and one backward pass.
    """
    check_request(x, model.cfg.num_classes, class_index, rule, resolution)
    return explain(lambda inp: swin_forward(model, inp, rule), x, class_index, model.cfg.patch_size, resolution)
