"""Our models as flat-tuple graphs for an ahead-of-time runtime, and the records rebuilt from the tuples.

A runtime such as OpenVINO converts a module by tracing it with an example input, and its compiled model takes and
returns plain arrays. These wrappers make every output the explanations read an explicit graph output, so the fast
path keeps the maps:

- classifiers (ViT/DeiT, Swin): `x [B, 3, S, S]` -> `(logits [B, K], attention_1, ..., attention_L)`; ViT attentions
  are [B, nh, N, N], Swin ones [B*nW, nh, ws*ws, ws*ws] (the `.attn` of each `SwinAttention`);
- DETR: `(pixel_values [B, 3, H, W], pixel_mask [B, H, W] float 1 = real)` -> `(logits [B, Q, K+1], boxes [B, Q, 4]
  cxcywh in [0, 1], feature_mask [B, h, w] float, encoder_attn x E [B, nh, hw, hw], decoder_self_attn x D
  [B, nh, Q, Q], decoder_cross_attn x D [B, nh, Q, hw])`.

`classifier_output` and `detr_output` turn the tuples back into `ClassifierOutput` / `SwinAttention` / `DetrOutput`
records, with the Swin geometry read from the PyTorch modules, so downstream code cannot tell the two paths apart.
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


class ClassifierGraph(nn.Module):
    """ViT / DeiT / Swin -> flat tuple (logits, *attention tensors) (`return_attn` fixed at construction)."""

    def __init__(self, model: nn.Module, return_attn: bool) -> None:
        super().__init__()
        self.model = model
        self.return_attn = return_attn

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x, return_attn=self.return_attn)
        if not self.return_attn:
            return (out.logits,)
        return (out.logits, *[getattr(a, "attn", a) for a in out.attentions])


class DetrGraph(nn.Module):
    """DETR -> flat tuple (logits, boxes, feature_mask, *encoder, *decoder self, *decoder cross attention).

    Always runs the key-padding-mask path of the attention (traced with a padded example), which for an unpadded
    image masks nothing and gives the same probabilities as the unmasked path.
    """

    def __init__(self, model: nn.Module, return_attn: bool) -> None:
        super().__init__()
        self.model = model
        self.return_attn = return_attn

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor) -> tuple[Tensor, ...]:
        model: Any = self.model
        features = model.backbone_features(pixel_values)  # [B, 2048, h, w]
        mask = F.interpolate(pixel_mask[:, None], size=features.shape[-2:])[:, 0] > 0.5  # [B, h, w], as DETR.forward
        out = model.forward_transformer(features, mask, self.return_attn)
        head = (out.logits, out.boxes, mask.to(torch.float32))
        if not self.return_attn:
            return head
        return (*head, *out.encoder_attn, *out.decoder_self_attn, *out.decoder_cross_attn)


def classifier_example(model: nn.Module, batch: int = 1) -> Tensor:
    """A random input of the size the classifier was built for: [batch, 3, S, S]."""
    cfg: Any = model.cfg
    size = int(cfg.img_size)
    return torch.randn(batch, int(cfg.in_chans), size, size, generator=torch.Generator().manual_seed(0))


def detr_example(height: int = 320, width: int = 416) -> tuple[Tensor, Tensor]:
    """A padded example (the right/bottom 64 px are padding) so that tracing keeps the masked attention path."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, height, width)
    mask[:, : height - 64, : width - 64] = 1.0
    return torch.randn(1, 3, height, width, generator=g) * mask[:, None], mask


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
