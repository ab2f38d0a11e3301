"""Swin explanations from the attention our model returns (`return_attn=True`, one `SwinAttention` per block).

Swin (Liu et al. 2021, arXiv 2103.14030) has no CLS token and attends only inside (shifted) windows, so the ViT
rollout of Abnar & Zuidema 2020 (arXiv 2005.00928) does not apply as is. No reference implementation publishes a
working one; the Swin authors suggest looking at the attention inside the window around a point
(microsoft/Swin-Transformer #130). This module offers both.

- `rollout`: a window-aware attention rollout onto the stage-1 token grid (56 x 56 for Swin-T at 224).
  Per block: fuse heads inside each window ([nW, N, N], N = ws*ws), optionally zero the lowest `discard_ratio` of
  each window's fused attention, add the identity (the residual path) and renormalise rows, which gives A'_w. Put
  back on the block's token grid (undoing the cyclic shift: the block rolls its tokens by (-shift, -shift) before
  cutting windows, so the token at rolled position (r, c) is the image token ((r + shift) mod H, (c + shift) mod W)),
  the windows form one row-stochastic [HW, HW] matrix A' that is block-diagonal up to a permutation of tokens.
  A 2x2 patch merge is the [HW/4, HW] matrix M that averages a coarse token's four children. The rollout is
  R = A'_L ... M ... A'_1, [N_final, N_1], mapping final tokens to stage-1 tokens, and the map is the mean of its
  rows, as the classifier head averages the final tokens: map = (1/N_final) 1^T R, reshaped to [H1, W1].
- `grad_rollout`: class-specific relevance, Chefer, Gur & Wolf 2021 (arXiv 2103.15679) carried through the same
  windows and merges: per block the operator is I + Abar, Abar = mean over heads of (d logit_c / d A * A).clamp(min=0)
  per window, not renormalised (Chefer's rule), so (1/N_final) 1^T (I + Abar_L) ... M ... (I + Abar_1), less
  the 1/N1 that the path crossing no attention adds everywhere (Chefer's CLS readout leaves that path out too).
  `class_gradients` (from `vtdemo.explain.vit`, shared by both families) gives the attentions and gradients.
- `window_attention_at`: "where does this patch look": the attention row of the token under a point in one block,
  placed on that block's grid in image coordinates (zero outside its window). `window_box` gives that window's
  outline, as one or several rectangles (a shifted window wraps around the image borders).

What the rollout approximates: the flow of information along attention and residual paths through the windowed
blocks, with every path weighted by the product of the (fused, renormalised) attention it crosses, as in the ViT
rollout. It ignores the MLPs (taken as identity, like the residual), the values and output projections, the
non-linear mixing of patch merging (LayerNorm + Linear over the 4 concatenated children: taken as an equal
average), and the final LayerNorm; the global average pool of the head is the mean over final tokens.

Cost. We never form the [HW, HW] product. The map is a row vector times the product, so it is computed right to
left as vector-matrix products, v^T <- v^T A'_l per block (gather v into windows [nW, N], one batched [1, N] x
[N, N] product per window, scatter back) and v^T <- v^T M per merge (each child gets a quarter of its parent):
O(HW * N) per block, a few milliseconds for all of Swin-T, and exactly equal to the row mean of the dense product
(tests/unit/test_explain_swin.py checks it against an explicit dense construction). `grad_rollout` shares that
propagation (`_mean_readout`) with its own per-window operators.

Where we differ from the ViT rollout in `vtdemo.explain.vit`: no CLS row (the readout is the mean of the final
tokens), and discard works per window (there is no CLS column to protect).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..models.swin import SwinAttention, shifted_window_mask, window_partition
from .vit import FUSIONS, class_gradients, fuse_heads

__all__ = [
    "FUSIONS",
    "rollout",
    "grad_rollout",
    "class_gradients",
    "window_attention_at",
    "window_box",
    "default_block",
    "window_index",
    "window_rollout_factors",
    "window_grad_factors",
]

Box = tuple[float, float, float, float]


# ----------------------------------------------------------------------------------------------------------------
# Geometry.


def window_index(grid: tuple[int, int], window: int, shift: int, device: torch.device | None = None) -> Tensor:
    """For each window and each token in it, the flat image position (row-major on `grid`) of that token.

    Windows are ordered as the block cuts them: `window_partition` of the grid rolled by (-shift, -shift), so the
    token at rolled position (r, c) is the image token ((r + shift) mod H, (c + shift) mod W).
    Returns [nW, N] long, N = window*window; every position in [0, H*W) occurs exactly once.
    """
    H, W = grid
    positions = torch.arange(H * W, device=device).view(H, W)  # [H, W]
    if shift:
        positions = torch.roll(positions, shifts=(-shift, -shift), dims=(0, 1))  # [H, W]: [r, c] = image (r+s, c+s)
    return window_partition(positions[None, :, :, None], window).reshape(-1, window * window)  # [nW, N]


def _token_at(record: SwinAttention, point: tuple[float, float]) -> tuple[int, int, int, Tensor]:
    """The image token under `point` (fractions (x, y) of the input) on the block's grid: its flat position, its
    window and its index inside that window, and the block's window index [nW, N]."""
    H, W = record.grid
    fx, fy = point
    col = min(max(int(fx * W), 0), W - 1)
    row = min(max(int(fy * H), 0), H - 1)
    index = window_index(record.grid, record.window, record.shift, record.attn.device)  # [nW, N]
    pos = row * W + col
    w, t = (index == pos).nonzero()[0].tolist()
    return pos, int(w), int(t), index


def _check_batch_of_one(record: SwinAttention) -> int:
    """Number of windows of a record; refuses a batch larger than one."""
    H, W = record.grid
    nW = (H // record.window) * (W // record.window)
    if record.attn.ndim != 4 or record.attn.shape[0] != nW:
        raise ValueError(
            f"expected one image's attention [nW={nW}, nh, N, N] for block {record.stage}.{record.block}, "
            f"got {list(record.attn.shape)} (pass a batch of one)"
        )
    return nW


# ----------------------------------------------------------------------------------------------------------------
# Rollout.


def discard_lowest_per_window(attn: Tensor, ratio: float) -> Tensor:
    """Zero the lowest `ratio` of the N*N entries of each window's fused attention [nW, N, N] (a new tensor).

    Entries a shifted-window mask blocked are exact zeros and count among the lowest. There is no CLS column to keep.
    """
    if ratio <= 0:
        return attn
    if not 0 <= ratio < 1:
        raise ValueError(f"discard ratio must be in [0, 1), not {ratio}")
    nW, N, _ = attn.shape
    flat = attn.reshape(nW, N * N).clone()  # [nW, N*N]
    k = int(N * N * ratio)
    if k > 0:
        lowest = flat.topk(k, dim=-1, largest=False).indices  # [nW, k]
        flat.scatter_(-1, lowest, 0.0)
    return flat.view(nW, N, N)  # [nW, N, N]


def window_rollout_factors(record: SwinAttention, head_fusion: str = "mean", discard_ratio: float = 0.0) -> Tensor:
    """One block's rollout factor per window, A'_w = (fuse(A_w) + I) / rowsum: [nW, N, N], rows sum to 1.

    Rows and columns are tokens in window order; `window_index` places them on the image grid.
    """
    _check_batch_of_one(record)
    A = fuse_heads(record.attn.float().transpose(0, 1), head_fusion)  # [nh, nW, N, N] -> [nW, N, N]
    A = discard_lowest_per_window(A, discard_ratio)  # [nW, N, N]
    A = A + torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)  # the residual path
    return A / A.sum(dim=-1, keepdim=True)  # [nW, N, N], rows stochastic again


def rollout(attentions: Sequence[SwinAttention], head_fusion: str = "mean", discard_ratio: float = 0.0) -> Tensor:
    """Window-aware attention rollout of one image: [H1, W1] relevance on the stage-1 token grid.

    attentions: every block's `SwinAttention` in forward order (batch of one), as `SwinTransformer.forward(x,
    return_attn=True)` returns them. head_fusion: mean (as in the paper) / max / min over heads, per window.
    discard_ratio in [0, 1): zero the lowest fraction of each window's fused attention before adding the identity.

    Returns map = (1/N_final) 1^T A'_L ... M ... A'_1 (see the module docstring): non-negative, sums to 1, row-major
    on the stage-1 grid. It approximates the attention flow through the windowed blocks along attention and
    residual paths: MLPs, values and projections are ignored, each 2x2 patch merge is taken as an equal average of
    its children (the real merge mixes them through LayerNorm + Linear), and the head's average pool is the mean
    over final tokens. Computed right to left as vector-matrix products, never as dense [HW, HW] products.
    """
    return _mean_readout(
        attentions, lambda i: window_rollout_factors(attentions[i], head_fusion, discard_ratio), "rollout"
    )


def _mean_readout(attentions: Sequence[SwinAttention], factor: Callable[[int], Tensor], what: str) -> Tensor:
    """The mean-pool readout pulled back to stage 1: (1/N_final) 1^T F_L ... M ... F_1, as [H1, W1].

    F_l = factor(l) is block l's operator per window, [nW, N, N] (rows = output tokens, columns = input tokens, both
    in window order; `window_index` places them on the image grid, shift undone); M is a 2x2 merge whose transpose
    gives each child a quarter of its parent's weight. Computed right to left as vector-matrix products, one block
    at a time (factor(l) is called once per block, last block first): O(HW * N) per block, never [HW, HW].
    """
    if not attentions:
        raise ValueError(f"{what} needs at least one block of attention")
    for earlier, later in zip(attentions, attentions[1:], strict=False):
        if later.grid[0] > earlier.grid[0] or later.grid[1] > earlier.grid[1]:
            raise ValueError("attentions must be in forward order (token grids never grow)")
    H, W = attentions[-1].grid
    device = attentions[-1].attn.device
    v = torch.full((H * W,), 1.0 / (H * W), dtype=torch.float32, device=device)  # [HW]: mean over final tokens
    for i in range(len(attentions) - 1, -1, -1):
        record = attentions[i]
        while (H, W) != tuple(record.grid):  # a 2x2 merge between this block and the next: v^T M
            if 2 * H > record.grid[0] or 2 * W > record.grid[1]:
                raise ValueError(f"cannot go from grid {record.grid} to {(H, W)} by 2x2 merges")
            v = v.view(H, W).repeat_interleave(2, dim=0).repeat_interleave(2, dim=1) / 4  # [2H, 2W]: child = 1/4
            H, W = 2 * H, 2 * W
            v = v.reshape(H * W)  # [HW]
        Fw = factor(i)  # [nW, N, N]
        index = window_index(record.grid, record.window, record.shift, device)  # [nW, N]
        vw = v[index]  # [nW, N]: weights of the output tokens (rows of F_w), window by window
        out = torch.bmm(vw.unsqueeze(1), Fw).squeeze(1)  # [nW, 1, N] @ [nW, N, N] -> [nW, N]: v^T F_w
        v = torch.empty_like(v)
        v[index.reshape(-1)] = out.reshape(-1)  # [HW]: the windows tile the grid, every position written once
    return v.view(H, W)  # [H1, W1]


# ----------------------------------------------------------------------------------------------------------------
# Class-specific relevance (Chefer et al. 2021).


def window_grad_factors(record: SwinAttention, gradient: Tensor) -> Tensor:
    """One block's operator for `grad_rollout`, per window: I + Abar_w with Abar = mean over heads of
    (gradient * attention).clamp(min=0). [nW, N, N], rows and columns in window order; rows are not renormalised.

    gradient: d logit_c / d attention of this block, [nW, nh, N, N] like `record.attn` (from `class_gradients`).
    Entries the shifted-window mask blocked have attention exactly 0, so they stay 0.
    """
    _check_batch_of_one(record)
    if gradient.shape != record.attn.shape:
        raise ValueError(
            f"gradient {list(gradient.shape)} does not match the attention "
            f"{list(record.attn.shape)} of block {record.stage}.{record.block}"
        )
    Abar = (gradient.float() * record.attn.float()).clamp(min=0).mean(dim=1)  # [nW, nh, N, N] -> [nW, N, N]
    return Abar + torch.eye(Abar.shape[-1], dtype=Abar.dtype, device=Abar.device)  # [nW, N, N]: I + Abar_w


def grad_rollout(
    attentions: Sequence[SwinAttention], gradients: Sequence[Tensor], identity_path: bool = False
) -> Tensor:
    """Class-specific relevance of Chefer, Gur & Wolf 2021 ("Generic Attention-model Explainability", arXiv
    2103.15679) carried through Swin's windows and patch merges: [H1, W1] on the stage-1 token grid.

    attentions: every block's `SwinAttention` in forward order (batch of one), gradients: d logit_c / d attn for
    the same blocks in the same order, [nW, nh, N, N] each; `class_gradients(model, x, c)` returns both.

    Chefer's rule for a self-attention encoder is R = I; per layer in forward order R <- R + Abar R = (I + Abar) R,
    Abar = mean_heads((dy_c/dA * A).clamp(min=0)), with no row renormalisation (unlike the rollout, the weights are
    gradient-scaled, not probabilities; renormalising would undo the class weighting). Here each block's Abar is
    formed per window ([nW, N, N]) and placed block-diagonally on the block's grid with the cyclic shift undone, as
    in `rollout`; between stages R <- M R with M the 2x2 merge that averages a coarse token's four children; Swin
    has no CLS token, so the readout is the mean over the final tokens (the head's average pool):
        full = (1/N_final) 1^T (I + Abar_L) ... M ... (I + Abar_1),
    computed right to left as vector-matrix products like `rollout` (exactly the row mean of the dense product;
    tests/unit/test_explain_swin.py checks it against an explicit dense construction).

    The identity path. Expanding the product, the one path that crosses no attention at all (identity in every
    block, merges only) contributes exactly 1/N1 to every stage-1 token, whatever the class: merges keep a uniform
    weight uniform. In ViT that path ends on the CLS token itself, and Chefer's readout R[CLS, patches] leaves it
    out; the analogue here is map = full - 1/N1, the sum over the paths that cross at least one attention, which is
    what we return by default. With `identity_path=True` the full row mean is returned instead. The difference
    matters for display: `normalize_map` divides by the maximum and keeps the minimum, and with the floor a
    randomly initialised Swin-T's map spans only [0.998, 1] (its class part is 0.3-0.5 % of 1/N1), without it
    [0.65, 1]. Float32 rounding of the subtraction is far below what a display resolves; tiny negatives are
    clamped to 0.

    What it approximates: the relevance of each stage-1 token for logit c, as the sum over all attention/residual
    paths from it to the pooled output of the products of the gradient-weighted, positive-only, head-averaged
    attention along each path (the residual steps weigh 1). Like Chefer's method for ViT it keeps only the
    attention maps (MLPs, values and projections enter only through the gradients); like `rollout` it takes each
    merge (LayerNorm + Linear over the 4 concatenated children) as an equal average, and ignores the final
    LayerNorm. The map is non-negative; all zero if no block has positive gradient * attention.
    """
    if len(attentions) != len(gradients):
        raise ValueError(
            f"one gradient per attention block is needed: {len(attentions)} blocks, {len(gradients)} gradients"
        )
    full = _mean_readout(attentions, lambda i: window_grad_factors(attentions[i], gradients[i]), "grad_rollout")
    if identity_path:
        return full  # [H1, W1]
    return (full - 1.0 / full.numel()).clamp(min=0)  # [H1, W1]: the attention-free path's 1/N1 taken out


# ----------------------------------------------------------------------------------------------------------------
# Where does this patch look.


def default_block(attentions: Sequence[SwinAttention]) -> int:
    """The block `window_attention_at` and `window_box` use when none is given: the last block of the deepest stage
    that still has more than one window (Swin-T 224: stage 3 of 4, 14 x 14 tokens in 7 x 7 windows, block 10 of 12).

    There the window is a real constraint (a quarter of the image for Swin-T) and the features are already deep;
    in the last stage (7 x 7 tokens, one window) every token may look everywhere. If no stage has several windows,
    the last block.
    """
    for i in range(len(attentions) - 1, -1, -1):
        H, W = attentions[i].grid
        if (H // attentions[i].window) * (W // attentions[i].window) > 1:
            return i
    return len(attentions) - 1


def _pick(attentions: Sequence[SwinAttention], block: int | None) -> SwinAttention:
    if not attentions:
        raise ValueError("no attention was recorded")
    i = default_block(attentions) if block is None else block
    if not -len(attentions) <= i < len(attentions):
        raise ValueError(f"block {block} is out of range: the model has {len(attentions)} blocks")
    return attentions[i]


def window_attention_at(
    attentions: Sequence[SwinAttention], point: tuple[float, float], block: int | None = None, head: int | None = None
) -> Tensor:
    """Where the token under `point` looks in one block: its attention row on the block's token grid, [H_s, W_s].

    point: (x, y) as fractions in [0, 1) of the model input's width and height. block: index into `attentions`
    (negative counts from the end, -1 = the last block); None = `default_block`. head: one head, or None for the
    mean over heads.

    The token attends only inside its window (for a shifted block, the window of the grid rolled by -shift, which
    may wrap around the image borders; the shift mask then restricts it further to the part of the window on its
    own side of the wrap). The map is zero outside that window and sums to 1 (one softmax row, or their mean): the
    window is where it *can* look, the values are where it does. Positions are image positions (shift undone).
    """
    record = _pick(attentions, block)
    _check_batch_of_one(record)
    _, w, t, index = _token_at(record, point)
    row = record.attn[w, :, t, :].float()  # [nh, N]
    if head is None:
        row = row.mean(dim=0)  # [N]
    else:
        if not -row.shape[0] <= head < row.shape[0]:
            raise ValueError(
                f"head {head} is out of range: block {record.stage}.{record.block} has {row.shape[0]} heads"
            )
        row = row[head]  # [N]
    H, W = record.grid
    out = torch.zeros(H * W, dtype=row.dtype, device=row.device)  # [HW]
    out[index[w]] = row
    return out.view(H, W)  # [H, W]


def _runs(cells: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted distinct cells -> maximal runs of consecutive cells as half-open intervals [a, b)."""
    runs: list[tuple[int, int]] = []
    for c in cells:
        if runs and runs[-1][1] == c:
            runs[-1] = (runs[-1][0], c + 1)
        else:
            runs.append((c, c + 1))
    return runs


def window_box(
    attentions: Sequence[SwinAttention], point: tuple[float, float], block: int | None = None, reachable: bool = False
) -> list[Box]:
    """Outline of the window around `point` in one block, as boxes (x0, y0, x1, y1) in fractions [0, 1] of the input.

    Always a list. An unshifted window is one box. A shifted window is cut from the grid rolled by -shift, so the
    windows along the bottom and right edges wrap around the image borders: such a window is 2 boxes (one border)
    or 4 boxes (the corner window), e.g. on an 8 x 8 grid with window 4 and shift 2 the window of token (0, 0) is
    rows and columns {6, 7, 0, 1}: four 2 x 2 corners. With `reachable=True`, only the part the token may attend
    to under the shifted-window mask (the piece on its own side of the wrap): always one box, the support of
    `window_attention_at` for a real model. point and block as in `window_attention_at`.
    """
    record = _pick(attentions, block)
    H, W = record.grid
    pos, w, t, index = _token_at(record, point)
    members = index[w]  # [N] flat image positions of the window
    if reachable and record.shift:
        allowed = shifted_window_mask(H, W, record.window, record.shift)[w, t] == 0  # [N]
        members = members[allowed.to(members.device)]
    rows = sorted({int(p) // W for p in members})
    cols = sorted({int(p) % W for p in members})
    # A window (and a mask region) is a product of a set of rows and a set of columns: one box per pair of runs.
    return [(c0 / W, r0 / H, c1 / W, r1 / H) for r0, r1 in _runs(rows) for c0, c1 in _runs(cols)]
