"""DETR: end-to-end object detection with a transformer, in plain PyTorch.

Implements "End-to-End Object Detection with Transformers" (Carion et al. 2020, arXiv 2005.12872): a ResNet
backbone, a 1x1 projection to `d_model`, a post-norm transformer encoder over the h*w feature positions (fixed 2-D
sine positions added to queries and keys), a decoder whose `num_queries` learned query positions attend to the
encoder output, and two heads per query: class logits (the last class is "no object") and a box, normalised
(cx, cy, w, h) relative to the un-padded image.

Reference implementations: facebookresearch/detr (`models/detr.py`, `models/transformer.py`,
`models/position_encoding.py`, `models/backbone.py`) and huggingface/transformers (`models/detr/modeling_detr.py`,
whose weights on the Hub we load through `vtdemo.convert.detr`). Differences:
- inference only: no dropout, no auxiliary decoding losses, no Hungarian matcher, no segmentation head;
- the backbone is torchvision's ResNet with `FrozenBatchNorm2d` (torchvision's names under `backbone.`), but we walk
  its modules ourselves: each frozen BN is folded into the preceding convolution at run time (w * s, beta - mean * s
  with s = gamma / sqrt(var + eps)), activations are channels-last and residual sums in place. Same function (to
  ~1e-5 relative), faster than the modules' own forward (the figures: docs/performance.md, "Speed");
- our own multi-head attention returns per-head probabilities on request (`return_attn=True`, plain softmax);
  otherwise `F.scaled_dot_product_attention` runs with the key-padding mask;
- padding follows the reference exactly: the backbone runs over the padded batch and the pixel mask is reduced to
  the feature grid by nearest interpolation. As in the reference, an image padded into a batch is therefore not
  bit-identical to the same image alone: convolutions near its bottom/right border see the padded area (zeros at the
  input, BN biases further in), and nearest interpolation can round the feature mask differently. Run images one at
  a time where that matters.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedModelError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetrConfig:
    """Architecture hyper-parameters. The class head has `num_classes + 1` outputs; the last one is "no object".

    `dilation=True` is the DC5 variant: layer4 trades its stride for dilation, so the feature grid is H/16 x W/16.
    """

    backbone: str = "resnet50"  # "resnet50" or "resnet101"
    dilation: bool = False
    d_model: int = 256
    num_heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn_dim: int = 2048
    num_queries: int = 100
    num_classes: int = 91
    ln_eps: float = 1e-5


PRESETS: dict[str, DetrConfig] = {
    "detr-resnet-50": DetrConfig(backbone="resnet50"),
    "detr-resnet-101": DetrConfig(backbone="resnet101"),
    "detr-resnet-50-dc5": DetrConfig(backbone="resnet50", dilation=True),
    "detr-resnet-101-dc5": DetrConfig(backbone="resnet101", dilation=True),
}

BACKBONES = ("resnet50", "resnet101")
_RESNET_DEPTHS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101"}


def _hf_backbone(config: Mapping[str, Any]) -> tuple[str, bool]:
    """(backbone name, dilation) from a transformers DETR config: timm name, timm_backbone or ResNet sub-config."""
    dilation = bool(config.get("dilation") or False)
    sub = config.get("backbone_config")
    if not sub:  # Hub-era files: `"use_timm_backbone": true, "backbone": "resnet50"` (or a default ResNetConfig)
        name = config.get("backbone") or "resnet50"
    elif sub.get("model_type") == "timm_backbone":  # what transformers 5 writes for a timm backbone
        name = sub.get("backbone") or config.get("backbone") or "resnet50"
        dilation = dilation or sub.get("output_stride") == 16
    elif sub.get("model_type") == "resnet":  # the `no_timm` revision: a transformers ResNet
        name = _RESNET_DEPTHS.get(tuple(sub.get("depths", ())), "")
        standard = (
            sub.get("layer_type", "bottleneck") == "bottleneck"
            and sub.get("embedding_size", 64) == 64
            and list(sub.get("hidden_sizes", [256, 512, 1024, 2048])) == [256, 512, 1024, 2048]
            and not sub.get("downsample_in_bottleneck", False)
        )
        if not name or not standard:
            raise UnsupportedModelError(
                f"DETR with a ResNet of depths {sub.get('depths')} / layer type {sub.get('layer_type')} is not "
                f"supported; vtdemo implements ResNet-50 and ResNet-101 backbones"
            )
    else:
        raise UnsupportedModelError(
            f"DETR backbone of type '{sub.get('model_type')}' is not supported; "
            "vtdemo implements ResNet-50 and ResNet-101 backbones"
        )
    name = str(name).split("/")[-1].split(".")[0]  # "timm/resnet50.a1_in1k" -> "resnet50"
    if name not in BACKBONES:
        raise UnsupportedModelError(f"DETR backbone '{name}' is not supported; use one of {', '.join(BACKBONES)}")
    return name, dilation


def config_from_hf(config: Mapping[str, Any]) -> DetrConfig:
    """DetrConfig from a transformers DETR `config.json` (as a dict). Raises UnsupportedModelError otherwise."""
    if config.get("model_type", "detr") != "detr":
        raise UnsupportedModelError(f"model type '{config.get('model_type')}' is not DETR")
    checks = {"position_embedding_type": "sine", "activation_function": "relu", "num_channels": 3}
    for key, expected in checks.items():
        if config.get(key, expected) != expected:
            raise UnsupportedModelError(f"DETR with {key}={config[key]!r} is not supported (only {expected!r})")
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if config.get(a, 8) != config.get(b, 8):
            raise UnsupportedModelError(f"DETR with {a} != {b} is not supported")
    backbone, dilation = _hf_backbone(config)
    id2label = config.get("id2label") or {}  # absent when transformers' default of 2 labels was kept
    num_classes = max(int(k) for k in id2label) + 1 if id2label else int(config.get("num_labels", 2))
    cfg = DetrConfig(
        backbone=backbone,
        dilation=dilation,
        d_model=int(config.get("d_model", 256)),
        num_heads=int(config.get("encoder_attention_heads", 8)),
        encoder_layers=int(config.get("encoder_layers", 6)),
        decoder_layers=int(config.get("decoder_layers", 6)),
        ffn_dim=int(config.get("encoder_ffn_dim", 2048)),
        num_queries=int(config.get("num_queries", 100)),
        num_classes=num_classes,
        ln_eps=float(config.get("layer_norm_eps", 1e-5)),
    )
    logger.debug("DETR config from transformers: %s", cfg)
    return cfg


@dataclass
class DetrOutput:
    """What `DETR.forward` returns.

    logits: [B, Q, K+1] class scores before softmax; the last column is "no object".
    boxes: [B, Q, 4] in [0, 1], normalised (cx, cy, w, h) relative to the un-padded image.
    feature_size: (h, w) of the backbone grid (stride 32, or 16 for DC5), over the padded batch.
    feature_mask: [B, h, w] bool, True where the grid cell covers real (not padded) pixels.
    encoder_attn: per encoder layer [B, nh, h*w, h*w]; decoder_self_attn: per decoder layer [B, nh, Q, Q];
    decoder_cross_attn: per decoder layer [B, nh, Q, h*w]. Only with `return_attn=True` (else None): per-head
    softmax probabilities, rows sum to 1, padded keys get 0; they stay in the autograd graph. The h*w axis is
    row-major over the grid: `attn.reshape(..., h, w)`.
    """

    logits: Tensor
    boxes: Tensor
    feature_size: tuple[int, int]
    feature_mask: Tensor
    encoder_attn: list[Tensor] | None = None
    decoder_self_attn: list[Tensor] | None = None
    decoder_cross_attn: list[Tensor] | None = None


def sine_position_encoding(mask: Tensor, num_feats: int = 128, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sine positions. mask [B, h, w] bool (True = real) -> [B, h, w, 2 * num_feats], y half then x half.

    Each axis: position = cumulative count of real cells along it, divided by the last count (+1e-6) and scaled to
    (0, 2*pi]; channel 2i is sin(pos / T^(2i/F)) and channel 2i+1 is cos of the same angle (F = num_feats).
    """
    real = mask.to(torch.float32)
    y = real.cumsum(1)  # [B, h, w]
    x = real.cumsum(2)  # [B, h, w]
    y = y / (y[:, -1:, :] + 1e-6) * (2 * math.pi)
    x = x / (x[:, :, -1:] + 1e-6) * (2 * math.pi)
    pair = torch.div(torch.arange(num_feats, device=mask.device), 2, rounding_mode="floor")
    inv_freq = temperature ** (2 * pair.to(torch.float32) / num_feats)  # [F]

    def encode(t: Tensor) -> Tensor:
        angles = t[..., None] / inv_freq  # [B, h, w, F]
        sin_cos = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1)  # [B, h, w, F/2, 2]
        return sin_cos.flatten(-2)  # [B, h, w, F], interleaved sin, cos

    return torch.cat((encode(y), encode(x)), dim=-1)  # [B, h, w, 2F]


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections; positions are added by the caller."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None = None, return_attn: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """query [B, Nq, C], key and value [B, Nk, C]; key_mask [B, Nk] bool, True = real key (None: all real).

        Returns the output [B, Nq, C] and, with `return_attn`, the probabilities [B, nh, Nq, Nk] (else None).
        """
        B, Nq, C = query.shape
        Nk = key.shape[1]
        q = self.q_proj(query).view(B, Nq, self.num_heads, self.head_dim).transpose(1, 2)  # [B, nh, Nq, hd]
        k = self.k_proj(key).view(B, Nk, self.num_heads, self.head_dim).transpose(1, 2)  # [B, nh, Nk, hd]
        v = self.v_proj(value).view(B, Nk, self.num_heads, self.head_dim).transpose(1, 2)  # [B, nh, Nk, hd]
        mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, Nk]
        attn = None
        if return_attn:
            scores = (q @ k.transpose(-2, -1)) * self.scale  # [B, nh, Nq, Nk]
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            attn = scores.softmax(dim=-1)
            out = attn @ v  # [B, nh, Nq, hd]
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, nh, Nq, hd]
        out = out.transpose(1, 2).reshape(B, Nq, C)  # [B, Nq, C]
        return self.out_proj(out), attn


class EncoderLayer(nn.Module):
    """Post-norm: x = LN(x + SelfAttn(q=k=x+pos, v=x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: DetrConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.num_heads)
        self.self_attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.fc1 = nn.Linear(cfg.d_model, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.d_model)
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)

    def forward(
        self, x: Tensor, pos: Tensor, key_mask: Tensor | None, return_attn: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x, pos [B, N, C]; key_mask [B, N] (True = real) or None. Returns x [B, N, C], attn [B, nh, N, N] | None."""
        qk = x + pos
        y, attn = self.self_attn(qk, qk, x, key_mask, return_attn)
        x = self.self_attn_norm(x + y)
        x = self.ffn_norm(x + self.fc2(F.relu(self.fc1(x))))
        return x, attn


class DecoderLayer(nn.Module):
    """Post-norm: self-attention among queries, cross-attention to the encoder output, FFN; each + residual + LN."""

    def __init__(self, cfg: DetrConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.num_heads)
        self.self_attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.num_heads)
        self.cross_attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.fc1 = nn.Linear(cfg.d_model, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.d_model)
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        pos: Tensor,
        key_mask: Tensor | None,
        return_attn: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """tgt, query_pos [B, Q, C]; memory, pos [B, N, C]; key_mask [B, N] or None.

        Returns tgt [B, Q, C], self-attention [B, nh, Q, Q] and cross-attention [B, nh, Q, N] (None unless asked).
        """
        qk = tgt + query_pos
        y, self_attn = self.self_attn(qk, qk, tgt, None, return_attn)
        tgt = self.self_attn_norm(tgt + y)
        y, cross_attn = self.cross_attn(tgt + query_pos, memory + pos, memory, key_mask, return_attn)
        tgt = self.cross_attn_norm(tgt + y)
        tgt = self.ffn_norm(tgt + self.fc2(F.relu(self.fc1(tgt))))
        return tgt, self_attn, cross_attn


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last): the box head."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, num_layers: int) -> None:
        super().__init__()
        dims = [dim_in] + [dim_hidden] * (num_layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=False))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def _resnet(name: str, dilation: bool) -> nn.Module:
    """torchvision ResNet-50/101 with frozen BN, random weights, without the pooling and classifier DETR ignores."""
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d

    if name not in BACKBONES:
        raise UnsupportedModelError(f"DETR backbone '{name}' is not supported; use one of {', '.join(BACKBONES)}")
    build = getattr(torchvision.models, name)
    net = build(weights=None, norm_layer=FrozenBatchNorm2d, replace_stride_with_dilation=[False, False, dilation])
    del net.avgpool, net.fc  # net.forward is never called: `DETR.backbone_features` walks the modules
    return net


def conv_bn(x: Tensor, conv: nn.Conv2d, bn: Any, relu: bool = True) -> Tensor:  # bn: FrozenBatchNorm2d
    """conv -> frozen BN (-> ReLU) as one convolution: w' = w * s, b' = beta - mean * s, s = gamma / sqrt(var + eps)."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()  # [C_out]
    weight = conv.weight * scale[:, None, None, None]  # [C_out, C_in, k, k]
    bias = bn.bias - bn.running_mean * scale  # [C_out]
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)
    return F.relu_(y) if relu else y


class DETR(nn.Module):
    """DETR detector. Parameter names: `backbone.*` (torchvision ResNet), `input_proj`, `encoder.N.*`,
    `query_pos`, `decoder.N.*`, `decoder_norm`, `class_embed`, `bbox_embed.layers.{0,1,2}`."""

    def __init__(self, cfg: DetrConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = _resnet(cfg.backbone, cfg.dilation)
        self.input_proj = nn.Conv2d(2048, cfg.d_model, kernel_size=1)  # 2048 = layer4 width of ResNet-50/101
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.query_pos = nn.Parameter(torch.randn(cfg.num_queries, cfg.d_model))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.decoder_norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.class_embed = nn.Linear(cfg.d_model, cfg.num_classes + 1)
        self.bbox_embed = MLP(cfg.d_model, cfg.d_model, 4, num_layers=3)

    def backbone_features(self, pixel_values: Tensor) -> Tensor:
        """[B, 3, H, W] normalised RGB -> layer4 features [B, 2048, h, w] (h = ceil(H/32), /16 for DC5).

        The same computation as torchvision's `ResNet.forward` up to layer4 (Bottleneck: 1x1, 3x3 with the stride,
        1x1, plus the identity or the 1x1 downsample), with BN folded into the convolutions; channels-last memory.
        """
        net: Any = self.backbone  # torchvision ResNet: its submodules are typed as `Tensor | Module`
        # Always a copy: an input that merely passes for channels-last (a permuted size-1 batch) runs as NCHW.
        x = pixel_values.clone(memory_format=torch.channels_last)  # [B, 3, H, W], stored [B, H, W, 3]
        x = F.max_pool2d(conv_bn(x, net.conv1, net.bn1), kernel_size=3, stride=2, padding=1)  # [B, 64, H/4, W/4]
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in layer:
                out = conv_bn(x, block.conv1, block.bn1)
                out = conv_bn(out, block.conv2, block.bn2)
                out = conv_bn(out, block.conv3, block.bn3, relu=False)
                down = block.downsample  # None, or Sequential(conv 1x1, frozen BN)
                shortcut = x if down is None else conv_bn(x, down[0], down[1], relu=False)
                x = F.relu_(out.add_(shortcut))  # in place: a fresh activation is a costly allocation on CPU
        return x

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None = None, return_attn: bool = False) -> DetrOutput:
        """pixel_values [B, 3, H, W] normalised RGB (ImageNet mean/std), images top-left, padding zero;
        pixel_mask [B, H, W] bool, True = real pixel (None: no padding). See `DetrOutput` for the result."""
        features = self.backbone_features(pixel_values)  # [B, 2048, h, w]
        B, _, h, w = features.shape
        if pixel_mask is None:
            mask = torch.ones(B, h, w, dtype=torch.bool, device=features.device)
        else:  # nearest interpolation, as the reference does
            mask = F.interpolate(pixel_mask[:, None].to(features.dtype), size=(h, w))  # [B, 1, h, w]
            mask = mask[:, 0].to(torch.bool)  # [B, h, w]
        return self.forward_transformer(features, mask, return_attn)

    def forward_transformer(self, features: Tensor, feature_mask: Tensor, return_attn: bool = False) -> DetrOutput:
        """Everything after the backbone. features [B, 2048, h, w]; feature_mask [B, h, w] bool, True = real.

        Padded cells (False) are never attended to, and positions count real cells only, so whatever the padded
        features hold, the result for each image is that of its real cells alone.
        """
        B, _, h, w = features.shape
        key_mask = None if bool(feature_mask.all()) else feature_mask.flatten(1)  # [B, hw]
        pos = sine_position_encoding(feature_mask, self.cfg.d_model // 2).to(features.dtype)  # [B, h, w, C]
        pos = pos.flatten(1, 2)  # [B, hw, C]
        memory = self.input_proj(features).permute(0, 2, 3, 1).flatten(1, 2)  # [B, hw, C] (a view if channels-last)

        encoder_attn: list[Tensor] = []
        for layer in self.encoder:
            memory, attn = layer(memory, pos, key_mask, return_attn)
            encoder_attn.append(attn)

        query_pos = self.query_pos[None].expand(B, -1, -1)  # [B, Q, C]
        tgt = torch.zeros_like(query_pos)  # [B, Q, C]
        self_attns: list[Tensor] = []
        cross_attns: list[Tensor] = []
        for layer in self.decoder:
            tgt, self_attn, cross_attn = layer(tgt, query_pos, memory, pos, key_mask, return_attn)
            self_attns.append(self_attn)
            cross_attns.append(cross_attn)
        hs = self.decoder_norm(tgt)  # [B, Q, C]

        return DetrOutput(
            logits=self.class_embed(hs),  # [B, Q, K+1]
            boxes=self.bbox_embed(hs).sigmoid(),  # [B, Q, 4] normalised cxcywh
            feature_size=(int(h), int(w)),
            feature_mask=feature_mask,
            encoder_attn=encoder_attn if return_attn else None,
            decoder_self_attn=self_attns if return_attn else None,
            decoder_cross_attn=cross_attns if return_attn else None,
        )
