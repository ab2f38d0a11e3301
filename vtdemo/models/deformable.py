"""Multi-scale deformable attention (Deformable DETR's cross-attention, as RT-DETR and RT-DETRv2 use it), written
with `torch.nn.functional.grid_sample`: no custom kernels.

Implements the sampling step of "Deformable DETR: Deformable Transformers for End-to-End Object Detection" (Zhu et
al. 2021, arXiv 2010.04159, eq. 3): each query, in each head, reads `P` points on each of `L` feature levels and
sums them with softmax weights (over the L*P points of the head). The locations are normalised (x, y) in [0, 1] of
the feature map (0 = the left / top edge of the first cell, 1 = the right / bottom edge of the last), i.e. of the
model input; outside points read zeros.

Reference implementations: fundamentalvision/Deformable-DETR (`ms_deform_attn_core_pytorch`), lyuwenyu/RT-DETR
(`rtdetrv2_pytorch/src/zoo/rtdetr/rtdetrv2_decoder.py`, with its `discrete` method) and huggingface/transformers
(`modeling_rt_detr.py`, `modeling_rt_detr_v2.py`). Differences: one function for both methods; the bilinear one is
the same `grid_sample` call (align_corners=False, zero padding); the discrete one (RT-DETRv2's option for
deployment without grid_sample) reads one cell per point with a `gather`: column floor(x * w + 0.5), row
floor(y * h + 0.5), clamped into the map. As in the reference, that puts cell j at x = j / w, half a cell left (and
up) of where the bilinear method puts its centre, (j + 0.5) / w.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

METHODS = ("default", "discrete")


def deformable_sample(
    value: Tensor,
    shapes: list[tuple[int, int]],
    locations: Tensor,
    weights: Tensor,
    method: str = "default",
) -> Tensor:
    """Weighted multi-scale sampling.

    value: [B, nh, hd, N], the projected values of every level flattened row-major and concatenated, channels first
    as the feature maps are (N = sum of h_l * w_l over `shapes`, the (h, w) of each level; a level is then a
    reshape into grid_sample's [B*nh, hd, h, w], not a transpose: OpenVINO's bf16 transpose of a 6400-cell level
    took 12 % of RT-DETR-R18's time on AMX). locations: [B, Q, nh, L, P, 2], (x, y) in [0, 1].
    weights: [B, Q, nh, L, P], each head's weights over its L*P points (they sum to 1 in the model; any values work).
    method: "default" (bilinear, zero outside the map) or "discrete" (one cell, see the module docstring).

    Returns [B, Q, nh * hd]: per head sum_{l,p} weight * value(location), heads concatenated.
    """
    if method not in METHODS:
        raise ValueError(f"unknown deformable sampling method {method!r}; use one of {METHODS}")
    B, nh, hd, N = value.shape
    _, Q, _, L, P, _ = locations.shape
    if len(shapes) != L or sum(h * w for h, w in shapes) != N:
        raise ValueError(f"value of {N} positions does not fit the level shapes {shapes}")
    per_level = value.split([h * w for h, w in shapes], dim=-1)  # L x [B, nh, hd, h*w]
    locs = locations.permute(0, 2, 1, 3, 4, 5).flatten(0, 1)  # [B*nh, Q, L, P, 2]
    sampled = []
    for level, (h, w) in enumerate(shapes):
        v = per_level[level].reshape(B * nh, hd, h, w)  # [B*nh, hd, h, w]
        loc = locs[:, :, level]  # [B*nh, Q, P, 2]
        if method == "default":
            grid = 2 * loc - 1  # [B*nh, Q, P, 2] in [-1, 1]: grid_sample's coordinates
            sampled.append(F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
        else:
            # Column floor(x * w + 0.5), row floor(y * h + 0.5), clamped into the map (RT-DETRv2 truncates toward
            # zero instead of flooring; the two differ only below 0, where the clamp gives 0 either way).
            x = (loc[..., 0] * w + 0.5).floor().clamp(0, w - 1).long()  # [B*nh, Q, P]
            y = (loc[..., 1] * h + 0.5).floor().clamp(0, h - 1).long()  # [B*nh, Q, P]
            index = (y * w + x).flatten(1)[:, None, :].expand(-1, hd, -1)  # [B*nh, hd, Q*P]
            picked = v.flatten(2).gather(2, index)  # [B*nh, hd, Q*P]
            sampled.append(picked.view(B * nh, hd, Q, P))  # [B*nh, hd, Q, P]
    stacked = torch.stack(sampled, dim=-2)  # [B*nh, hd, Q, L, P]
    w8 = weights.permute(0, 2, 1, 3, 4).reshape(B * nh, 1, Q, L, P)  # [B*nh, 1, Q, L, P]
    out = (stacked * w8).sum(dim=(-2, -1))  # [B*nh, hd, Q]
    return out.view(B, nh * hd, Q).transpose(1, 2)  # [B, Q, nh*hd]


def sampling_locations(reference: Tensor, offsets: Tensor, offset_scale: float) -> Tensor:
    """Where each point is sampled: reference [B, Q, 4] normalised (cx, cy, w, h) boxes; offsets [B, Q, nh, L, P, 2]
    (the model's raw offsets) -> locations [B, Q, nh, L, P, 2], (x, y) = centre + offset / P * (w, h) * offset_scale.

    RT-DETR (v1) uses offset_scale 0.5 (a point with offset +-P lands on the box edge); RT-DETRv2 reads it from its
    config (`decoder_offset_scale`, 0.5 by default): the same formula.
    """
    P = offsets.shape[-2]
    centre = reference[:, :, None, None, None, :2]  # [B, Q, 1, 1, 1, 2]
    size = reference[:, :, None, None, None, 2:]  # [B, Q, 1, 1, 1, 2]
    return centre + offsets / P * size * offset_scale
