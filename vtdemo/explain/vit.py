"""ViT / DeiT explanations from the attention our model returns (`return_attn=True`).

- `rollout`: attention rollout, Abnar & Zuidema 2020 ("Quantifying Attention Flow in Transformers", arXiv 2005.00928).
  Per layer: fuse heads (mean in the paper; max / min offered), optionally zero the lowest `discard_ratio` of the
  fused attention *outside the prefix-token columns*, add the identity for the residual path and renormalise rows
  (`keepdim`: the bug in vit-explain #16 is normalising along the wrong axis), then multiply the layers,
  R = A'_L ... A'_1, and read the CLS row over the patch tokens.
- `grad_rollout`: class-specific relevance of Chefer, Gur & Wolf 2021 ("Generic Attention-model Explainability",
  arXiv 2103.15679), their eq. for self-attention encoders: R = I; per layer in forward order
  Abar = mean_heads((dy_c/dA * A).clamp(min=0)); R = R + Abar @ R. Each gradient is paired with its own layer's
  attention (vit-explain #6 multiplies them in reverse order).
- `cls_attention`: the last layer's CLS row per head (models with a CLS token only).
- `class_gradients`: one forward and backward pass for a class, giving the attentions and their gradients for
  `grad_rollout` here (ViT / DeiT) and for `vtdemo.explain.swin.grad_rollout` (Swin).

All functions take one image's attentions, a list over layers of [nh, N, N] (N = prefix tokens + patches, prefix =
CLS, CLS + distillation token for DeiT, [CLS +] registers for register ViTs), and return maps over the P = N - prefix
patch tokens, row-major on the patch grid.

Readout (`readout`): a model that classifies from its CLS token ("token") is explained by the CLS row of R; a model
that classifies from the mean of its patch tokens ("avg": timm's register ViTs, which have no CLS token) by the mean
of the patch-token rows of R (the rows the pooling averages; register rows are not pooled, so not read). This is the
rollout/relevance of the pooled output token, since the mean of rows of a product is the mean row times the rest.
Prefix columns (CLS, DIST, registers) are never part of the map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from ..models.swin import SwinAttention

FUSIONS = ("mean", "max", "min")


def fuse_heads(attn: torch.Tensor, fusion: str = "mean") -> torch.Tensor:
    """[nh, N, N] -> [N, N] by mean, max or min over heads."""
    if fusion == "mean":
        return attn.mean(dim=0)
    if fusion == "max":
        return attn.amax(dim=0)
    if fusion == "min":
        return attn.amin(dim=0)
    raise ValueError(f"head fusion must be one of {FUSIONS}, not {fusion!r}")


def discard_lowest(attn: torch.Tensor, ratio: float, num_prefix: int = 1) -> torch.Tensor:
    """Zero the lowest `ratio` of the entries of a fused [N, N] map, never touching the prefix-token columns.

    The fraction is taken over the candidates (all columns but the first `num_prefix`), so `ratio=0.9` keeps the top
    10 % of patch-column attention in every layer; CLS (and DIST) columns are always kept.
    """
    if ratio <= 0:
        return attn
    if not 0 <= ratio < 1:
        raise ValueError(f"discard ratio must be in [0, 1), not {ratio}")
    out = attn.clone()
    patch_cols = out[:, num_prefix:]  # [N, P] view
    flat = patch_cols.reshape(-1)  # [N*P]
    k = int(flat.numel() * ratio)
    if k > 0:
        lowest = flat.topk(k, largest=False).indices
        flat[lowest] = 0
        out[:, num_prefix:] = flat.view_as(patch_cols)
    return out


def rollout_matrix(
    attentions: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    num_prefix: int = 1,
    zero_columns: torch.Tensor | None = None,
) -> torch.Tensor:
    """The rolled-out attention R = A'_L ... A'_start, [N, N], row-stochastic. Layers before `start_layer` are skipped.

    zero_columns: token indices (into N) whose columns of the fused attention are set to 0 in every layer, after the
    discard and before the identity is added and the rows renormalised (`vtdemo.explain.artefacts.masked_rollout`).
    """
    if not attentions:
        raise ValueError("rollout needs at least one layer of attention")
    N = attentions[0].shape[-1]
    eye = torch.eye(N, dtype=torch.float32, device=attentions[0].device)
    R = eye.clone()
    for attn in attentions[start_layer:]:
        A = discard_lowest(fuse_heads(attn.float(), head_fusion), discard_ratio, num_prefix)  # [N, N]
        if zero_columns is not None and zero_columns.numel():
            A = A.clone()
            A[:, zero_columns] = 0
        A = A + eye  # the residual path
        A = A / A.sum(dim=-1, keepdim=True)  # rows stochastic again
        R = A @ R  # [N, N]: later layers multiply on the left
    return R


def read_out(R: torch.Tensor, num_prefix: int = 1, readout: str = "token", token: int = 0) -> torch.Tensor:
    """[N, N] rolled-out matrix -> [P]: row `token` ("token" readout), the mean of the patch rows ("avg"), or the
    mean of the two ("token_avg": DINOv2's linear heads read [CLS, mean of patches], each half of the input), over
    the patch columns."""
    if readout == "token":
        return R[token, num_prefix:]  # [P]
    if readout == "avg":
        return R[num_prefix:, num_prefix:].mean(dim=0)  # [P]
    if readout == "token_avg":
        return 0.5 * (R[token, num_prefix:] + R[num_prefix:, num_prefix:].mean(dim=0))  # [P]
    raise ValueError(f"readout must be 'token', 'avg' or 'token_avg', not {readout!r}")


def rollout(
    attentions: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    num_prefix: int = 1,
    token: int = 0,
    readout: str = "token",
) -> torch.Tensor:
    """Attention rollout: list over layers of [nh, N, N] -> [P] relevance of each patch for token `token` (CLS), or
    for the mean of the patch tokens (`readout="avg"`)."""
    R = rollout_matrix(attentions, head_fusion, discard_ratio, start_layer, num_prefix)
    return read_out(R, num_prefix, readout, token)


def grad_rollout(
    attentions: Sequence[torch.Tensor],
    gradients: Sequence[torch.Tensor],
    num_prefix: int = 1,
    token: int = 0,
    readout: str = "token",
) -> torch.Tensor:
    """Chefer et al. relevance: lists over layers (forward order) of attention [nh, N, N] and d logit_c / d attention
    [nh, N, N] -> [P] relevance of each patch for class c, read from token `token`'s row (or the mean of the patch
    rows for `readout="avg"`)."""
    if len(attentions) != len(gradients):
        raise ValueError("one gradient per attention layer is needed")
    N = attentions[0].shape[-1]
    R = torch.eye(N, dtype=torch.float32, device=attentions[0].device)
    for attn, grad in zip(attentions, gradients, strict=True):  # same layer, same index: never reversed
        Abar = (grad.float() * attn.float()).clamp(min=0).mean(dim=0)  # [N, N]
        R = R + Abar @ R
    return read_out(R, num_prefix, readout, token)


def cls_attention(attentions: Sequence[torch.Tensor], num_prefix: int = 1, layer: int = -1) -> torch.Tensor:
    """The CLS row of one layer's attention per head: [nh, P] (each row sums to at most 1)."""
    return attentions[layer][:, 0, num_prefix:].float()  # [nh, P]


def _attention_tensor(entry: torch.Tensor | SwinAttention) -> torch.Tensor:
    """The attention probabilities of one recorded layer: a ViT tensor [B, nh, N, N] or a Swin record's `.attn`
    [B*nW, nh, N, N]."""
    return entry.attn if isinstance(entry, SwinAttention) else entry


def class_gradients(
    model: torch.nn.Module, x: torch.Tensor, class_index: int
) -> tuple[torch.Tensor, list[torch.Tensor] | list[SwinAttention], list[torch.Tensor]]:
    """Forward `x` [1, 3, H, W] with attention, back-propagate logit `class_index` to every layer's attention.

    Returns (logits [K], attentions, their gradients d logit / d attention), all detached, in forward order:
    - ViT / DeiT (the model returns tensors [1, nh, N, N]): attentions per layer [nh, N, N], gradients [nh, N, N];
    - Swin (the model returns `SwinAttention` records, `.attn` [B*nW, nh, N, N]): the records with `.attn` detached,
      batch of one so [nW, nh, N, N] (the window dimension is kept), gradients [nW, nh, N, N] in the same window
      order, ready for `vtdemo.explain.swin.grad_rollout`.
    The input is made to require grad so the graph exists even though the loaded weights are frozen. Only the
    gradients with respect to the attention tensors are computed (`torch.autograd.grad`, not `.backward()`): no
    `.grad` is accumulated on the parameters or on the input, frozen or not.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"class_gradients explains one image: expected x [1, 3, H, W], got {list(x.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        out = model(x, return_attn=True)
        tensors = [_attention_tensor(a) for a in out.attentions]  # [1, nh, N, N] (ViT) or [nW, nh, N, N] (Swin)
        grads = torch.autograd.grad(out.logits[0, class_index], tensors)
    if out.attentions and isinstance(out.attentions[0], SwinAttention):
        attns: list[torch.Tensor] | list[SwinAttention] = [replace(a, attn=a.attn.detach()) for a in out.attentions]
        return out.logits[0].detach(), attns, [g.detach() for g in grads]  # [nW, nh, N, N] each
    return out.logits[0].detach(), [a[0].detach() for a in tensors], [g[0].detach() for g in grads]  # [nh, N, N]
