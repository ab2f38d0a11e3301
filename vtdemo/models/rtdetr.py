"""RT-DETR and RT-DETRv2: real-time DETRs with a hybrid encoder and deformable decoding, in plain PyTorch.

Implements "DETRs Beat YOLOs on Real-time Object Detection" (Zhao et al., CVPR 2024, arXiv 2304.08069) and
"RT-DETRv2: Improved Baseline with Bag-of-Freebies" (Lv et al. 2024, arXiv 2407.17140):
1. a ResNet-vd backbone (`vtdemo.models.resnet_vd`) gives three maps at strides 8, 16, 32, each projected to the
   encoder width by a 1x1 conv + BN;
2. the hybrid encoder: AIFI (attention-based intra-scale feature interaction) runs a post-norm transformer layer
   over the top map only (fixed 2-D sine positions), then CCFF (cross-scale feature fusion) mixes the levels
   top-down (FPN) and bottom-up (PAN) with CSP blocks of RepVGG convolutions;
3. query selection: every position of every level is scored by a head; the `num_queries` best (max over classes)
   become the decoder's queries, their content the encoder feature and their reference box the head's box around
   a per-level anchor (cells of 0.05 * 2^level, positions within 1% of the border are masked out);
4. the decoder: each layer runs self-attention among the queries, multi-scale deformable cross-attention (each query
   samples `num_points` points per head and level around its reference box; `vtdemo.models.deformable`), and an
   FFN; its box head refines the reference box (iterative refinement), its class head gives sigmoid (focal) logits.
RT-DETRv2 changes only the sampling: a configurable offset scale and an optional discrete (nearest-cell) method.

Reference implementations: lyuwenyu/RT-DETR (`rtdetr_pytorch/src/zoo/rtdetr/hybrid_encoder.py`, `rtdetr_decoder.py`,
`rtdetrv2_pytorch/.../rtdetrv2_decoder.py`) and huggingface/transformers (`models/rt_detr/modeling_rt_detr.py`,
`models/rt_detr_v2/modeling_rt_detr_v2.py`; their Hub weights load through `vtdemo.convert.rtdetr`). Differences:
- inference only: no denoising queries, no auxiliary losses, no dropout; batch norms are frozen;
- AIFI always adds its sine positions (transformers 5 skips them in eval mode when `eval_size` is set; the
  original precomputes the same values for that size);
- anchors are made for the actual feature sizes (transformers' `anchor_image_size`, when set, fixes them to a size:
  the same at the size the processor gives, 640x640);
- nothing is detached (see `RtDetrOutput`): gradients are the outputs' true derivatives;
- v1 and v2 share one deformable attention (v1 = offset scale 0.5, bilinear): their formulas are the same;
- the output carries what the explanations need, cheaply: every decoder layer's sampling locations, attention
  weights and reference boxes (always), AIFI's attention (with `return_attn=True`).
No pixel mask: the processor squashes every photo to one size, so nothing is padded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .deformable import deformable_sample, sampling_locations
from .detr import MLP, MultiHeadAttention
from .resnet_vd import ConvBN, ResNetVd, activation
from .rtdetr_config import PRESETS, RtDetrConfig, config_from_hf

__all__ = ["PRESETS", "RTDETR", "RtDetrConfig", "RtDetrOutput", "config_from_hf", "sine_positions_2d"]


@dataclass
class RtDetrOutput:
    """What `RTDETR.forward` returns (Q queries, K classes, L levels, P points, nh decoder heads).

    logits: [B, Q, K] class logits of the last decoder layer (scores are their sigmoid; no "no object" class).
    boxes: [B, Q, 4] in [0, 1], normalised (cx, cy, w, h) of the model input, i.e. of the whole (squashed) photo.
    shapes: (h, w) of each level's feature map (strides 8, 16, 32 of the input).
    encoder_maps: the hybrid encoder's fused maps, [B, C, h_l, w_l] per level.
    query_index: [B, Q] which flattened encoder position (levels concatenated, row-major) each query came from.
    init_boxes: [B, Q, 4] the selected positions' boxes (normalised cxcywh): the first layer's reference boxes.
    layer_logits, layer_boxes: per decoder layer [B, Q, K] and [B, Q, 4] (the last entries are logits / boxes).
    reference_boxes: per decoder layer [B, Q, 4], the box its sampling points are placed around.
    sampling_locations: per decoder layer [B, Q, nh, L, P, 2], (x, y) in [0, 1] of the input.
    sampling_weights: per decoder layer [B, Q, nh, L, P], softmax over each head's L*P points.
    aifi_attn: per AIFI layer [B, nh, N, N] over the top map's N = h*w cells (row-major), softmax rows; only with
    `return_attn=True` (else None). All tensors stay in the autograd graph when gradients are on, and nothing is
    detached: the references detach the selected queries and each layer's reference box (a training device; the
    values are the same), here gradients are the true derivatives of the outputs (checked against finite
    differences in tests/parity/test_rtdetr.py).
    """

    logits: Tensor
    boxes: Tensor
    shapes: list[tuple[int, int]]
    encoder_maps: list[Tensor]
    query_index: Tensor
    init_boxes: Tensor
    layer_logits: list[Tensor] = field(default_factory=list)
    layer_boxes: list[Tensor] = field(default_factory=list)
    reference_boxes: list[Tensor] = field(default_factory=list)
    sampling_locations: list[Tensor] = field(default_factory=list)
    sampling_weights: list[Tensor] = field(default_factory=list)
    aifi_attn: list[Tensor] | None = None


def sine_positions_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sine positions of an h x w grid, row-major: [h*w, dim] = [sin(y w_k), cos(y w_k), sin(x w_k),
    cos(x w_k)] with w_k = T^(-k / (dim/4)), k < dim/4, y and x the integer row and column. Computed in float64."""
    if dim % 4:
        raise ValueError(f"the sine positions need a width divisible by 4, not {dim}")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # [dim/4]
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ey = y.flatten()[:, None] * omega  # [h*w, dim/4]
    ex = x.flatten()[:, None] * omega  # [h*w, dim/4]
    return torch.cat([ey.sin(), ey.cos(), ex.sin(), ex.cos()], dim=1).float()  # [h*w, dim]


class EncoderLayer(nn.Module):
    """AIFI's transformer layer: self-attention (positions on q and k) and an FFN, post-norm (or pre-norm)."""

    def __init__(self, cfg: RtDetrConfig) -> None:
        super().__init__()
        d = cfg.encoder_hidden_dim
        self.pre_norm = cfg.normalize_before
        self.act = cfg.encoder_act
        self.self_attn = MultiHeadAttention(d, cfg.encoder_heads)
        self.attn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, d)
        self.ffn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, pos: Tensor, return_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """x [B, N, C], pos [1, N, C] -> x [B, N, C], attention [B, nh, N, N] | None."""
        y = self.attn_norm(x) if self.pre_norm else x
        qk = y + pos
        y, attn = self.self_attn(qk, qk, y, None, return_attn)
        x = x + y
        if not self.pre_norm:
            x = self.attn_norm(x)
        y = self.ffn_norm(x) if self.pre_norm else x
        x = x + self.fc2(activation(self.fc1(y), self.act))
        if not self.pre_norm:
            x = self.ffn_norm(x)
        return x, attn


class RepVGGBlock(nn.Module):
    """act(BN(conv3x3(x)) + BN(conv1x1(x))): RepVGG's training-time form (two branches, not fused)."""

    def __init__(self, c: int, act: str, eps: float) -> None:
        super().__init__()
        self.conv3 = ConvBN(c, c, 3, act=None, eps=eps)
        self.conv1 = ConvBN(c, c, 1, act=None, eps=eps)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return activation(self.conv3(x) + self.conv1(x), self.act)


class CSPRepLayer(nn.Module):
    """CCFF's fusion block (cross-stage partial): conv1 -> 3 RepVGG blocks, plus conv2, summed, then conv3 when
    the hidden width (C * hidden_expansion) differs from C. Input [B, 2C, h, w] (two levels concatenated) ->
    [B, C, h, w]."""

    def __init__(self, cfg: RtDetrConfig) -> None:
        super().__init__()
        c, eps, act = cfg.encoder_hidden_dim, cfg.batch_norm_eps, cfg.act
        hidden = int(c * cfg.hidden_expansion)
        self.conv1 = ConvBN(2 * c, hidden, 1, act=act, eps=eps)
        self.conv2 = ConvBN(2 * c, hidden, 1, act=act, eps=eps)
        self.blocks = nn.ModuleList(RepVGGBlock(hidden, act, eps) for _ in range(3))
        self.conv3 = ConvBN(hidden, c, 1, act=act, eps=eps) if hidden != c else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        for block in self.blocks:
            y = block(y)
        y = y + self.conv2(x)
        return self.conv3(y) if self.conv3 is not None else y


class HybridEncoder(nn.Module):
    """AIFI on the levels `encode_proj_layers` (the top one), then CCFF: top-down, each level's upper neighbour goes
    through a lateral 1x1 conv, is upsampled x2 (nearest), concatenated with it and fused; bottom-up, each fused
    level is downsampled by a 3x3/2 conv, concatenated with the level above (its lateral output) and fused again."""

    def __init__(self, cfg: RtDetrConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, eps, act, n = cfg.encoder_hidden_dim, cfg.batch_norm_eps, cfg.act, len(cfg.encoder_in_channels)
        self.aifi = nn.ModuleList(
            nn.Sequential(*(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))) for _ in cfg.encode_proj_layers
        )
        self.lateral = nn.ModuleList(ConvBN(c, c, 1, act=act, eps=eps) for _ in range(n - 1))
        self.fpn = nn.ModuleList(CSPRepLayer(cfg) for _ in range(n - 1))
        self.downsample = nn.ModuleList(ConvBN(c, c, 3, 2, act=act, eps=eps) for _ in range(n - 1))
        self.pan = nn.ModuleList(CSPRepLayer(cfg) for _ in range(n - 1))

    def forward(self, maps: list[Tensor], return_attn: bool = False) -> tuple[list[Tensor], list[Tensor]]:
        """maps: per level [B, C, h_l, w_l], finest first -> (fused maps, same shapes; AIFI attentions if asked)."""
        maps = list(maps)
        attns: list[Tensor] = []
        for layers, level in zip(self.aifi, self.cfg.encode_proj_layers, strict=True):
            B, C, h, w = maps[level].shape
            x = maps[level].flatten(2).transpose(1, 2)  # [B, h*w, C]
            pos = sine_positions_2d(h, w, C, self.cfg.pos_temperature).to(x)[None]  # [1, h*w, C]
            for layer in layers.children():
                x, attn = layer(x, pos, return_attn)
                if attn is not None:
                    attns.append(attn)
            maps[level] = x.transpose(1, 2).reshape(B, C, h, w)  # [B, C, h, w]

        n = len(maps)
        inner = [maps[-1]]  # top-down, coarsest first
        for i, (lateral, fpn) in enumerate(zip(self.lateral, self.fpn, strict=True)):
            top = lateral(inner[-1])
            inner[-1] = top  # the lateral output is what the bottom-up path meets later
            up = F.interpolate(top, scale_factor=2.0, mode="nearest")  # [B, C, 2h, 2w]
            inner.append(fpn(torch.cat([up, maps[n - 2 - i]], dim=1)))  # [B, C, h', w']
        inner.reverse()  # finest first

        outs = [inner[0]]
        for i, (down, pan) in enumerate(zip(self.downsample, self.pan, strict=True)):
            outs.append(pan(torch.cat([down(outs[-1]), inner[i + 1]], dim=1)))  # [B, C, h_{i+1}, w_{i+1}]
        return outs, attns


class DeformableAttention(nn.Module):
    """Multi-scale deformable cross-attention: per query, head, level and point an offset (2 numbers) and a weight
    (softmax over the head's L*P points) from the query; values are the projected encoder features."""

    def __init__(self, cfg: RtDetrConfig) -> None:
        super().__init__()
        d, nh, L, P = cfg.d_model, cfg.decoder_heads, cfg.num_levels, cfg.num_points
        if d % nh:
            raise ValueError(f"d_model {d} is not divisible by {nh} heads")
        self.num_heads, self.num_levels, self.num_points = nh, L, P
        self.offset_scale, self.method = cfg.offset_scale, cfg.method
        self.sampling_offsets = nn.Linear(d, nh * L * P * 2)
        self.attention_weights = nn.Linear(d, nh * L * P)
        self.value_proj = nn.Linear(d, d)
        self.output_proj = nn.Linear(d, d)

    def forward(
        self, query: Tensor, reference: Tensor, memory: Tensor, shapes: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """query [B, Q, C] (positions added); reference [B, Q, 4] normalised cxcywh; memory [B, C, N] (levels
        flattened, channels first). Returns the output [B, Q, C], locations [B, Q, nh, L, P, 2] and weights
        [B, Q, nh, L, P]."""
        B, Q, C = query.shape
        nh, L, P = self.num_heads, self.num_levels, self.num_points
        # value_proj on channels-first memory, as a 1x1 convolution (W @ memory + b: a runtime's convolution kernels
        # take it at reduced precision, where a matrix product with the weights on the left stayed f32)
        value = F.conv1d(memory, self.value_proj.weight[:, :, None], self.value_proj.bias)  # [B, C, N]
        value = value.view(B, nh, C // nh, memory.shape[-1])  # [B, nh, hd, N]
        offsets = self.sampling_offsets(query).view(B, Q, nh, L, P, 2)  # [B, Q, nh, L, P, 2]
        weights = self.attention_weights(query).view(B, Q, nh, L * P).softmax(-1)  # [B, Q, nh, L*P]
        weights = weights.view(B, Q, nh, L, P)  # [B, Q, nh, L, P]
        locations = sampling_locations(reference, offsets, self.offset_scale)  # [B, Q, nh, L, P, 2]
        out = deformable_sample(value, shapes, locations, weights, self.method)  # [B, Q, C]
        return self.output_proj(out), locations, weights


class DecoderLayer(nn.Module):
    """Post-norm: self-attention among the queries (positions on q and k), deformable cross-attention, FFN."""

    def __init__(self, cfg: RtDetrConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.act = cfg.decoder_act
        self.self_attn = MultiHeadAttention(d, cfg.decoder_heads)
        self.self_attn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.cross_attn = DeformableAttention(cfg)
        self.cross_attn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(d, cfg.decoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.decoder_ffn_dim, d)
        self.ffn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(
        self, tgt: Tensor, query_pos: Tensor, reference: Tensor, memory: Tensor, shapes: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """tgt, query_pos [B, Q, C]; reference [B, Q, 4]; memory [B, C, N] (channels first) -> tgt, locations,
        weights."""
        qk = tgt + query_pos
        y, _ = self.self_attn(qk, qk, tgt)
        tgt = self.self_attn_norm(tgt + y)
        y, locations, weights = self.cross_attn(tgt + query_pos, reference, memory, shapes)
        tgt = self.cross_attn_norm(tgt + y)
        tgt = self.ffn_norm(tgt + self.fc2(activation(self.fc1(tgt), self.act)))
        return tgt, locations, weights


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """log(x / (1 - x)) with x clamped to [0, 1] and both parts to >= eps (as the references)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def anchors_for(shapes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-position anchor boxes in logit space [1, N, 4] and their validity [1, N, 1] (bool).

    Level l's cell (i, j) gets the box centred on the cell, (j + 0.5) / w, (i + 0.5) / h, of side 0.05 * 2^l;
    an anchor with any coordinate within 0.01 of 0 or 1 is invalid: its logit is the dtype's largest value and its
    encoder feature is zeroed before query selection (as in the references).
    """
    boxes = []
    for level, (h, w) in enumerate(shapes):
        y, x = torch.meshgrid(
            torch.arange(h, device=device).to(dtype), torch.arange(w, device=device).to(dtype), indexing="ij"
        )
        xy = torch.stack([(x + 0.5) / w, (y + 0.5) / h], dim=-1)  # [h, w, 2]
        wh = torch.full_like(xy, 0.05 * 2.0**level)  # [h, w, 2]
        boxes.append(torch.cat([xy, wh], dim=-1).reshape(h * w, 4))  # [h*w, 4]
    anchors = torch.cat(boxes)[None]  # [1, N, 4]
    valid = ((anchors > 0.01) & (anchors < 0.99)).all(-1, keepdim=True)  # [1, N, 1]
    logits = torch.log(anchors / (1 - anchors))
    big = torch.full((), torch.finfo(dtype).max, dtype=dtype, device=device)
    return torch.where(valid, logits, big), valid


class RTDETR(nn.Module):
    """RT-DETR / RT-DETRv2 detector. Parameter names: `backbone.*` (`ResNetVd`), `input_proj.N`, `encoder.*`
    (`HybridEncoder`), `decoder_proj.N`, `enc_output`, `enc_norm`, `enc_score_head`, `enc_bbox_head`, `query_embed`
    (only with learn_initial_query), `query_pos_head`, `decoder.N.*`, `class_heads.N`, `box_heads.N`."""

    def __init__(self, cfg: RtDetrConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, c = cfg.d_model, cfg.encoder_hidden_dim
        self.backbone = ResNetVd(cfg.backbone)
        if self.backbone.channels != list(cfg.encoder_in_channels):
            raise ValueError(f"backbone outputs {self.backbone.channels} != encoder_in_channels")
        self.input_proj = nn.ModuleList(ConvBN(ch, c, 1, act=None) for ch in cfg.encoder_in_channels)
        self.encoder = HybridEncoder(cfg)
        eps = cfg.batch_norm_eps
        self.decoder_proj = nn.ModuleList(ConvBN(ch, d, 1, act=None, eps=eps) for ch in cfg.decoder_in_channels)
        self.enc_output = nn.Linear(d, d)
        self.enc_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.enc_score_head = nn.Linear(d, cfg.num_classes)
        self.enc_bbox_head = MLP(d, d, 4, num_layers=3)
        self.query_embed = nn.Parameter(torch.zeros(cfg.num_queries, d)) if cfg.learn_initial_query else None
        self.query_pos_head = MLP(4, 2 * d, d, num_layers=2)
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.class_heads = nn.ModuleList(nn.Linear(d, cfg.num_classes) for _ in range(cfg.decoder_layers))
        self.box_heads = nn.ModuleList(MLP(d, d, 4, num_layers=3) for _ in range(cfg.decoder_layers))

    def encode(self, pixel_values: Tensor, return_attn: bool = False) -> tuple[list[Tensor], list[Tensor]]:
        """[B, 3, H, W] RGB in [0, 1] -> the hybrid encoder's maps (strides 8, 16, 32) and AIFI's attentions."""
        feats = self.backbone(pixel_values)
        maps = [proj(f) for proj, f in zip(self.input_proj, feats, strict=True)]  # [B, C, h_l, w_l] each
        return self.encoder(maps, return_attn)

    def forward(self, pixel_values: Tensor, return_attn: bool = False) -> RtDetrOutput:
        """pixel_values [B, 3, H, W]: RGB rescaled to [0, 1] (the processor's 640x640, no normalisation unless its
        file asks for it); H and W multiples of 32. See `RtDetrOutput` for the result."""
        encoder_maps, aifi_attn = self.encode(pixel_values, return_attn)
        sources = [proj(m) for proj, m in zip(self.decoder_proj, encoder_maps, strict=True)]  # [B, d, h_l, w_l]
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in sources]
        memory_cf = torch.cat([s.flatten(2) for s in sources], dim=2)  # [B, d, N]: the decoder's values read this
        memory = memory_cf.transpose(1, 2)  # [B, N, d]: query selection's
        B, N, d = memory.shape
        Q = self.cfg.num_queries
        if N < Q:
            raise ValueError(f"the input gives {N} encoder positions, fewer than the {Q} queries; use a larger input")

        # Query selection: score every position, keep the Q best as queries and their boxes as references.
        anchors, valid = anchors_for(shapes, memory.dtype, memory.device)  # [1, N, 4], [1, N, 1]
        selected = self.enc_norm(self.enc_output(memory * valid.to(memory.dtype)))  # [B, N, d]
        scores = self.enc_score_head(selected)  # [B, N, K]
        box_logits = self.enc_bbox_head(selected) + anchors  # [B, N, 4]
        index = scores.max(-1).values.topk(Q, dim=1).indices  # [B, Q]
        ref_logits = box_logits.gather(1, index[..., None].expand(-1, -1, 4))  # [B, Q, 4]
        if self.query_embed is not None:
            tgt = self.query_embed[None].expand(B, -1, -1)  # [B, Q, d]
        else:
            tgt = selected.gather(1, index[..., None].expand(-1, -1, d))  # [B, Q, d]

        out = RtDetrOutput(
            logits=scores.new_zeros(0),
            boxes=scores.new_zeros(0),
            shapes=shapes,
            encoder_maps=encoder_maps,
            query_index=index,
            init_boxes=ref_logits.sigmoid(),
            aifi_attn=aifi_attn if return_attn else None,
        )
        reference = out.init_boxes  # [B, Q, 4]
        for layer, class_head, box_head in zip(self.decoder, self.class_heads, self.box_heads, strict=True):
            tgt, locations, weights = layer(tgt, self.query_pos_head(reference), reference, memory_cf, shapes)
            out.reference_boxes.append(reference)
            out.sampling_locations.append(locations)
            out.sampling_weights.append(weights)
            refined = (box_head(tgt) + inverse_sigmoid(reference)).sigmoid()  # [B, Q, 4]
            out.layer_boxes.append(refined)
            out.layer_logits.append(class_head(tgt))  # [B, Q, K]
            reference = refined
        out.logits, out.boxes = out.layer_logits[-1], out.layer_boxes[-1]
        return out
