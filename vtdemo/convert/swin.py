"""Swin checkpoints -> `vtdemo.models.swin.SwinTransformer` names.

timm (>= 0.9) files use our names already: only the derived buffers that 2023 uploads still carry
(`relative_position_index`, `attn_mask`: our model recomputes them) are dropped. Older timm files and the original
microsoft/Swin-Transformer `.pth` files (same names, under a `model` key) keep each patch merge at the END of stages
0-2 and name the classifier `head`: the merge moves to the start of the next stage and `head` becomes `head.fc`,
which is what timm's own `checkpoint_filter_fn` does.

transformers files (`microsoft/swin-*`) are renamed, their query/key/value projections concatenated into one `qkv`
Linear (rows q, k, v: the split transformers' conversion script makes), and their patch merges moved from the end
of stage S to the start of stage S+1. No tensor is reordered: all three implementations concatenate the 2x2
neighbours in the same (row, col) order (0,0), (1,0), (0,1), (1,1) before the merge's LayerNorm and Linear.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from . import StateDict, drop, merge_qkv, rename

_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def merge_to_next_stage(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """`layers.S.downsample.*` (end of stage S) -> `layers.{S+1}.downsample.*` (start of stage S+1)."""
    return {_DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k): v for k, v in state_dict.items()}


def from_timm(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """timm Swin state dict (any layout since timm 0.4, or a microsoft `.pth` dict) -> ours."""
    nested = state_dict.get("model")
    if isinstance(nested, Mapping):  # microsoft/Swin-Transformer release files
        state_dict = nested
    sd = drop(state_dict, [r"\.relative_position_index$", r"\.attn_mask$"])
    if "layers.0.downsample.reduction.weight" in sd:  # pre-0.9 layout: stage 0 ends with a merge
        sd = merge_to_next_stage(sd)
    return rename(sd, [(r"^head\.(weight|bias)$", r"head.fc.\1")])


def from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers SwinForImageClassification file (Hub key names) -> ours."""
    sd = drop(state_dict, [r"\.relative_position_index$"])
    sd = rename(
        sd,
        [
            (r"^swin\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
            (r"^swin\.embeddings\.norm\.", "patch_embed.norm."),
            (r"^swin\.encoder\.layers\.", "layers."),
            (r"\.layernorm_before\.", ".norm1."),
            (r"\.attention\.self\.", ".attn."),  # query/key/value and relative_position_bias_table
            (r"\.attention\.output\.dense\.", ".attn.proj."),
            (r"\.layernorm_after\.", ".norm2."),
            (r"\.intermediate\.dense\.", ".mlp.fc1."),
            (r"\.output\.dense\.", ".mlp.fc2."),
            (r"^swin\.layernorm\.", "norm."),
            (r"^classifier\.", "head.fc."),
        ],
    )
    sd = merge_qkv(sd, "{}.attn.query", "{}.attn.key", "{}.attn.value", "{}.attn.qkv")
    return merge_to_next_stage(sd)
