"""Swin V2 checkpoints -> `vtdemo.models.swinv2.SwinTransformerV2` names.

timm (>= 0.9) files use our names already; derived buffers some files carry (`relative_position_index`,
`relative_coords_table`, `attn_mask`; our model recomputes them) are dropped. The original
microsoft/Swin-Transformer V2 `.pth` files and older timm files keep each patch merge at the END of stages 0-2 and
name the classifier `head`: as timm's own `checkpoint_filter_fn` does, the merge moves to the start of the next
stage and `head` becomes `head.fc`.

transformers files (`microsoft/swinv2-*`) are renamed; their query/key/value weights are concatenated into one
`qkv` Linear (rows q, k, v), the query and value biases become `q_bias` / `v_bias` (the key has no bias in any of
the three implementations), `continuous_position_bias_mlp` becomes `cpb_mlp`, and the patch merges move from the
end of stage S to the start of stage S+1. transformers' `layernorm_before` / `layernorm_after` are, despite the
names, applied after the attention and the MLP (post-norm), as timm's `norm1` / `norm2` are: a plain rename.
No tensor is reordered (all three concatenate the 2x2 neighbours in the same order before the merge).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from . import StateDict, drop, merge_qkv, rename
from .swin import merge_to_next_stage

_DERIVED = [r"\.relative_position_index$", r"\.relative_coords_table$", r"\.attn_mask$", r"\.k_bias$"]


def from_timm(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """timm Swin V2 state dict (timm >= 0.9 layout or older / microsoft `.pth` layout) -> ours."""
    inner: Any = state_dict.get("model")
    if isinstance(inner, Mapping):  # microsoft/Swin-Transformer release files
        state_dict = inner
    sd = drop(state_dict, _DERIVED)
    if "layers.0.downsample.reduction.weight" in sd:  # old layout: stage 0 ends with a merge
        sd = merge_to_next_stage(sd)
        sd = rename(sd, [(r"^head\.(weight|bias)$", r"head.fc.\1")])
    return sd


def from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers Swinv2ForImageClassification file (Hub key names) -> ours."""
    sd = drop(state_dict, _DERIVED)
    sd = rename(
        sd,
        [
            (r"^swinv2\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
            (r"^swinv2\.embeddings\.norm\.", "patch_embed.norm."),
            (r"^swinv2\.encoder\.layers\.", "layers."),
            (r"\.attention\.self\.query\.bias$", ".attn.q_bias"),
            (r"\.attention\.self\.value\.bias$", ".attn.v_bias"),
            (r"\.attention\.self\.continuous_position_bias_mlp\.", ".attn.cpb_mlp."),
            (r"\.attention\.self\.", ".attn."),  # query/key/value weights and logit_scale
            (r"\.attention\.output\.dense\.", ".attn.proj."),
            (r"\.layernorm_before\.", ".norm1."),
            (r"\.layernorm_after\.", ".norm2."),
            (r"\.intermediate\.dense\.", ".mlp.fc1."),
            (r"\.output\.dense\.", ".mlp.fc2."),
            (r"^swinv2\.layernorm\.", "norm."),
            (r"^classifier\.", "head.fc."),
        ],
    )
    sd = merge_qkv(sd, "{}.attn.query", "{}.attn.key", "{}.attn.value", "{}.attn.qkv")  # weights only now
    return merge_to_next_stage(sd)
