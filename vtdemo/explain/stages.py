"""What each Swin stage sees: the first three principal components of a stage's tokens, shown as RGB.

Swin (Liu et al. 2021, arXiv 2103.14030, §3.1) builds a feature pyramid: patch merging halves the token grid at
each stage (Swin-T at 224 px: 56 x 56, 28 x 28, 14 x 14, 7 x 7 tokens) while the channels double. Colouring each
stage's tokens by their first three principal components (PCA over the tokens of one image, as in the feature
maps of DINOv2, Oquab et al. 2023, arXiv 2304.07193, Fig. 1) shows which parts of the image a stage groups
together, from local texture in stage 1 to larger parts in stage 4.

The tokens are read with forward hooks on the model's stages (`model.layers[s]`, output [B, H, W, C] after the
stage's blocks; no model edit); the final LayerNorm is not applied. PCA by SVD of the centred [H*W, C] matrix in
float64. Signs: a principal component's sign is arbitrary; we make each component's largest-magnitude loading
positive, so the colours are deterministic. Each colour channel is its component's projection scaled by min and max
over the grid to [0, 1] (a constant channel is 0). What it ignores: everything but the three directions of largest
variance in one image (`explained` says how much of the variance they hold), and the classifier's head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..device import inference


@dataclass
class StagePCA:
    """One stage. rgb: [H, W, 3] float in [0, 1] (channel k = principal component k); explained: fraction of the
    tokens' variance held by each of the three components; components: [3, C] unit loadings."""

    stage: int  # 0-based
    grid: tuple[int, int]
    channels: int
    rgb: Tensor
    explained: list[float]
    components: Tensor

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage + 1,
            "grid": list(self.grid),
            "channels": self.channels,
            "explained": [round(v, 6) for v in self.explained],
            "rgb": [[[round(float(c), 4) for c in px] for px in row] for row in self.rgb],
        }


def stage_tokens(model: Any, x: Tensor) -> list[Tensor]:
    """Forward `x` [1, 3, H, W] through a `vtdemo.models.swin.SwinTransformer`; each stage's output tokens
    [H_s, W_s, C_s] (stage 1 first), read by forward hooks."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"stage PCA explains one image: expected x [1, 3, H, W], got {list(x.shape)}")
    captured: list[Tensor] = []
    hooks = [
        stage.register_forward_hook(lambda _m, _i, out: captured.append(out[0][0].detach())) for stage in model.layers
    ]  # out = (tokens [1, H, W, C], attentions)
    try:
        with inference(x.device):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return captured


def pca_rgb(tokens: Tensor, k: int = 3) -> tuple[Tensor, list[float], Tensor]:
    """tokens [H, W, C] -> (rgb [H, W, k] in [0, 1], explained variance ratio of each component [k], components
    [k, C]). Components beyond the data's rank are zero (zero colour, zero explained)."""
    H, W, C = tokens.shape
    X = tokens.reshape(H * W, C).double()  # [HW, C]
    X = X - X.mean(dim=0, keepdim=True)
    _, S, Vt = torch.linalg.svd(X, full_matrices=False)  # S [r], Vt [r, C], r = min(HW, C)
    total = float((S**2).sum())
    comps = torch.zeros(k, C, dtype=torch.float64)
    explained = [0.0] * k
    for i in range(min(k, S.numel())):
        if total > 0 and float(S[i]) > 1e-12 * float(S[0]):
            v = Vt[i]
            comps[i] = v if v[v.abs().argmax()] > 0 else -v  # the largest loading positive
            explained[i] = float(S[i] ** 2) / total
    proj = X @ comps.T  # [HW, k]
    lo, hi = proj.min(dim=0).values, proj.max(dim=0).values  # [k]
    span = hi - lo
    rgb = torch.where(
        span > 0, (proj - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(proj)
    )
    return rgb.view(H, W, k).float(), explained, comps.float()  # [HW, k] -> [H, W, k]


def stage_pca(model: Any, x: Tensor) -> list[StagePCA]:
    """The three-component PCA colouring of every stage of a Swin model for one input x [1, 3, H, W]."""
    out = []
    for s, tokens in enumerate(stage_tokens(model, x)):
        rgb, explained, comps = pca_rgb(tokens.float().cpu())
        out.append(
            StagePCA(s, (int(tokens.shape[0]), int(tokens.shape[1])), int(tokens.shape[2]), rgb, explained, comps)
        )
    return out


def run_stage_pca(run: Any) -> list[StagePCA]:
    """`stage_pca` for a cached Swin `ClassifierRun` (one more forward pass, without attention), on the exact
    PyTorch model: a fast engine's compiled graph has no stages to hook (`vtdemo.engine.exact_model`)."""
    from ..engine import exact_model
    from ..errors import ExplainError

    if run.family != "swin":
        raise ExplainError(f"stage colours apply to Swin models (patch merging); {run.loaded.id} is {run.family}")
    return stage_pca(exact_model(run.loaded).model, run.x)
