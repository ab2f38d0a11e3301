"""DETR attention maps on the backbone feature grid (Carion et al. 2020, §4.2 and Fig. 6: "decoder attention for
every predicted object"; Fig. 3: encoder self-attention at reference points).

- `decoder_attention`: the cross-attention of one object query over the image features, from one decoder layer
  (default the last), head mean or one head: [h, w]. Each head's row is a softmax over the un-padded positions, so
  the map sums to 1. Bright cells are where the query gathered its evidence, typically the object's extremities.
- `encoder_attention`: the encoder self-attention at one position: 'row' = where that position looks (sums to 1),
  'column' = how strongly every position looks at it (not normalised).

Input is a `vtdemo.models.detr.DetrOutput` computed with `return_attn=True`; points are given as fractions of the
un-padded image, so the same call works for any input size.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _fuse(attn: Tensor, head: int | None) -> Tensor:
    """[nh, ...] -> [...] float32, by head mean or one head (stored maps may be float16)."""
    return attn.float().mean(dim=0) if head is None else attn[head].float()


def _need(out, name: str) -> list[Tensor]:
    maps = getattr(out, name)
    if maps is None:
        raise ValueError("this DETR output has no attention: run the model with return_attn=True")
    return maps


def decoder_attention(out, query: int, layer: int = -1, head: int | None = None, batch_index: int = 0) -> Tensor:
    """Cross-attention of object query `query` over the feature grid: [h, w] (sums to 1 over real positions)."""
    h, w = out.feature_size
    attn = _need(out, "decoder_cross_attn")[layer][batch_index]  # [nh, Q, hw]
    return _fuse(attn[:, query], head).view(h, w)  # [hw] -> [h, w]


def decoder_attention_layers(out, query: int, head: int | None = None, batch_index: int = 0) -> Tensor:
    """The same map from every decoder layer: [L, h, w] (first layer first)."""
    return torch.stack(
        [decoder_attention(out, query, i, head, batch_index) for i in range(len(_need(out, "decoder_cross_attn")))]
    )


def feature_cell(out, point: tuple[float, float], batch_index: int = 0) -> tuple[int, int]:
    """(x, y) as fractions of the un-padded image -> (row, col) of the feature cell under it."""
    mask = out.feature_mask[batch_index]  # [h, w], True = real
    rows = int(mask[:, 0].sum())  # real extent of the image on the grid
    cols = int(mask[0, :].sum())
    fx = min(max(point[0], 0.0), 1.0 - 1e-9)
    fy = min(max(point[1], 0.0), 1.0 - 1e-9)
    return int(fy * rows), int(fx * cols)


def encoder_attention(
    out,
    point: tuple[float, float],
    layer: int = -1,
    head: int | None = None,
    direction: str = "row",
    batch_index: int = 0,
) -> Tensor:
    """Encoder self-attention at the cell under `point` ((x, y) fractions of the image): [h, w].

    direction 'row': where that cell looks (a softmax row, sums to 1); 'column': how much each cell looks at it.
    """
    h, w = out.feature_size
    r, c = feature_cell(out, point, batch_index)
    attn = _need(out, "encoder_attn")[layer][batch_index]  # [nh, hw, hw]
    index = r * w + c
    if direction == "row":
        return _fuse(attn[:, index], head).view(h, w)  # [nh, hw] -> [h, w]
    if direction == "column":
        return _fuse(attn[:, :, index], head).view(h, w)  # [nh, hw] -> [h, w]
    raise ValueError(f"direction must be 'row' or 'column', not {direction!r}")
