"""High-norm artefact tokens of plain ViTs, and a rollout that masks them out.

Darcet, Oquab, Mairal & Bojanowski, ICLR 2024, "Vision Transformers Need Registers" (arXiv 2309.16588; public code
facebookresearch/dinov2): large, well-trained ViTs re-purpose a few patch tokens in low-information background
regions (sky, walls) as global scratch space. Those tokens have an output norm about ten times that of the others
(a bimodal histogram: the paper calls tokens of DINOv2 ViT-g with a norm above 150 "high-norm" / artefacts), carry
little local information, and take a large share of the attention, which puts bright dots in attention maps far
from the object. Adding a few extra learnable "register" tokens gives the model that scratch space outside the
patch grid, and the dots go away.

Pure functions on one image's block outputs (`VisionTransformer(..., return_tokens=True)`) and attentions:
- `token_norms`: the L2 norm of every patch token after every block, on the patch grid [L, gh, gw] (the residual
  stream before the final LayerNorm; after it, every token's norm is about the same);
- `prefix_norms`: the same for the prefix tokens (CLS, DIST, registers) [L, prefix];
- `find_outliers`: the high-norm tokens of one layer. The paper's cut-off (150) is a number for one model; ours is
  scale-free and robust to the outliers themselves: a token is an outlier when its norm is above both
  `median + k * 1.4826 * MAD` (a robust z-score above k; 1.4826 * MAD estimates the standard deviation of normal
  data) and `min_ratio * median`. Defaults k = 5, min_ratio = 2: a plain ViT's artefacts (several times the
  median) pass both, the ordinary spread of norms passes neither;
- `masked_rollout`: attention rollout (Abnar & Zuidema 2020, as `vtdemo.explain.vit.rollout`) with the outliers
  masked out. Exactly: in every layer, after fusing the heads (and the optional discard), the columns of the
  outlier tokens are set to 0 (nobody may read from them), then the identity is added and every row is divided by
  its sum; the layers are multiplied and read out as usual (CLS row, or mean of the patch rows for "avg" models);
  finally the outliers' own entries of the map are set to 0 (with the "avg" readout their own row would otherwise
  still give them their identity share). The attention they took is thereby spread over the other tokens in
  proportion to what those received.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .vit import read_out, rollout_matrix

#: For the UI: what the dots on the norm map are.
CAPTION = (
    "Each square is one patch token, coloured by the length (L2 norm) of its vector after the chosen block; "
    "ringed dots are high-norm outlier tokens (norm above median + 5 robust SD and above twice the median). "
    "Large plain ViTs learn to use a few background patches (often sky or wall) as scratch memory for "
    "global information: those tokens get norms many times the others, draw much of the attention and make "
    'the bright spots far from the object in attention maps (Darcet et al., ICLR 2024, "Vision '
    'Transformers Need Registers"). Models trained with register tokens keep that memory outside the '
    'image grid, so their norm maps have no such dots. "Mask outliers" removes these tokens from the '
    "rollout: nobody may attend to them and the attention they took is shared out among the other tokens."
)


def _patch_tokens(tokens: Sequence[torch.Tensor]) -> torch.Tensor:
    """List over layers of [N, C] or [1, N, C] -> [L, N, C] float32."""
    return torch.stack([t[0] if t.ndim == 3 else t for t in tokens]).float()  # [L, N, C]


def token_norms(tokens: Sequence[torch.Tensor], num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """Block outputs (list over L layers of [N, C] or [1, N, C], N = prefix + gh*gw) -> patch-token norms
    [L, gh, gw] (row-major patches, the same grid as every explanation map)."""
    x = _patch_tokens(tokens)[:, num_prefix:]  # [L, P, C]
    if x.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"{x.shape[1]} patch tokens do not fill a {grid[0]}x{grid[1]} grid")
    return x.norm(dim=-1).reshape(-1, grid[0], grid[1])  # [L, gh, gw]


def prefix_norms(tokens: Sequence[torch.Tensor], num_prefix: int) -> torch.Tensor:
    """Norms of the prefix tokens (CLS, DIST, registers) after every block: [L, num_prefix]."""
    return _patch_tokens(tokens)[:, :num_prefix].norm(dim=-1)  # [L, prefix]


def find_outliers(norms: torch.Tensor, k: float = 5.0, min_ratio: float = 2.0) -> tuple[torch.Tensor, float]:
    """High-norm tokens of one layer: norms of any shape (e.g. [gh, gw]) -> (bool mask of that shape, threshold).

    Outlier: norm > max(median + k * 1.4826 * MAD, min_ratio * median), MAD = median(|norm - median|). With at
    most ~half of the tokens being outliers, median and MAD are those of the ordinary tokens.
    """
    flat = norms.float().reshape(-1)
    med = flat.median()
    mad = (flat - med).abs().median()
    threshold = float(torch.maximum(med + k * 1.4826 * mad, min_ratio * med))
    return norms > threshold, threshold


def masked_rollout(
    attentions: Sequence[torch.Tensor],
    outliers: torch.Tensor,
    num_prefix: int = 1,
    readout: str = "token",
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
) -> torch.Tensor:
    """Rollout with the outlier patch tokens masked out (see the module docstring for the exact rule).

    attentions: list over layers of [nh, N, N]; outliers: bool over the P = N - num_prefix patches (any shape with P
    elements, e.g. [gh, gw]). Returns [P], non-negative, 0 at the outliers.
    """
    mask = outliers.reshape(-1).to(torch.bool)
    columns = torch.nonzero(mask).reshape(-1) + num_prefix  # patch index -> token index
    R = rollout_matrix(
        attentions, head_fusion, discard_ratio, start_layer, num_prefix, zero_columns=columns.to(attentions[0].device)
    )
    out = read_out(R, num_prefix, readout)  # [P]
    return out.masked_fill(mask.to(out.device), 0.0)


def inspect(run: Any, layer: int = -1, k: float = 5.0, min_ratio: float = 2.0) -> dict[str, Any]:
    """The register / high-norm artefact inspector for a cached ViT run (`vtdemo.explain.runs.ClassifierRun`;
    caption: `CAPTION`).

    Returns {"norms": [L, gh, gw] patch-token norms after every block, "outliers": [gh, gw] bool (found on `layer`),
    "threshold": float, "layer": the block index used, "prefix_norms": [L, prefix] (CLS / DIST / registers),
    "prefix_names": their names}.
    """
    from ..errors import ExplainError
    from .runs import with_block_outputs

    run = with_block_outputs(run)  # a fast run: its block outputs from the exact model, once
    if run.tokens is None:
        raise ExplainError(f"{run.loaded.id}: the artefact inspector needs a ViT run (with its block outputs)")
    cfg = run.loaded.config
    norms = token_norms(run.tokens, cfg.num_prefix_tokens, run.patch_grid)  # [L, gh, gw]
    if not -norms.shape[0] <= layer < norms.shape[0]:
        raise ExplainError(f"layer {layer} is out of range: the model has {norms.shape[0]} blocks")
    index = range(norms.shape[0])[layer]
    outliers, threshold = find_outliers(norms[index], k, min_ratio)
    names = (
        (["CLS"] if cfg.class_token else [])
        + (["DIST"] if cfg.distilled else [])
        + [f"register {i + 1}" for i in range(cfg.reg_tokens)]
    )
    return {
        "norms": norms,
        "outliers": outliers,
        "threshold": threshold,
        "layer": index,
        "prefix_norms": prefix_norms(run.tokens, cfg.num_prefix_tokens),
        "prefix_names": names,
    }
