"""Our models as flat-tuple graphs for an ahead-of-time runtime, and the records rebuilt from the tuples.

A runtime such as OpenVINO converts a module by tracing it with an example input, and its compiled model takes and
returns plain arrays. These wrappers make every output the explanations read an explicit graph output, so the fast
path keeps the maps:

- classifiers (ViT/DeiT, Swin): `x [B, 3, S, S]` -> `(logits [B, K], attention_1, ..., attention_L)`; ViT attentions
  are [B, nh, N, N], Swin ones [B*nW, nh, ws*ws, ws*ws] (the `.attn` of each `SwinAttention`);
- DETR: `(pixel_values [B, 3, H, W], pixel_mask [B, H, W] float 1 = real)` -> `(logits [B, Q, K+1], boxes [B, Q, 4]
  cxcywh in [0, 1], feature_mask [B, h, w] float, encoder_attn x E [B, nh, hw, hw], decoder_self_attn x D
  [B, nh, Q, Q], decoder_cross_attn x D [B, nh, Q, hw])`;
- RT-DETR / RT-DETRv2: `x [B, 3, H, W]` (the processor's fixed size) -> `(query_index [B, Q] int64, init_boxes
  [B, Q, 4], encoder_maps x L [B, C, h_l, w_l], layer_logits x D [B, Q, K], layer_boxes x D [B, Q, 4],
  reference_boxes x D [B, Q, 4], sampling_locations x D [B, Q, nh, L, P, 2], sampling_weights x D [B, Q, nh, L, P],
  aifi_attn x A [B, nh, hw, hw])` (the last layer's logits and boxes are the output's; AIFI only with attention):
  every field of `RtDetrOutput`, so the views (sampling points, AIFI) read the compiled model's numbers.

`classifier_output`, `detr_output` and `rtdetr_output` turn the tuples back into `ClassifierOutput` /
`SwinAttention` / `DetrOutput` / `RtDetrOutput` records, with the Swin geometry read from the PyTorch modules, so
downstream code cannot tell the two paths apart.
The same idea as exporting torchvision / transformers models with extra outputs (e.g. `output_attentions=True` in
transformers' ONNX exports); here the modules are ours and the outputs are our records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.outputs import ClassifierOutput


class _Graph(nn.Module):
    """One of our models wrapped for tracing, `return_attn` fixed at construction."""

    def __init__(self, model: nn.Module, return_attn: bool) -> None:
        super().__init__()
        self.model = model
        self.return_attn = return_attn


class ClassifierGraph(_Graph):
    """ViT / DeiT / Swin -> flat tuple (logits, *attention tensors) (`return_attn` fixed at construction)."""

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x, return_attn=self.return_attn)
        if not self.return_attn:
            return (out.logits,)
        return (out.logits, *[getattr(a, "attn", a) for a in out.attentions])


class DetrGraph(_Graph):
    """DETR -> flat tuple (logits, boxes, feature_mask, *encoder, *decoder self, *decoder cross attention).

    Always runs the key-padding-mask path of the attention (traced with a padded example), which for an unpadded
    image masks nothing and gives the same probabilities as the unmasked path.
    """

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor) -> tuple[Tensor, ...]:
        model: Any = self.model
        features = model.backbone_features(pixel_values)  # [B, 2048, h, w]
        mask = F.interpolate(pixel_mask[:, None], size=features.shape[-2:])[:, 0] > 0.5  # [B, h, w], as DETR.forward
        out = model.forward_transformer(features, mask, self.return_attn)
        head = (out.logits, out.boxes, mask.to(torch.float32))
        if not self.return_attn:
            return head
        return (*head, *out.encoder_attn, *out.decoder_self_attn, *out.decoder_cross_attn)


class RtDetrGraph(_Graph):
    """RT-DETR / RT-DETRv2 -> flat tuple (query_index, init_boxes, *encoder_maps, *layer_logits, *layer_boxes,
    *reference_boxes, *sampling_locations, *sampling_weights[, *aifi_attn]) (`return_attn` fixed at construction).
    The query selection (top-k over the encoder positions, gathers) and the deformable sampling (grid_sample, or
    RT-DETRv2's discrete gather) are part of the graph."""

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x, return_attn=self.return_attn)
        flat = (
            out.query_index,
            out.init_boxes,
            *out.encoder_maps,
            *out.layer_logits,
            *out.layer_boxes,
            *out.reference_boxes,
            *out.sampling_locations,
            *out.sampling_weights,
        )
        return (*flat, *out.aifi_attn) if self.return_attn else flat


def classifier_example(model: nn.Module, batch: int = 1, size: tuple[int, int] | None = None) -> Tensor:
    """A random input of `size` (height, width), by default the size the classifier was built for: [batch, 3, H, W]."""
    cfg: Any = model.cfg
    height, width = size if size is not None else (int(cfg.img_size), int(cfg.img_size))
    return torch.randn(batch, int(cfg.in_chans), height, width, generator=torch.Generator().manual_seed(0))


def detr_example(height: int = 320, width: int = 416) -> tuple[Tensor, Tensor]:
    """A padded example (the right/bottom 64 px are padding) so that tracing keeps the masked attention path."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, height, width)
    mask[:, : height - 64, : width - 64] = 1.0
    return torch.randn(1, 3, height, width, generator=g) * mask[:, None], mask


def rtdetr_example(size: tuple[int, int], batch: int = 1) -> Tensor:
    """A random input in [0, 1] (the processor's range) of the fixed input size (height, width): [batch, 3, H, W]."""
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def classifier_output(model: nn.Module, arrays: Sequence[Tensor], return_attn: bool) -> ClassifierOutput:
    """Flat outputs -> `ClassifierOutput`; for Swin, each attention becomes a `SwinAttention` with its geometry."""
    logits = arrays[0]
    if not return_attn:
        return ClassifierOutput(logits=logits)
    attns = list(arrays[1:])
    layers = getattr(model, "layers", None)
    if layers is None:  # ViT / DeiT: tensors [B, nh, N, N]
        return ClassifierOutput(logits=logits, attentions=attns)
    from ..models.swin import SwinAttention

    records = []
    it = iter(attns)
    for s, stage in enumerate(layers):
        for b, blk in enumerate(stage.blocks):
            records.append(SwinAttention(next(it), s, b, blk.grid, blk.window, blk.shift))
    return ClassifierOutput(logits=logits, attentions=records)


def detr_output(model: nn.Module, arrays: Sequence[Tensor], return_attn: bool):
    """Flat outputs -> `vtdemo.models.detr.DetrOutput` (feature_size from the feature mask)."""
    from ..models.detr import DetrOutput

    logits, boxes, mask = arrays[0], arrays[1], arrays[2] > 0.5  # mask [B, h, w] bool
    out = DetrOutput(
        logits=logits, boxes=boxes, feature_size=(int(mask.shape[1]), int(mask.shape[2])), feature_mask=mask
    )
    if return_attn:
        cfg: Any = model.cfg
        E, D = int(cfg.encoder_layers), int(cfg.decoder_layers)
        rest = list(arrays[3:])
        out.encoder_attn, out.decoder_self_attn, out.decoder_cross_attn = rest[:E], rest[E : E + D], rest[E + D :]
    return out


def rtdetr_output(model: nn.Module, arrays: Sequence[Tensor], return_attn: bool):
    """Flat outputs (`RtDetrGraph`) -> `vtdemo.models.rtdetr.RtDetrOutput`; the counts (levels, decoder layers) come
    from the skeleton's config, the level shapes from the encoder maps. AIFI's attention only with `return_attn`
    (a graph with attention outputs may serve a plain call: they are then dropped)."""
    from ..models.rtdetr import RtDetrOutput

    cfg: Any = model.cfg
    L, D = len(cfg.encoder_in_channels), int(cfg.decoder_layers)  # encoder maps, decoder layers
    it = iter(arrays)

    def take(n: int) -> list[Tensor]:
        return [next(it) for _ in range(n)]

    index, init_boxes = next(it).long(), next(it)  # [B, Q] (OpenVINO may give int32), [B, Q, 4]
    maps = take(L)  # [B, C, h_l, w_l] each
    out = RtDetrOutput(
        logits=index.new_zeros(0).float(),
        boxes=index.new_zeros(0).float(),
        shapes=[(int(m.shape[-2]), int(m.shape[-1])) for m in maps],
        encoder_maps=maps,
        query_index=index,
        init_boxes=init_boxes,
        layer_logits=take(D),
        layer_boxes=take(D),
        reference_boxes=take(D),
        sampling_locations=take(D),
        sampling_weights=take(D),
    )
    out.logits, out.boxes = out.layer_logits[-1], out.layer_boxes[-1]
    if return_attn:
        out.aifi_attn = list(it)
    return out
