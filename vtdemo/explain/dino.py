"""What a self-supervised ViT sees: DINO's attention heads and masks, DINOv2's patch features as colours.

- *Heads* (Caron et al., ICCV 2021, "Emerging Properties in Self-Supervised Vision Transformers", arXiv 2104.14294,
  Fig. 1 and 3; `visualize_attention.py` of facebookresearch/dino): the last layer's attention of the CLS token to
  every patch, one map per head. *DINO's mask* keeps, per head, the largest attention values that together hold
  `keep` (60 %) of the head's attention mass over the patches: sort ascending, cumulative sum of the normalised
  values, keep where it exceeds 1 - keep (so the value that crosses the line is kept too).
- *Patch features* (Oquab et al., TMLR 2024, "DINOv2", arXiv 2304.07193, Fig. 1 and its demo notebooks): the patch
  tokens after the final norm, a first PCA over the patches of one or more photos, the background removed by a
  threshold on the first component (scaled to [0, 1] over all patches), a second PCA over the foreground patches
  only whose first three components, each scaled to [0, 1], are the red, green and blue of each patch. Fitted on two
  photos at once, matching parts get the same colours. The first component's sign is arbitrary: we call
  foreground the side that covers fewer patches on the image border than inside it (objects sit away from the
  frame); DINOv2's notebooks pick the side and threshold by hand per photo set. Background patches are black.

Pure functions on tensors; `vtdemo.pipeline` runs the model and hands them what they read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .stages import pca_rgb

#: DINO's mask: the share of each head's attention mass kept (its paper's figures and `--threshold 0.6`).
MASS_KEPT = 0.6
#: The threshold on the first principal component (scaled to [0, 1]) above which a patch is foreground.
FOREGROUND_THRESHOLD = 0.5


def head_maps(attention: Tensor, num_prefix: int, grid: tuple[int, int]) -> Tensor:
    """One layer's attention [nh, N, N] -> the CLS token's attention to each patch, per head [nh, gh, gw] (not
    renormalised: a head that looks at prefix tokens has less mass on the patches)."""
    nh = attention.shape[0]
    return attention[:, 0, num_prefix:].float().reshape(nh, *grid)  # [nh, P] -> [nh, gh, gw]


def mass_mask(maps: Tensor, keep: float = MASS_KEPT) -> Tensor:
    """DINO's mask: maps [nh, ...] (non-negative) -> bool [nh, ...], per head the largest values holding `keep` of
    that head's total (see the module docstring)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], not {keep}")
    flat = maps.reshape(maps.shape[0], -1).double()  # [nh, P]
    values, order = torch.sort(flat, dim=1)  # ascending
    cumulative = torch.cumsum(values / values.sum(dim=1, keepdim=True).clamp_min(1e-30), dim=1)  # [nh, P]
    kept_sorted = cumulative > 1.0 - keep
    kept = torch.empty_like(kept_sorted)
    kept.scatter_(1, order, kept_sorted)  # back to patch order
    return kept.reshape(maps.shape)


@dataclass
class FeatureColours:
    """One photo's patch features as colours. rgb [gh, gw, 3] in [0, 1] (background black); foreground [gh, gw]
    bool; first [gh, gw] the first principal component scaled to [0, 1] over all photos' patches."""

    rgb: Tensor
    foreground: Tensor
    first: Tensor


def _first_component(X: Tensor) -> Tensor:
    """[M, C] -> the projection of each row on the first principal component, scaled to [0, 1] over the rows."""
    proj = pca_rgb(X.unsqueeze(0), 1)[0]  # [1, M, 1], already min-max scaled
    return proj.reshape(-1)


def _border(grid: tuple[int, int]) -> Tensor:
    """bool [gh*gw]: the patches on the image's border."""
    edge = torch.zeros(grid, dtype=torch.bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    return edge.reshape(-1)


def feature_colours(
    features: list[Tensor], grids: list[tuple[int, int]], threshold: float = FOREGROUND_THRESHOLD
) -> list[FeatureColours]:
    """Patch features of one or more photos ([P_i, C] each, on grids (gh_i, gw_i)) -> their colours, with one PCA
    fitted on all of them (see the module docstring for the recipe and the foreground rule)."""
    if len(features) != len(grids) or not features:
        raise ValueError("one grid per photo's features, at least one photo")
    X = torch.cat([f.float().cpu() for f in features], dim=0)  # [M, C], M = sum of P_i
    first = _first_component(X)  # [M] in [0, 1]
    border = torch.cat([_border(g) for g in grids])  # [M]
    fg = first > threshold
    inside_share = fg[~border].float().mean() if (~border).any() else fg.float().mean()
    if fg[border].float().mean() > inside_share:  # the arbitrary sign put the background on top: flip it
        first = 1.0 - first
        fg = first > threshold
    rgb = torch.zeros(X.shape[0], 3)
    chosen = fg if int(fg.sum()) >= 3 else torch.ones_like(fg)  # too few foreground patches: colour them all
    rgb[chosen] = pca_rgb(X[chosen].unsqueeze(0))[0].reshape(-1, 3)  # [1, F, 3] -> [F, 3]
    out, start = [], 0
    for (gh, gw), f in zip(grids, features, strict=True):
        end = start + f.shape[0]
        out.append(
            FeatureColours(
                rgb=rgb[start:end].reshape(gh, gw, 3),
                foreground=chosen[start:end].reshape(gh, gw),
                first=first[start:end].reshape(gh, gw),
            )
        )
        start = end
    return out
