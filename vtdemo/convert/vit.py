"""ViT / DeiT checkpoints -> `vtdemo.models.vit.VisionTransformer` names.

timm files already use our names (our module names are timm's); only unused identity-module leftovers are
dropped. transformers files (`google/vit-*`, `facebook/deit-*`, prefix `vit.` or `deit.`) are renamed and their
separate query/key/value projections are concatenated into one `qkv` Linear, rows in q, k, v order, which is how
transformers' own timm->HF conversion script splits them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import StateDict, drop, merge_qkv, rename


def from_timm(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """timm ViT/DeiT/DeiT III/register-ViT state dict -> ours (identity, minus keys of modules that hold nothing at
    inference; `ls1.gamma`, `ls2.gamma`, `reg_token` and `fc_norm` are ours too)."""
    return drop(state_dict, [r"^norm_pre\.", r"^head_drop\."])


def from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers ViTForImageClassification / DeiTForImageClassification(WithTeacher) -> ours."""
    sd = drop(state_dict, [r"\.pooler\.", r"embeddings\.mask_token$"])
    sd = rename(
        sd,
        [
            (r"^(vit|deit)\.", ""),
            (r"^embeddings\.cls_token$", "cls_token"),
            (r"^embeddings\.distillation_token$", "dist_token"),
            (r"^embeddings\.position_embeddings$", "pos_embed"),
            (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
            (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
            (r"\.layernorm_before\.", ".norm1."),
            (r"\.layernorm_after\.", ".norm2."),
            (r"\.attention\.attention\.", ".attn."),
            (r"\.attention\.output\.dense\.", ".attn.proj."),
            (r"\.intermediate\.dense\.", ".mlp.fc1."),
            (r"\.output\.dense\.", ".mlp.fc2."),
            (r"^layernorm\.", "norm."),
            (r"^(classifier|cls_classifier)\.", "head."),
            (r"^distillation_classifier\.", "head_dist."),
        ],
    )
    return merge_qkv(sd, "{}.attn.query", "{}.attn.key", "{}.attn.value", "{}.attn.qkv")
