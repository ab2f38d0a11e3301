"""RT-DETR views (Zhao et al., CVPR 2024, "DETRs Beat YOLOs on Real-time Object Detection", arXiv 2304.08069).

Deformable attention has no full attention map: each decoder query samples P points per head and feature level
around its reference box and mixes them with softmax weights. So the views differ from DETR's:

- `sampling_points`: where one detection's query looked in one decoder layer (default the last): every head's and
  level's P sampling locations (x, y in [0, 1] of the photo, which the model sees squashed to its square input) with
  their attention weights, and the reference box they were placed around. `sampling_splat` lays the same weights on
  the stride-8 grid (bilinear splatting), a map for the CLI and the API.
- `aifi_attention`: the one dense attention, AIFI's self-attention on the top (stride-32) level, at a point: 'row' =
  where that cell looks (a softmax row, sums to 1), 'column' = how strongly every cell looks at it.
- `gradcam_levels` / `encoder_gradcam`: Grad-CAM (Selvaraju et al. 2017) on the hybrid encoder's fused maps, the
  features every decoder layer samples, for a detection's class logit or one box edge. Per level l with maps A_l
  [C, h_l, w_l] and gradients G_l: alpha_l = mean_hw(G_l) [C], cam_l = ReLU(sum_c alpha_l,c A_l,c) [h_l, w_l];
  each cam_l is upsampled bilinearly to the stride-8 grid and the levels are summed (G_l: total derivatives, so a
  finer level also counts what reaches the output through the coarser maps built from it). What it ignores: where
  inside a level the gradient sits (only its spatial mean weights the channels), and everything the decoder does
  with the sampled values beyond that mean; its resolution is the stride-8 grid at best, stride 32 for what only the
  top level carries.

Inputs are a `vtdemo.models.rtdetr.RtDetrOutput` (batch of one unless `batch_index` says) and the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BOX_EDGES = ("x0", "y0", "x1", "y1")


@dataclass
class SamplingPoints:
    """One query's sampling points in one decoder layer (nh heads, L levels, P points per head and level).

    locations: [nh, L, P, 2] (x, y) in [0, 1] of the model input (= of the photo, squashed); weights: [nh, L, P],
    each head's softmax over its L*P points (a head's weights sum to 1); reference: [4] the reference box, normalised
    (cx, cy, w, h); layer: the decoder layer index (0-based); shapes: (h, w) of each level.
    """

    locations: Tensor
    weights: Tensor
    reference: Tensor
    layer: int
    shapes: list[tuple[int, int]]

    def in_pixels(self, width: int, height: int) -> tuple[Tensor, Tensor]:
        """(locations [nh, L, P, 2] in photo pixels, reference box [4] xyxy in photo pixels)."""
        scale = torch.tensor([float(width), float(height)])
        cx, cy, w, h = self.reference.tolist()
        box = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * scale.repeat(2)
        return self.locations * scale, box


def _layer(out: Any, layer: int) -> int:
    n = len(out.sampling_locations)
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} is out of range: the model has {n} decoder layers")
    return layer % n


def sampling_points(out: Any, query: int, layer: int = -1, batch_index: int = 0) -> SamplingPoints:
    """The sampling points of decoder query `query` in decoder layer `layer` (-1 = the last), float32 on the CPU."""
    i = _layer(out, layer)
    Q = out.sampling_locations[i].shape[1]
    if not 0 <= query < Q:
        raise ValueError(f"query {query} is out of range: the model has {Q} queries")
    locations = out.sampling_locations[i][batch_index, query]  # [nh, L, P, 2]
    weights = out.sampling_weights[i][batch_index, query]  # [nh, L, P]
    reference = out.reference_boxes[i][batch_index, query]  # [4] cxcywh
    return SamplingPoints(
        locations=locations.detach().float().cpu(),
        weights=weights.detach().float().cpu(),
        reference=reference.detach().float().cpu(),
        layer=i,
        shapes=[tuple(s) for s in out.shapes],
    )


def sampling_splat(points: SamplingPoints, grid: tuple[int, int], head: int | None = None) -> Tensor:
    """The points' weights splatted bilinearly onto a [h, w] grid over the photo (one head, or all heads summed):
    each point adds its weight to the four cells around it, as grid_sample (align_corners=False) reads them; points
    outside the photo add nothing. Sums to the kept points' total weight."""
    h, w = grid
    locations, weights = points.locations, points.weights  # [nh, L, P, 2], [nh, L, P]
    if head is not None:
        if not -locations.shape[0] <= head < locations.shape[0]:
            raise ValueError(f"head {head} is out of range: the decoder has {locations.shape[0]} heads")
        locations, weights = locations[head : head + 1], weights[head : head + 1]
    xy = locations.reshape(-1, 2)  # [M, 2]
    wt = weights.reshape(-1)  # [M]
    px, py = xy[:, 0] * w - 0.5, xy[:, 1] * h - 0.5  # cell-centre coordinates (align_corners=False)
    x0, y0 = px.floor(), py.floor()
    out = torch.zeros(h * w)
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            share = (1 - (px - cx).abs()) * (1 - (py - cy).abs()) * wt  # [M]
            inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            out.index_add_(0, (cy[inside] * w + cx[inside]).long(), share[inside])
    return out.view(h, w)


def top_cell(out: Any, point: tuple[float, float]) -> tuple[int, int]:
    """(x, y) as fractions of the photo -> (row, col) of the top-level (AIFI) cell under it."""
    h, w = out.shapes[-1]
    fx = min(max(point[0], 0.0), 1.0 - 1e-9)
    fy = min(max(point[1], 0.0), 1.0 - 1e-9)
    return int(fy * h), int(fx * w)


def aifi_attention(
    out: Any,
    point: tuple[float, float],
    layer: int = -1,
    head: int | None = None,
    direction: str = "row",
    batch_index: int = 0,
) -> Tensor:
    """AIFI self-attention at the top-level cell under `point` ((x, y) fractions of the photo): [h, w] on the top
    (stride-32) grid, head mean or one head. Needs an output computed with return_attn=True."""
    if out.aifi_attn is None:
        raise ValueError("this RT-DETR output has no AIFI attention: run the model with return_attn=True")
    if not -len(out.aifi_attn) <= layer < len(out.aifi_attn):
        raise ValueError(f"layer {layer} is out of range: the model has {len(out.aifi_attn)} AIFI layers")
    h, w = out.shapes[-1]
    r, c = top_cell(out, point)
    attn = out.aifi_attn[layer][batch_index]  # [nh, hw, hw]
    if head is not None and not -attn.shape[0] <= head < attn.shape[0]:
        raise ValueError(f"head {head} is out of range: AIFI has {attn.shape[0]} heads")
    index = r * w + c
    if direction == "row":
        picked = attn[:, index]  # [nh, hw]
    elif direction == "column":
        picked = attn[:, :, index]  # [nh, hw]
    else:
        raise ValueError(f"direction must be 'row' or 'column', not {direction!r}")
    fused = picked.float().mean(0) if head is None else picked[head].float()  # [hw]
    return fused.detach().cpu().view(h, w)


def gradcam_levels(maps: list[Tensor], grads: list[Tensor], size: tuple[int, int]) -> Tensor:
    """Grad-CAM over feature levels: maps and grads [C, h_l, w_l] per level -> [h, w] at `size` (the finest grid).
    cam_l = ReLU(sum_c mean_hw(grad_l,c) * map_l,c); each upsampled bilinearly (align_corners=False) and summed."""
    total = torch.zeros(size)
    for a, g in zip(maps, grads, strict=True):
        alpha = g.float().mean(dim=(1, 2))  # [C]
        cam = torch.relu((a.float() * alpha[:, None, None]).sum(0))  # [h_l, w_l]
        if tuple(cam.shape) != tuple(size):
            cam = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        total += cam
    return total


def detection_scalar(out: Any, query: int, class_index: int, target: str, batch_index: int = 0) -> Tensor:
    """The number a relevance map explains: the class logit of (query, class), or one box edge ('x0', 'y0', 'x1',
    'y1') of the query's box in normalised input coordinates."""
    if target == "class":
        return out.logits[batch_index, query, class_index]
    cx, cy, w, h = out.boxes[batch_index, query].unbind(-1)
    edges = {"x0": cx - w / 2, "y0": cy - h / 2, "x1": cx + w / 2, "y1": cy + h / 2}
    if target not in edges:
        raise ValueError(f"target must be 'class' or one of {BOX_EDGES}, not {target!r}")
    return edges[target]


def encoder_gradients(
    model: Any, x: Tensor, query: int, class_index: int, names: tuple[str, ...]
) -> tuple[list[Tensor], dict[str, list[Tensor]]]:
    """The encoder's fused maps ([C, h_l, w_l] per level) and, per target name ('class' or a box edge), the gradient
    of that target with respect to each map. Total derivatives: the bottom-up path builds each coarser map from the
    finer one, so a fine map's gradient includes what reaches the output through the coarser maps too. One forward,
    one backward per name; the model is not edited and no `.grad` accumulates (`torch.autograd.grad`)."""
    grads: dict[str, list[Tensor]] = {}
    with torch.inference_mode(False), torch.enable_grad():
        xin = x.detach().clone().requires_grad_(True)
        out = model(xin)
        maps = out.encoder_maps  # [1, C, h_l, w_l] per level
        for i, name in enumerate(names):
            scalar = detection_scalar(out, query, class_index, name)
            found = torch.autograd.grad(scalar, maps, retain_graph=i < len(names) - 1)
            grads[name] = [g[0].detach() for g in found]
    return [m[0].detach() for m in maps], grads


def encoder_gradcam(model: Any, x: Tensor, query: int, class_index: int, target: str = "class") -> dict[str, Tensor]:
    """Grad-CAM on the encoder's fused maps for one detection, on the stride-8 grid [h0, w0] (`gradcam_levels`).

    x: the run's input [1, 3, H, W]; target 'class' -> {"class": map}; 'box' -> one map per box edge
    {"x0", "y0", "x1", "y1"} (the gradient of that edge's coordinate: the map shows the features that push the edge
    right, for x, or down, for y; the ReLU drops those that push it the other way).
    """
    names = ("class",) if target == "class" else BOX_EDGES
    maps, grads = encoder_gradients(model, x, query, class_index, names)
    size = (int(maps[0].shape[-2]), int(maps[0].shape[-1]))
    return {name: gradcam_levels(maps, grads[name], size) for name in names}
