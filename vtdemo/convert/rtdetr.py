"""RT-DETR / RT-DETRv2 checkpoints (transformers `rt_detr`, `rt_detr_v2`: `PekingU/rtdetr_*`, `PekingU/rtdetr_v2_*`)
-> `vtdemo.models.rtdetr.RTDETR` names.

The Hub layout (what `save_pretrained` writes): `model.backbone.model.` + transformers' RT-DETR ResNet
(`embedder.embedder.I`, `encoder.stages.S.layers.B.layer.I`, `...shortcut[.1]`, each `convolution` +
`normalization`), `model.encoder_input_proj.L.{0,1}` (conv, BN), `model.encoder.encoder.I.layers.J` (AIFI),
`model.encoder.{lateral_convs,fpn_blocks,downsample_convs,pan_blocks}` (CCFF; a RepVGG block's `conv1` is its 3x3
branch, `conv2` its 1x1), `model.decoder_input_proj.L.{0,1}`, `model.enc_output.{0,1}` (Linear, LayerNorm),
`model.enc_score_head`, `model.enc_bbox_head`, `model.decoder.{query_pos_head,layers.N,class_embed.N,bbox_embed.N}`.
transformers 5 renames some modules in memory (`aifi`, `o_proj`, `mlp.fc1`): both spellings are accepted.

Dropped, and why: BN step counters; `model.denoising_class_embed` (training-time denoising queries only);
RT-DETRv2's `n_points_scale` buffer (derived: 1 / points per level; checked); and the top-level `class_embed.N` /
`bbox_embed.N` that RT-DETRv2 files may hold as tied copies of `model.decoder.*` (checked equal). Anything else
left over is an unexpected key for the strict load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from . import StateDict, drop, rename

_DERIVED = [r"\.num_batches_tracked$", r"^model\.denoising_class_embed\.weight$"]

_RULES = [
    # backbone
    (r"^model\.backbone\.(conv_encoder\.)?model\.", "backbone."),
    (r"^backbone\.embedder\.embedder\.(\d+)\.", r"backbone.stem.\1."),
    (r"^backbone\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.", r"backbone.stages.\1.\2.body.\3."),
    (r"^backbone\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.(1\.)?", r"backbone.stages.\1.\2.shortcut."),
    (r"^(backbone\..*)\.convolution\.", r"\1.conv."),
    (r"^(backbone\..*)\.normalization\.", r"\1.bn."),
    # projections into the encoder and the decoder: Sequential(conv, BN)
    (r"^model\.encoder_input_proj\.(\d+)\.0\.", r"input_proj.\1.conv."),
    (r"^model\.encoder_input_proj\.(\d+)\.1\.", r"input_proj.\1.bn."),
    (r"^model\.decoder_input_proj\.(\d+)\.0\.", r"decoder_proj.\1.conv."),
    (r"^model\.decoder_input_proj\.(\d+)\.1\.", r"decoder_proj.\1.bn."),
    # hybrid encoder: AIFI
    (r"^model\.encoder\.(encoder|aifi)\.(\d+)\.layers\.(\d+)\.", r"encoder.aifi.\2.\3."),
    (r"^(encoder\.aifi\..*)\.self_attn_layer_norm\.", r"\1.attn_norm."),
    # hybrid encoder: CCFF (a RepVGG block's conv1 = 3x3 branch, conv2 = 1x1 branch)
    (r"^model\.encoder\.lateral_convs\.", "encoder.lateral."),
    (r"^model\.encoder\.fpn_blocks\.", "encoder.fpn."),
    (r"^model\.encoder\.downsample_convs\.", "encoder.downsample."),
    (r"^model\.encoder\.pan_blocks\.", "encoder.pan."),
    (r"^(encoder\.(fpn|pan)\.\d+)\.bottlenecks\.(\d+)\.conv1\.", r"\1.blocks.\3.conv3."),
    (r"^(encoder\.(fpn|pan)\.\d+)\.bottlenecks\.(\d+)\.conv2\.", r"\1.blocks.\3.conv1."),
    (r"^(encoder\.(lateral|downsample|fpn|pan)\..*)\.norm\.", r"\1.bn."),
    # query selection
    (r"^model\.enc_output\.0\.", "enc_output."),
    (r"^model\.enc_output\.1\.", "enc_norm."),
    (r"^model\.(enc_score_head|enc_bbox_head)\.", r"\1."),
    (r"^model\.weight_embedding\.weight$", "query_embed"),
    # decoder
    (r"^model\.decoder\.query_pos_head\.", "query_pos_head."),
    (r"^model\.decoder\.layers\.(\d+)\.", r"decoder.\1."),
    (r"^model\.decoder\.class_embed\.(\d+)\.", r"class_heads.\1."),
    (r"^model\.decoder\.bbox_embed\.(\d+)\.", r"box_heads.\1."),
    (r"^(decoder\.\d+)\.encoder_attn\.", r"\1.cross_attn."),
    (r"^(decoder\.\d+)\.encoder_attn_layer_norm\.", r"\1.cross_attn_norm."),
    (r"^(decoder\.\d+)\.self_attn_layer_norm\.", r"\1.self_attn_norm."),
    # both encoder and decoder layers
    (r"\.self_attn\.o_proj\.", ".self_attn.out_proj."),
    (r"\.mlp\.(fc[12])\.", r".\1."),
    (r"^((encoder\.aifi|decoder)\..*)\.final_layer_norm\.", r"\1.ffn_norm."),
]

_POINTS_SCALE = re.compile(r"^model\.decoder\.layers\.\d+\.encoder_attn\.n_points_scale$")
_TIED = re.compile(r"^(class_embed|bbox_embed)\.(.+)$")


def from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers RTDetrForObjectDetection / RTDetrV2ForObjectDetection state dict -> ours.

    Raises ValueError (one line) when a derived or tied tensor is not what it should be.
    """
    sd = drop(state_dict, _DERIVED)
    for key in [k for k in sd if _POINTS_SCALE.match(k)]:
        scale = sd.pop(key).float()  # [L*P]: 1 / P for every point of every level
        if scale.numel() == 0 or not torch.allclose(scale, torch.full_like(scale, float(scale[0]))):
            raise ValueError(f"{key} holds different point counts per level; vtdemo supports one count per level")
    for key in [k for k in sd if _TIED.match(k)]:
        m = _TIED.match(key)
        assert m is not None
        twin = f"model.decoder.{m.group(1)}.{m.group(2)}"
        value = sd.pop(key)
        if twin not in sd:
            sd[twin] = value
        elif sd[twin].shape != value.shape or not torch.equal(sd[twin], value):
            raise ValueError(f"{key} differs from its tied copy {twin}")
    return rename(sd, _RULES)
