"""Layer-wise relevance propagation (LRP) for ViT / DeiT: AttnLRP and CP-LRP, for any class.

Implements
- AttnLRP: Achtibat, Hatefi, Dreyer, Jain, Wiegand, Lapuschkin & Samek, "AttnLRP: Attention-Aware Layer-Wise
  Relevance Propagation for Transformers", ICML 2024 (arXiv 2402.05602);
- CP-LRP: Ali, Schnake, Eberle, Montavon, Müller & Wolf, "XAI for Transformers: Better Explanations through
  Conservative Propagation", ICML 2022 (arXiv 2202.07304), the conservative baseline.
Public reference implementation: rachtibat/LRP-eXplains-Transformers (PyPI `lxt`, `lxt/efficient/rules.py` and
`lxt/efficient/patches.py`), which, like us, writes every rule as a modified gradient so that one backward pass
gives relevance = input x modified gradient ("Gradient x Input framework"). tests/parity/test_explain_lrp.py checks our
maps against lxt's own patched models on the same weights and against an explicit, layer-by-layer LRP written from the
papers' equations.

How it runs. `vit_lrp` walks our `VisionTransformer`'s modules in a relevance-aware forward pass (the model file is
untouched and its `forward` is not called), back-propagates the chosen logit once with `torch.autograd.grad` and
multiplies the gradient at the pixels by the pixels. Rule by operation (R = relevance, g = modified gradient):

- Linear / Conv (patch conv, q/k/v, out-proj, MLP fc1/fc2, head), both rules: epsilon rule with epsilon -> 0
  (LRP-0), i.e. the plain gradient; the bias is a neuron of its own and keeps its share.
- LayerNorm, both rules: the standard deviation is a constant; the centring and the affine scale are linear and
  pass R by the epsilon rule; beta keeps its share.
- GELU, both rules: identity rule (AttnLRP eq. 9 in lxt's numbering): R passes unchanged, as GELU(x) = x Phi(x) with
  Phi(x) held constant.
- residual add, + position embedding, both rules: epsilon rule on a sum, R split in proportion to the summands
  (the plain gradient).
- softmax: AttnLRP's softmax rule R_in = x (R_out - s sum(R_out)), which is Gradient x Input of the softmax;
  CP-LRP: the probabilities are constants, no R reaches q and k.
- A @ V and q k^T: AttnLRP's uniform rule (eq. 7 in lxt's numbering): each factor gets half of the epsilon-rule
  relevance (gradient / 2); CP-LRP: A is a constant, so A @ V is linear in V and V gets all of it.
- [CLS] readout and DeiT's two-head average, both rules: linear, the plain gradient.

The two rules differ only inside attention: CP-LRP (as in lxt's torchvision ViT map, which also applies AttnLRP
outside attention) treats the attention probabilities as constants, AttnLRP also sends relevance through the
softmax into the queries and keys. At the input, R_pixel = x * g (the epsilon rule of the patch convolution, per
pixel); the map sums it over channels and over the pixels of each patch (or returns it per pixel).

Conservation. With the modified gradient the network is, for CP-LRP, a function that is linear (homogeneous of
degree one) in the pixels and all additive parameters together, so
    logit_c = sum(map) + R(conv, q/k/v, proj, fc1, fc2 and head biases) + R(LayerNorm betas)
              + R(position embedding) + R([CLS] / [DIST] tokens)
exactly, each term being (that tensor) x (its modified gradient); tests check this to float64 precision. AttnLRP
adds one non-conservative step, the softmax: its rule keeps the relevance of an implicit bias, sum(R_out) -
sum(R_in) = sum(R_out) - x.(R_out - s sum R_out) per row, so the total differs from the logit by that amount too.
Maps are signed: positive pixels speak for the class, negative ones against it; the sum of the map is typically a
part of the logit, not all of it (the remainder is in the terms above).

Where we differ from lxt: GELU's identity rule multiplies the gradient by Phi(x) = GELU(x) / x in closed form (lxt
divides by x + 1e-10); lxt's ViT example adds zennit's gamma rule on Linear / Conv layers, which we do not (epsilon
-> 0 everywhere); the uniform rule is applied by halving the gradient once at the output of each product (A @ V and
q k^T), which gives each factor half; lxt divides q and k by 4 and v by 2 instead, which is the same when nothing
else enters the softmax (ViT), while in Swin our way gives the relative-position bias half of the score relevance,
like the q k^T term next to it. LayerNorm runs PyTorch's fused kernel forward with a hand-written constant-std
backward, (g w - mean(g w)) / sigma, the gradient of lxt's `layer_norm_forward`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vit import Block, VisionTransformer

__all__ = ["RESOLUTIONS", "RULES", "attention", "gelu", "input_relevance", "layer_norm", "uniform_rule", "vit_lrp"]

RULES = ("attnlrp", "cplrp")
RESOLUTIONS = ("patch", "pixel")


# ----------------------------------------------------------------------------------------------------------------
# The rules, as modified gradients of a forward pass that computes the same values as the model.


class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; the gradient is multiplied by `factor` in the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def uniform_rule(x: Tensor, n: int = 2) -> Tensor:
    """AttnLRP's uniform rule for one factor of an n-linear product: the factor gets 1/n of the relevance."""
    return _ScaleGradient.apply(x, 1.0 / n)


class _LayerNormConstantStd(torch.autograd.Function):
    """LayerNorm whose backward treats the standard deviation as a constant: d/dx = (g w - mean(g w)) / sigma.

    The forward is PyTorch's fused kernel (same values as `nn.LayerNorm`); weight and bias get their ordinary
    gradients when they require one (the conservation tests read the relevance that beta keeps)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
        y, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean, rstd = ctx.saved_tensors
        gw = g if weight is None else g * weight
        grad_x = (gw - gw.mean(dim=-1, keepdim=True)) * rstd if ctx.needs_input_grad[0] else None
        flat = g.reshape(-1, g.shape[-1])  # [rows, C]
        grad_w = (flat * ((x - mean) * rstd).reshape(flat.shape)).sum(0) if ctx.needs_input_grad[1] else None
        grad_b = flat.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """LayerNorm over the last axis with its standard deviation taken as a constant (same values as `norm(x)`)."""
    return _LayerNormConstantStd.apply(x, norm.weight, norm.bias, norm.eps)


class _GeluIdentity(torch.autograd.Function):
    """Exact GELU(x) = x Phi(x) forward; backward g * Phi(x), i.e. Phi held constant: the identity rule."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return F.gelu(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return g * (0.5 * (1.0 + torch.erf(x * 2**-0.5)))


def gelu(x: Tensor) -> Tensor:
    """Exact GELU with the identity rule: relevance GELU(x) passes to x unchanged (x * gradient = GELU(x) * g)."""
    return _GeluIdentity.apply(x)


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None, rule: str) -> Tensor:
    """softmax(q k^T * scale + bias) @ v under `rule`. q, k, v: [B, nh, N, hd]; bias broadcastable to [B, nh, N, N]
    (additive, may hold -inf for blocked pairs). Returns [B, nh, N, hd]."""
    if rule == "attnlrp":
        # One gradient halving on a product's output gives each of its two factors half the relevance.
        scores = uniform_rule((q * scale) @ k.transpose(-2, -1))  # [B, nh, N, N]
        if bias is not None:
            scores = scores + bias
        return uniform_rule(scores.softmax(dim=-1) @ v)  # [B, nh, N, hd]
    with torch.no_grad():  # CP-LRP: the attention probabilities are constants
        scores = (q * scale) @ k.transpose(-2, -1)  # [B, nh, N, N]
        attn = (scores if bias is None else scores + bias).softmax(dim=-1)
    return attn @ v  # [B, nh, N, hd]


def input_relevance(x: Tensor, grad: Tensor, patch: int, resolution: str) -> Tensor:
    """Gradient x input at the pixels, summed over channels: [H, W]; with `resolution="patch"` also summed over the
    pixels of each `patch` x `patch` cell: [H/p, W/p]. x, grad: [1, C, H, W]. float32 (float64 for a float64 x)."""
    R = (x * grad).sum(dim=1)[0].detach()  # [H, W]
    R = R if R.dtype == torch.float64 else R.float()
    if resolution == "pixel":
        return R
    H, W = R.shape
    return R.view(H // patch, patch, W // patch, patch).sum(dim=(1, 3))  # [H/p, p, W/p, p] -> [gh, gw]


def check_request(x: Tensor, num_classes: int, class_index: int, rule: str, resolution: str) -> None:
    """Refuse a batch other than one image, an unknown class, rule or resolution, naming what is allowed."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"LRP explains one image: expected x [1, 3, H, W], got {list(x.shape)}")
    if not 0 <= class_index < num_classes:
        raise ValueError(f"class index {class_index} is out of range: this model has classes 0..{num_classes - 1}")
    if rule not in RULES:
        raise ValueError(f"LRP rule must be one of {RULES}, not {rule!r}")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, not {resolution!r}")


def explain(forward: Callable[[Tensor], Tensor], x: Tensor, class_index: int, patch: int, resolution: str) -> Tensor:
    """Run the relevance-aware `forward` (x -> logits [1, K]) with gradients on, back-propagate the logit of
    `class_index` to the pixels and return the input relevance (see `input_relevance`)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logit = forward(x)[0, class_index]
        (grad,) = torch.autograd.grad(logit, x)
    return input_relevance(x, grad, patch, resolution)


# ----------------------------------------------------------------------------------------------------------------
# ViT / DeiT.


def vit_forward(model: VisionTransformer, x: Tensor, rule: str) -> Tensor:
    """The model's logits [B, K] for x [B, 3, H, W], computed with the rules of `rule` (same values as `model(x)`)."""
    if tuple(x.shape[-2:]) != model.patch_embed.img_size:
        raise ValueError(f"input is {tuple(x.shape[-2:])}, this ViT expects {model.patch_embed.img_size}")
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)  # [B, C, gh, gw] -> [B, P, C]
    if model.cls_token is None or model.reg_token is not None:
        raise ValueError("LRP is implemented for ViTs with a CLS token and no registers")
    prefix = [model.cls_token] if model.dist_token is None else [model.cls_token, model.dist_token]
    h = torch.cat([*(t.expand(x.shape[0], -1, -1) for t in prefix), tokens], dim=1)  # [B, N, C]
    h = h + model.pos_embed  # [B, N, C]
    for block in cast(list[Block], model.blocks):
        att = block.attn
        B, N, C = h.shape
        y = layer_norm(h, block.norm1)
        qkv = att.qkv(y).reshape(B, N, 3, att.num_heads, C // att.num_heads)  # [B, N, 3, nh, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, nh, N, hd]
        out = attention(q, k, v, att.scale, None, rule).transpose(1, 2).reshape(B, N, C)  # [B, N, nh*hd]
        h = h + att.proj(out)
        mlp = block.mlp
        h = h + mlp.fc2(gelu(mlp.fc1(layer_norm(h, block.norm2))))
    h = layer_norm(h, cast(nn.LayerNorm, model.norm))
    logits = model.head(h[:, 0])  # [B, K]
    if model.head_dist is not None:  # DeiT distilled: the average of the two heads
        logits = (logits + model.head_dist(h[:, 1])) / 2
    return logits


def vit_lrp(
    model: VisionTransformer, x: Tensor, class_index: int, rule: str = "attnlrp", resolution: str = "patch"
) -> Tensor:
    """LRP relevance of each patch (or pixel) of one image for logit `class_index` of a ViT / DeiT.

    x: [1, 3, H, W], preprocessed as the model expects. rule: "attnlrp" (Achtibat et al. 2024) or "cplrp" (Ali et
    al. 2022); see the module docstring for the rule applied to each operation. resolution: "patch" -> [gh, gw] on
    the patch grid (row-major, prefix tokens excluded), "pixel" -> [H, W]. Returns a signed float32 map (positive:
    evidence for the class), not normalised; its sum is the part of the logit that reaches the pixels (the rest sits
    in biases, LayerNorm betas, the position embedding and the [CLS] token, and, for AttnLRP, in the softmax).
    One relevance-aware forward and one backward pass; no parameter `.grad` is touched.
    """
    check_request(x, model.cfg.num_classes, class_index, rule, resolution)
    return explain(lambda inp: vit_forward(model, inp, rule), x, class_index, model.cfg.patch_size, resolution)
