"""Explanations: what each transformer looked at. Pure tensor functions, no PIL or Gradio.

- `vit`: attention rollout (Abnar & Zuidema 2020), gradient-weighted class-specific relevance (Chefer et al. 2021),
  last-layer CLS attention per head.
- `swin`: window-aware rollout through shifted windows and patch merging; the attention of the window around a point.
- `detr`: decoder cross-attention per detection, encoder self-attention at a pixel.
- `gradcam`: Grad-CAM (Selvaraju et al. 2017) on ViT / DeiT tokens and Swin's last stage.
- `detr_relevance`: relevance per DETR detection, class or box edges (Chefer, Gur & Wolf, ICCV 2021).
- `rtdetr`: RT-DETR's views: a detection's deformable sampling points, AIFI's attention at a point, Grad-CAM on the
  hybrid encoder's fused maps.
- `stages`: the first three principal components of each Swin stage's tokens, as colours.
- `matching`: DETR's Hungarian set matching and loss terms against ground-truth boxes.
- `deletion`: sanity checks for any map (deletion and insertion curves and their areas).
- `registry` (what each method is) with its built-in entries in `methods`; `runs` (cached forward passes);
  `api` (dispatch through the registry, `explain`, `deletion_check`); `compare` (all methods side by side).
- `artefacts`: the high-norm "artefact" tokens of plain ViTs (Darcet et al. 2024): token norms on the grid, the
  outliers, and a rollout with them masked out.

Every map is returned on the model's own token grid, scaled so that its maximum is 1 (`normalize_map`).
"""

from __future__ import annotations

import torch


def normalize_map(m: torch.Tensor) -> torch.Tensor:
    """Scale a non-negative map to [0, 1] by its maximum (min stays where it is); an all-zero map stays zero."""
    m = m.float().clamp(min=0)
    top = m.max()
    return m / top if top > 0 else m


# The built-in methods register themselves in `registry` (as timm's models/__init__.py imports its model modules);
# last, so that they may use what this module defines.
from . import methods  # noqa: E402,F401
