"""DINOv2 checkpoints -> `vtdemo.models.vit.VisionTransformer` names (see `vtdemo.models.dinov2`).

timm files already use our names. transformers files (`facebook/dinov2-*`, prefix `dinov2.` or
`dinov2_with_registers.`) are renamed like ViT's (`vtdemo.convert.vit`), LayerScale `layer_scale{1,2}.lambda1` ->
`ls{1,2}.gamma`, q/k/v merged into one `qkv`, the unused `mask_token` dropped. A register file is brought into
timm's form: its CLS position row is added to the CLS token and removed from the position embeddings (transformers
adds that row to the CLS token at every input size and never resamples it, so the sums are the same), and the
registers become `reg_token`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import StateDict, drop, merge_qkv, rename
from .vit import from_timm as from_timm  # timm's DINOv2 files are in our names, as its other ViTs


def from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers Dinov2Model / Dinov2ForImageClassification (with or without registers) -> ours."""
    sd = drop(state_dict, [r"embeddings\.mask_token$"])
    sd = rename(
        sd,
        [
            (r"^(dinov2|dinov2_with_registers)\.", ""),
            (r"^embeddings\.cls_token$", "cls_token"),
            (r"^embeddings\.register_tokens$", "reg_token"),
            (r"^embeddings\.position_embeddings$", "pos_embed"),
            (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
            (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
            (r"\.attention\.attention\.", ".attn."),
            (r"\.attention\.output\.dense\.", ".attn.proj."),
            (r"\.layer_scale(\d)\.lambda1$", r".ls\1.gamma"),
            (r"^layernorm\.", "norm."),
            (r"^classifier\.", "head."),
        ],
    )
    if "reg_token" in sd:  # positions of CLS + patches -> CLS token with its position, positions of the patches
        pos = sd["pos_embed"]  # [1, 1 + gh*gw, C]
        sd["cls_token"] = sd["cls_token"] + pos[:, :1]  # [1, 1, C]
        sd["pos_embed"] = pos[:, 1:].clone()  # [1, gh*gw, C]
    return merge_qkv(sd, "{}.attn.query", "{}.attn.key", "{}.attn.value", "{}.attn.qkv")
