"""Grad-CAM for ViT / DeiT and Swin (Selvaraju et al., ICCV 2017, "Grad-CAM: Visual Explanations from Deep Networks
via Gradient-based Localization", arXiv 1610.02391), the baseline the transformer-explainability papers compare
against.

For a class c and a layer's activations A [C, H, W] on the token grid: weights a_k = mean over (H, W) of
d y_c / d A_k (y_c the pre-softmax logit), map = ReLU(sum_k a_k A_k), [H, W].

Which activations. The public reference, jacobgil/pytorch-grad-cam (`grad-cam` on PyPI), explains ViTs with
`target_layers=[model.blocks[-1].norm1]` and a `reshape_transform` that drops the CLS token and lays the patch
tokens on their grid (its `usage_examples/vit_example.py`); for Swin it takes the last stage's tokens, already a
[B, H, W, C] grid (its `swinT_example.py` uses a block inside that stage). We do the same with forward hooks, no
model edit:
- ViT / DeiT: the *output* of the last block's first LayerNorm (what the hook of pytorch-grad-cam captures), patch
  tokens only (the CLS and DIST prefix dropped), [P, C] -> [gh, gw, C];
- Swin: the output of the last stage, [H, W, C] (7 x 7 for Swin-T 224), before the final LayerNorm and pooling.
Differences from pytorch-grad-cam: it scales the map to [0, 1] by min and max and resizes it to the input with
OpenCV; we return the raw map on the token grid (`vtdemo.explain.normalize_map` scales it by its maximum) and let
the renderer upsample. What it ignores: everything after the chosen layer enters only through the gradient's
spatial mean, so the map is as coarse as that layer's grid and blind to where inside it the gradient sits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def _first(output: Any) -> Tensor:
    """A module's output tensor (a Swin stage returns (tokens, attentions))."""
    return output[0] if isinstance(output, tuple) else output


def layer_gradients(model: nn.Module, layer: nn.Module, x: Tensor, class_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """Forward `x` [1, 3, H, W], capture `layer`'s output with a forward hook, and differentiate logit
    `class_index` with respect to it. Returns (logits [K], activations, gradients), detached, activations and
    gradients in the layer's own shape with the batch dimension dropped. Only that gradient is computed
    (`torch.autograd.grad`): no `.grad` accumulates on parameters or the input."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"Grad-CAM explains one image: expected x [1, 3, H, W], got {list(x.shape)}")
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(_first(out)))
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            logits = model(x).logits[0]  # [K]
            (grad,) = torch.autograd.grad(logits[class_index], captured[-1])
    finally:
        handle.remove()
    return logits.detach(), captured[-1][0].detach(), grad[0].detach()


def gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM on a grid: activations and gradients [H, W, C] -> ReLU(sum_c mean_hw(grad_c) * act_c), [H, W]."""
    weights = gradients.float().mean(dim=(0, 1))  # [C]
    return torch.relu((activations.float() * weights).sum(dim=-1))  # [H, W]


def vit_gradcam(model: Any, x: Tensor, class_index: int, block: int = -1) -> Tensor:
    """Grad-CAM of a `vtdemo.models.vit.VisionTransformer` at the output of `blocks[block].norm1`: [gh, gw], the
    patch grid of this input (which may not be the trained size)."""
    cfg = model.cfg
    _, act, grad = layer_gradients(model, model.blocks[block].norm1, x, class_index)  # [N, C] each
    gh, gw = x.shape[-2] // cfg.patch_size, x.shape[-1] // cfg.patch_size
    prefix = cfg.num_prefix_tokens
    act = act[prefix:].reshape(gh, gw, -1)  # [P, C] -> [gh, gw, C]
    grad = grad[prefix:].reshape(gh, gw, -1)  # [P, C] -> [gh, gw, C]
    return gradcam(act, grad)


def swin_gradcam(model: Any, x: Tensor, class_index: int, stage: int = -1) -> Tensor:
    """Grad-CAM of a `vtdemo.models.swin.SwinTransformer` at the output of `layers[stage]`: [H_s, W_s]."""
    _, act, grad = layer_gradients(model, model.layers[stage], x, class_index)  # [H, W, C] each
    return gradcam(act, grad)
