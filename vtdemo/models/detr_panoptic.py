"""DETR for panoptic segmentation: the detector of `vtdemo.models.detr` plus its mask head, in plain PyTorch.

Implements the segmentation extension of "End-to-End Object Detection with Transformers" (Carion et al. 2020,
arXiv 2005.12872, section 4.4): for each query, a multi-head attention map of its final decoder state over the
encoder memory (`bbox_attention`: q = Linear(hs), k = 1x1 conv(memory), softmax of q.k / sqrt(hd) taken jointly over
heads and positions, no values), concatenated with the projected backbone features and decoded by a small FPN-style
convolutional head (`mask_head`: two 3x3 conv + GroupNorm + ReLU at stride 32, then three stages that add a 1x1
adapted ResNet feature of layer3 / layer2 / layer1, nearest-upsampling to it, and refine with 3x3 conv + GroupNorm +
ReLU, and a final 3x3 conv to one channel): one mask logit map per query at stride 4.

Reference implementations: facebookresearch/detr (`models/segmentation.py`: `DETRsegm`, `MHAttentionMap`,
`MaskHeadSmallConv`, whose parameter names we use and which the Hub files of `facebook/detr-resnet-50-panoptic`
keep) and transformers (`DetrForSegmentation` in `models/detr/modeling_detr.py`). Where we differ:
- inference only; the detector's modules are those of `vtdemo.models.detr.DETR` (under `detr.`); we walk its
  backbone here too, keeping the layer1-3 outputs the mask head needs (the same folded conv + frozen BN code);
- GroupNorm has min(8, C) groups, as transformers (the original's 8 everywhere: the same for all Hub checkpoints);
- padded feature cells get -inf in the attention map, as the original (transformers: the dtype's minimum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .detr import DETR, DetrConfig, DetrOutput, conv_bn, sine_position_encoding


@dataclass
class PanopticOutput(DetrOutput):
    """`DetrOutput` plus pred_masks: [B, Q, H/4, W/4] mask logits per query (sigmoid -> probability), on the padded
    input's stride-4 grid (the layer1 grid of the ResNet)."""

    pred_masks: Tensor | None = None


class MHAttentionMap(nn.Module):
    """Per query and head, the softmax of q.k over all heads and positions of the memory (no values)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q_linear = nn.Linear(dim, dim)
        self.k_linear = nn.Linear(dim, dim)

    def forward(self, hs: Tensor, memory: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """hs: [B, Q, C] decoder output; memory: [B, C, h, w]; key_mask: [B, h, w] bool, True = real cell.

        Returns [B, Q, nh, h, w]: for each query, non-negative weights summing to 1 over (heads, h, w) together.
        """
        B, Q, C = hs.shape
        h, w = memory.shape[-2:]
        q = self.q_linear(hs).view(B, Q, self.num_heads, C // self.num_heads)  # [B, Q, nh, hd]
        k = F.conv2d(memory, self.k_linear.weight[:, :, None, None], self.k_linear.bias)  # [B, C, h, w]
        k = k.view(B, self.num_heads, C // self.num_heads, h, w)  # [B, nh, hd, h, w]
        scores = torch.einsum("bqnc,bnchw->bqnhw", q * self.scale, k)  # [B, Q, nh, h, w]
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None], float("-inf"))
        return scores.flatten(2).softmax(dim=-1).view(scores.shape)  # [B, Q, nh, h, w]


def _conv_gn_relu(conv: nn.Conv2d, gn: nn.GroupNorm, x: Tensor) -> Tensor:
    return F.relu(gn(conv(x)))


class MaskHeadSmallConv(nn.Module):
    """The FPN-style mask decoder: [B*Q, C + nh, h, w] (features and attention maps) -> [B*Q, 1, 8h, 8w]."""

    def __init__(self, dim: int, fpn_dims: tuple[int, int, int], context_dim: int) -> None:
        super().__init__()
        inter = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = nn.GroupNorm(min(8, dim), dim)
        self.lay2 = nn.Conv2d(dim, inter[1], 3, padding=1)
        self.gn2 = nn.GroupNorm(min(8, inter[1]), inter[1])
        self.lay3 = nn.Conv2d(inter[1], inter[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(min(8, inter[2]), inter[2])
        self.lay4 = nn.Conv2d(inter[2], inter[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(min(8, inter[3]), inter[3])
        self.lay5 = nn.Conv2d(inter[3], inter[4], 3, padding=1)
        self.gn5 = nn.GroupNorm(min(8, inter[4]), inter[4])
        self.out_lay = nn.Conv2d(inter[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter[3], 1)

    def forward(self, features: Tensor, attn_maps: Tensor, fpns: list[Tensor]) -> Tensor:
        """features: [B, C, h, w]; attn_maps: [B, Q, nh, h, w]; fpns: layer3, layer2, layer1 outputs [B, C_i, h_i, w_i].

        Returns mask logits [B*Q, 1, h_1, w_1] (the layer1 grid).
        """
        Q = attn_maps.shape[1]

        def per_query(t: Tensor) -> Tensor:
            return t.repeat_interleave(Q, dim=0)  # [B*Q, ...]: image b's copy for each of its queries

        x = torch.cat([per_query(features), attn_maps.flatten(0, 1)], dim=1)  # [B*Q, C + nh, h, w]
        x = _conv_gn_relu(self.lay2, self.gn2, _conv_gn_relu(self.lay1, self.gn1, x))
        stages = (
            (self.adapter1, self.lay3, self.gn3),
            (self.adapter2, self.lay4, self.gn4),
            (self.adapter3, self.lay5, self.gn5),
        )
        for fpn, (adapter, conv, gn) in zip(fpns, stages, strict=False):
            skip = per_query(adapter(fpn))  # [B*Q, C_s, h_s, w_s]
            x = _conv_gn_relu(conv, gn, skip + F.interpolate(x, size=skip.shape[-2:], mode="nearest"))
        return self.out_lay(x)  # [B*Q, 1, h_1, w_1]


class DetrPanoptic(nn.Module):
    """DETR with the panoptic mask head. Parameter names: `detr.*` (as `DETR`), `bbox_attention.{q,k}_linear`,
    `mask_head.{lay1-5, gn1-5, out_lay, adapter1-3}`."""

    def __init__(self, cfg: DetrConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.detr = DETR(cfg)
        self.bbox_attention = MHAttentionMap(cfg.d_model, cfg.num_heads)
        self.mask_head = MaskHeadSmallConv(cfg.d_model + cfg.num_heads, (1024, 512, 256), cfg.d_model)

    # The detector's own entry points, so that code written for `DETR` (e.g. `vtdemo.explain.detr_relevance`)
    # explains the boxes and classes of this model too.
    @property
    def query_pos(self) -> nn.Parameter:
        return self.detr.query_pos

    def backbone_features(self, pixel_values: Tensor) -> Tensor:
        """As `DETR.backbone_features`: layer4 features [B, 2048, h, w]."""
        return self.detr.backbone_features(pixel_values)

    def forward_transformer(self, features: Tensor, feature_mask: Tensor, return_attn: bool = False) -> DetrOutput:
        """As `DETR.forward_transformer` (classes and boxes, no masks)."""
        return self.detr.forward_transformer(features, feature_mask, return_attn)

    def backbone_layers(self, pixel_values: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> the outputs of layer1..layer4 of the ResNet ([B, 256, H/4, W/4] ... [B, 2048, H/32, W/32]),
        computed as `DETR.backbone_features` does (folded frozen BN, channels-last)."""
        net: Any = self.detr.backbone  # torchvision ResNet
        x = pixel_values.clone(memory_format=torch.channels_last)  # [B, 3, H, W], stored [B, H, W, 3]
        x = F.max_pool2d(conv_bn(x, net.conv1, net.bn1), kernel_size=3, stride=2, padding=1)  # [B, 64, H/4, W/4]
        outs = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in layer:
                out = conv_bn(x, block.conv1, block.bn1)
                out = conv_bn(out, block.conv2, block.bn2)
                out = conv_bn(out, block.conv3, block.bn3, relu=False)
                down = block.downsample  # None or (1x1 conv, frozen BN)
                shortcut = x if down is None else conv_bn(x, down[0], down[1], relu=False)
                x = F.relu(out + shortcut)  # not in place: the layer outputs are kept for the mask head
            outs.append(x)
        return outs

    def forward(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None, return_attn: bool = False
    ) -> PanopticOutput:
        """As `DETR.forward` (pixel_values [B, 3, H, W], pixel_mask [B, H, W] bool, True = real), plus pred_masks."""
        feats = self.backbone_layers(pixel_values)  # layer1..layer4
        B, _, h, w = feats[-1].shape
        if pixel_mask is None:
            mask = torch.ones(B, h, w, dtype=torch.bool, device=pixel_values.device)
        else:  # nearest interpolation, as the reference does
            mask = F.interpolate(pixel_mask[:, None].to(feats[-1].dtype), size=(h, w))[:, 0].to(torch.bool)
        d = self.detr
        key_mask = None if bool(mask.all()) else mask.flatten(1)  # [B, hw]
        pos = sine_position_encoding(mask, self.cfg.d_model // 2).to(feats[-1].dtype).flatten(1, 2)  # [B, hw, C]
        projected = d.input_proj(feats[-1])  # [B, C, h, w]
        memory = projected.permute(0, 2, 3, 1).flatten(1, 2)  # [B, hw, C]
        encoder_attn = []
        for layer in d.encoder:
            memory, attn = layer(memory, pos, key_mask, return_attn)
            encoder_attn.append(attn)
        query_pos = d.query_pos[None].expand(B, -1, -1)  # [B, Q, C]
        tgt = torch.zeros_like(query_pos)
        self_attns, cross_attns = [], []
        for layer in d.decoder:
            tgt, self_attn, cross_attn = layer(tgt, query_pos, memory, pos, key_mask, return_attn)
            self_attns.append(self_attn)
            cross_attns.append(cross_attn)
        hs = d.decoder_norm(tgt)  # [B, Q, C]

        memory_map = memory.transpose(1, 2).reshape(B, -1, h, w)  # [B, C, h, w]
        attn_maps = self.bbox_attention(hs, memory_map, None if key_mask is None else mask)  # [B, Q, nh, h, w]
        masks = self.mask_head(projected, attn_maps, [feats[2], feats[1], feats[0]])  # [B*Q, 1, H/4, W/4]
        return PanopticOutput(
            logits=d.class_embed(hs),
            boxes=d.bbox_embed(hs).sigmoid(),
            feature_size=(int(h), int(w)),
            feature_mask=mask,
            encoder_attn=encoder_attn if return_attn else None,
            decoder_self_attn=self_attns if return_attn else None,
            decoder_cross_attn=cross_attns if return_attn else None,
            pred_masks=masks.view(B, -1, *masks.shape[-2:]),
        )  # [B, Q, H/4, W/4]
