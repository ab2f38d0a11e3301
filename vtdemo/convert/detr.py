"""DETR checkpoints -> `vtdemo.models.detr.DETR` names.

Two transformers layouts exist on the Hub (`facebook/detr-resnet-50`, `-101`), told apart by their backbone keys:
- `main`: `model.backbone.conv_encoder.model.` + torchvision ResNet names (`conv1`, `bn1`, `layerK.I.convJ`,
  `layerK.0.downsample.{0,1}`), which are ours under `backbone.`;
- `no_timm`: a transformers ResNet, `embedder.embedder.{convolution,normalization}`,
  `encoder.stages.S.layers.L.layer.I.{convolution,normalization}` and `encoder.stages.S.layers.0.shortcut.*`, i.e.
  torchvision's `conv1/bn1`, `layer{S+1}.L.conv{I+1}/bn{I+1}` and `layer{S+1}.0.downsample.{0,1}`.
The transformer and heads use one naming in both; transformers 5 renames some keys in memory (`backbone.model.`,
`o_proj`, `mlp.fc1`) and writes the Hub names back on save: both spellings are accepted here.

`from_original` reads facebookresearch/detr `.pth` state dicts (`backbone.0.body.` + torchvision names, fused
`in_proj_weight` whose rows are q, k, v, `linear1/2`, `norm1/2/3`, `multihead_attn`, `query_embed`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import StateDict, drop, rename

# Keys that carry no information at inference (BN step counters): dropped in every layout.
_DERIVED = [r"\.num_batches_tracked$"]

_NO_TIMM_BACKBONE = (
    [(r"\.embedder\.embedder\.convolution\.", ".conv1."), (r"\.embedder\.embedder\.normalization\.", ".bn1.")]
    + [(rf"\.encoder\.stages\.{s}\.layers\.", f".layer{s + 1}.") for s in range(4)]
    + [(rf"\.layer\.{i}\.convolution\.", f".conv{i + 1}.") for i in range(3)]
    + [(rf"\.layer\.{i}\.normalization\.", f".bn{i + 1}.") for i in range(3)]
    + [(r"\.shortcut\.convolution\.", ".downsample.0."), (r"\.shortcut\.normalization\.", ".downsample.1.")]
)

_HF_TRANSFORMER = [
    (r"^model\.backbone\.(conv_encoder\.)?model\.", "backbone."),
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_position_embeddings\.weight$", "query_pos"),
    (r"^model\.(encoder|decoder)\.layers\.(\d+)\.", r"\1.\2."),
    (r"\.(out_proj|o_proj)\.", ".out_proj."),
    (r"\.mlp\.(fc[12])\.", r".\1."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_norm."),
    (r"\.self_attn_layer_norm\.", ".self_attn_norm."),
    (r"\.final_layer_norm\.", ".ffn_norm."),
    (r"^model\.decoder\.layernorm\.", "decoder_norm."),
    (r"^class_labels_classifier\.", "class_embed."),
    (r"^bbox_predictor\.", "bbox_embed."),
]


def is_no_timm(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for the transformers-ResNet backbone naming (the Hub's `no_timm` revision)."""
    return any(".embedder.embedder." in k for k in state_dict)


def from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers DetrForObjectDetection state dict (either backbone naming) -> ours."""
    sd = drop(state_dict, _DERIVED)
    if is_no_timm(sd):
        sd = rename(sd, _NO_TIMM_BACKBONE)
    return rename(sd, _HF_TRANSFORMER)


def _split_in_proj(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """`X.in_proj_weight` [3C, C] / `X.in_proj_bias` [3C] -> `X.{q,k,v}_proj.{weight,bias}` (rows q, k, v)."""
    out: StateDict = {}
    for key, value in state_dict.items():
        for kind in ("weight", "bias"):
            if key.endswith(f".in_proj_{kind}"):
                prefix = key[: -len(f"in_proj_{kind}")]
                for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):  # [C, C] or [C] each
                    out[f"{prefix}{name}_proj.{kind}"] = part
                break
        else:
            out[key] = value
    return out


def from_original(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """facebookresearch/detr checkpoint (`torch.load(path, weights_only=True)["model"]`) -> ours."""
    sd = _split_in_proj(drop(state_dict, _DERIVED))
    sd = rename(
        sd,
        [
            (r"^backbone\.0\.body\.", "backbone."),
            (r"^query_embed\.weight$", "query_pos"),
            (r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.", r"\1.\2."),
            (r"^transformer\.decoder\.norm\.", "decoder_norm."),
            (r"\.multihead_attn\.", ".cross_attn."),
            (r"\.linear([12])\.", r".fc\1."),
        ],
    )
    # Layer norms: encoder norm1/norm2 and decoder norm1/norm2/norm3, in the order of their sublayers.
    return rename(
        sd,
        [
            (r"^(encoder|decoder)\.(\d+)\.norm1\.", r"\1.\2.self_attn_norm."),
            (r"^encoder\.(\d+)\.norm2\.", r"encoder.\1.ffn_norm."),
            (r"^decoder\.(\d+)\.norm2\.", r"decoder.\1.cross_attn_norm."),
            (r"^decoder\.(\d+)\.norm3\.", r"decoder.\1.ffn_norm."),
        ],
    )
