"""LRP for ViT and Swin (`vtdemo.explain.lrp`, `vtdemo.explain.lrp_swin`): AttnLRP and CP-LRP.

Checked against
- the authors' package `lxt` 2.1 (rachtibat/LRP-eXplains-Transformers): its CP-LRP patch of torchvision's ViT and its
  AttnLRP rules patched into transformers' ViT, on the same weights as ours;
- an explicit layer-by-layer LRP written here from the papers' equations (no autograd), with every absorbed share
  of relevance counted, so that conservation is measured, not assumed;
- for Swin, a dense construction (global attention over the stage grid with the window/shift structure as an explicit
  mask and bias built from coordinates, merges by reshapes) that runs with lxt's own rule functions;
- properties: conservation of CP-LRP over all additive leaves, invariance to a q/k re-parameterisation, linearity in
  the explained logit, the two rules equal where attention is switched off and different where it is on.

lxt 2.1's package `__init__` imports its LLM patches, which need transformers 4 module paths; the modules used here
(`lxt/efficient/rules.py`, `patches.py`, `models/vit_torch.py`) need only torch and torchvision, so they are loaded
with the package `__init__`s bypassed (the authors' files themselves run unmodified).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F

from tests.support.weights import randomise_classifier
from vtdemo.explain import lrp, lrp_swin
from vtdemo.models.swin import SwinConfig, SwinTransformer
from vtdemo.models.vit import VisionTransformer, ViTConfig

VIT = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)  # 16 patches + CLS
# Grids 16 / 8 / 4 with window 4: shifted blocks (shift 2) in stages 0 and 1, two merges, stage 2 one window.
SWIN = SwinConfig(
    img_size=64, patch_size=4, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4, num_classes=6
)


def _vit(cfg: ViTConfig = VIT, seed: int = 0, dtype: torch.dtype = torch.float32) -> VisionTransformer:
    torch.manual_seed(seed)
    return cast(VisionTransformer, randomise_classifier(VisionTransformer(cfg), seed).to(dtype))


def _swin(cfg: SwinConfig = SWIN, seed: int = 0, dtype: torch.dtype = torch.float32) -> SwinTransformer:
    torch.manual_seed(seed)
    return cast(SwinTransformer, randomise_classifier(SwinTransformer(cfg), seed).to(dtype))


def _image(size: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _lxt():
    """lxt's rules and patches modules, loaded without its package `__init__`s (see the module docstring)."""
    if "lxt.efficient.patches" in sys.modules:
        return (
            sys.modules["lxt.efficient.rules"],
            sys.modules["lxt.efficient.patches"],
            sys.modules["lxt.efficient.models.vit_torch"],
        )
    spec = importlib.util.find_spec("lxt")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lxt is not installed (requirements-dev.txt)")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, sub in (("lxt", ""), ("lxt.efficient", "efficient"), ("lxt.efficient.models", "efficient/models")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root / sub)]
            sys.modules[name] = package
    from lxt.efficient import patches, rules
    from lxt.efficient.models import vit_torch

    return rules, patches, vit_torch


@contextmanager
def _restored(*owners_and_names):
    """lxt patches classes globally (torch.nn.LayerNorm.forward, ...): put every patched attribute back after."""
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name in owners_and_names]
    try:
        yield
    finally:
        for owner, name, value in saved:
            if value is None:
                if name in owner.__dict__:
                    delattr(owner, name)
            else:
                setattr(owner, name, value)


def _input_relevance(forward, x: torch.Tensor, c: int) -> torch.Tensor:
    """Gradient x input at the pixels of a (patched) reference model, summed over channels: [H, W]."""
    x = x.detach().clone().requires_grad_(True)
    forward(x)[0, c].backward()
    assert x.grad is not None
    return (x * x.grad).sum(1)[0].detach()


# ----------------------------------------------------------------------------------------------------------------
# lxt, the authors' implementation, on the same weights.


def _torchvision_copy(model: VisionTransformer):
    import torchvision

    cfg = model.cfg
    tv = torchvision.models.VisionTransformer(
        image_size=cfg.img_size,
        patch_size=cfg.patch_size,
        num_layers=cfg.depth,
        num_heads=cfg.num_heads,
        hidden_dim=cfg.embed_dim,
        mlp_dim=int(cfg.embed_dim * cfg.mlp_ratio),
        num_classes=cfg.num_classes,
    ).eval()
    ours = model.state_dict()
    sd = {
        "conv_proj.weight": ours["patch_embed.proj.weight"],
        "conv_proj.bias": ours["patch_embed.proj.bias"],
        "class_token": ours["cls_token"],
        "encoder.pos_embedding": ours["pos_embed"],
        "encoder.ln.weight": ours["norm.weight"],
        "encoder.ln.bias": ours["norm.bias"],
        "heads.head.weight": ours["head.weight"],
        "heads.head.bias": ours["head.bias"],
    }
    for i in range(cfg.depth):
        tvb, b = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        for theirs, mine in (
            ("ln_1", "norm1"),
            ("ln_2", "norm2"),
            ("self_attention.out_proj", "attn.proj"),
            ("mlp.0", "mlp.fc1"),
            ("mlp.3", "mlp.fc2"),
        ):
            for p in ("weight", "bias"):
                sd[f"{tvb}{theirs}.{p}"] = ours[f"{b}{mine}.{p}"]
        sd[f"{tvb}self_attention.in_proj_weight"] = ours[f"{b}attn.qkv.weight"]  # rows q, k, v in both
        sd[f"{tvb}self_attention.in_proj_bias"] = ours[f"{b}attn.qkv.bias"]
    tv.load_state_dict(sd, strict=True)
    return tv


def test_cplrp_equals_lxt_on_torchvision_vit():
    """lxt's own ViT map (`lxt.efficient.models.vit_torch.cp_LRP`: CP-LRP in attention, AttnLRP elsewhere)."""
    _, patches, vit_torch = _lxt()
    model = _vit()
    x = _image(VIT.img_size)
    tv = _torchvision_copy(model)
    with torch.no_grad():
        torch.testing.assert_close(tv(x), model(x).logits, atol=1e-5, rtol=1e-5)
    ours = {c: lrp.vit_lrp(model, x, c, "cplrp", "pixel") for c in (0, 3)}
    with _restored(*[(cls, n) for cls in vit_torch.cp_LRP for n in ("forward", "original_forward")]):
        for cls, patch in vit_torch.cp_LRP.items():
            assert patch(cls)
        for c, mine in ours.items():
            theirs = _input_relevance(tv, x, c)
            torch.testing.assert_close(mine, theirs, atol=1e-5 * theirs.abs().max().item(), rtol=1e-4)
    assert torch.nn.LayerNorm.forward is not patches.layer_norm_forward  # restored for the other tests
    assert not torch.allclose(ours[0], ours[3])


def _transformers_copy(model: VisionTransformer):
    import transformers

    cfg = model.cfg
    config = transformers.ViTConfig(
        hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        intermediate_size=int(cfg.embed_dim * cfg.mlp_ratio),
        image_size=cfg.img_size,
        patch_size=cfg.patch_size,
        num_labels=cfg.num_classes,  # type: ignore[call-arg]
        layer_norm_eps=cfg.ln_eps,
    )
    hf = transformers.ViTForImageClassification(config).eval()
    hf.config._attn_implementation = "eager"  # the attention function lxt wraps
    ours = model.state_dict()
    C = cfg.embed_dim
    sd = {
        "vit.embeddings.cls_token": ours["cls_token"],
        "vit.embeddings.position_embeddings": ours["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": ours["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": ours["patch_embed.proj.bias"],
        "vit.layernorm.weight": ours["norm.weight"],
        "vit.layernorm.bias": ours["norm.bias"],
        "classifier.weight": ours["head.weight"],
        "classifier.bias": ours["head.bias"],
    }
    for i in range(cfg.depth):
        h, b = f"vit.layers.{i}.", f"blocks.{i}."
        for theirs, mine in (
            ("layernorm_before", "norm1"),
            ("layernorm_after", "norm2"),
            ("attention.o_proj", "attn.proj"),
            ("mlp.fc1", "mlp.fc1"),
            ("mlp.fc2", "mlp.fc2"),
        ):
            for p in ("weight", "bias"):
                sd[f"{h}{theirs}.{p}"] = ours[f"{b}{mine}.{p}"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            sd[f"{h}attention.{name}.weight"] = ours[f"{b}attn.qkv.weight"][j * C : (j + 1) * C]
            sd[f"{h}attention.{name}.bias"] = ours[f"{b}attn.qkv.bias"][j * C : (j + 1) * C]
    hf.load_state_dict(sd, strict=True)
    return hf


@pytest.mark.slow
def test_attnlrp_equals_lxt_on_transformers_vit():
    """lxt's AttnLRP patches (attention wrapper, LayerNorm, GELU identity rule) on transformers' eager ViT."""
    _, patches, _ = _lxt()
    from transformers import activations
    from transformers.models.vit import modeling_vit

    model = _vit(seed=3)
    x = _image(VIT.img_size, seed=4)
    hf = _transformers_copy(model)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x).logits, model(x).logits, atol=1e-5, rtol=1e-5)
    ours = {c: lrp.vit_lrp(model, x, c, "attnlrp", "pixel") for c in (1, 4)}
    with _restored(
        (modeling_vit, "eager_attention_forward"),
        (torch.nn.LayerNorm, "forward"),
        (activations.GELUActivation, "forward"),
        (activations.GELUActivation, "original_forward"),
    ):
        modeling_vit.eager_attention_forward = patches.wrap_attention_forward(modeling_vit.eager_attention_forward)
        assert patches.patch_method(patches.layer_norm_forward, torch.nn.LayerNorm)
        assert patches.patch_method(patches.non_linear_forward, activations.GELUActivation, keep_original=True)
        for c, mine in ours.items():
            theirs = _input_relevance(lambda inp: hf(pixel_values=inp).logits, x, c)
            torch.testing.assert_close(mine, theirs, atol=1e-5 * theirs.abs().max().item(), rtol=1e-4)
    assert not torch.allclose(ours[1], lrp.vit_lrp(model, x, 1, "cplrp", "pixel"), atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Explicit LRP from the papers' equations, layer by layer, no autograd (float64). Each function takes the forward
# input(s) and the output relevance and returns the input relevance plus what it absorbed (biases, softmax).


def _lin(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, R: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Epsilon rule, epsilon -> 0: R_i = sum_j x_i W_ji R_j / z_j, z_j = sum_i x_i W_ji + b_j; b_j keeps b_j R_j/z_j."""
    z = x @ W.T + (0 if b is None else b)
    s = R / z
    return x * (s @ W), 0.0 if b is None else float((b * s).sum())


def _ln(x: torch.Tensor, norm, R: torch.Tensor) -> tuple[torch.Tensor, float]:
    """LayerNorm rule, std constant: y_j = sum_i x_i (delta_ij - 1/C) w_j / sigma + b_j, then the epsilon rule."""
    C = x.shape[-1]
    sigma = (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()  # [N, 1]
    out = torch.empty_like(x)
    absorbed = 0.0
    for n in range(x.shape[0]):
        J = (torch.eye(C, dtype=x.dtype) - 1.0 / C) * norm.weight.detach()[None, :] / sigma[n]  # [C_in, C_out]
        out[n], a = _lin(x[n], J.T, norm.bias.detach(), R[n])
        absorbed += a
    return out, absorbed


def _add(a: torch.Tensor, b: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Epsilon rule on a sum: split in proportion to the summands."""
    return a / (a + b) * R, b / (a + b) * R


def _attention_lrp(x: torch.Tensor, att, R: torch.Tensor, rule: str) -> tuple[torch.Tensor, float]:
    """x [N, C] (LayerNorm output) -> attention branch output with relevance R [N, C]: relevance of x."""
    N, C = x.shape
    nh, hd = att.num_heads, C // att.num_heads
    Wqkv, bqkv = att.qkv.weight.detach(), att.qkv.bias.detach()
    qkv = x @ Wqkv.T + bqkv  # [N, 3C]
    q, k, v = (qkv[:, i * C : (i + 1) * C].view(N, nh, hd).transpose(0, 1) for i in range(3))  # [nh, N, hd]
    scores = q @ k.transpose(1, 2) * att.scale  # [nh, N, N]
    A = scores.softmax(-1)
    o = A @ v  # [nh, N, hd]
    merged = o.transpose(0, 1).reshape(N, C)
    R_merged, absorbed = _lin(merged, att.proj.weight.detach(), att.proj.bias.detach(), R)
    R_o = R_merged.view(N, nh, hd).transpose(0, 1)  # [nh, N, hd]
    R_q, R_k = torch.zeros_like(q), torch.zeros_like(k)
    share = 2.0 if rule == "attnlrp" else 1.0  # uniform rule: A and V each get half
    # o_ip = sum_j A_ij v_jp: contribution A_ij v_jp of the pair (i, j) to output (i, p).
    contrib = A[..., None] * v[:, None, :, :]  # [nh, N_i, N_j, hd]
    frac = contrib / o[:, :, None, :] * R_o[:, :, None, :] / share  # [nh, i, j, p]
    R_v = frac.sum(1)  # [nh, N_j, hd]
    if rule == "attnlrp":
        R_A = frac.sum(-1)  # [nh, i, j]
        R_s = scores * (R_A - A * R_A.sum(-1, keepdim=True))  # softmax rule
        absorbed += float(R_A.sum() - R_s.sum())
        # s_ij = sum_d q_id k_jd * scale: each of q and k gets half of the share of (i, j, d).
        pair = q[:, :, None, :] * k[:, None, :, :] * att.scale  # [nh, i, j, d]
        frac_s = pair / scores[..., None] * R_s[..., None] / 2
        R_q, R_k = frac_s.sum(2), frac_s.sum(1)  # [nh, N, hd]
    R_qkv = torch.cat([t.transpose(0, 1).reshape(N, C) for t in (R_q, R_k, R_v)], dim=1)  # [N, 3C]
    R_x, a = _lin(x, Wqkv, bqkv, R_qkv)
    return R_x, absorbed + a


def _explicit_vit_lrp(model: Any, img: torch.Tensor, c: int, rule: str) -> tuple[torch.Tensor, float]:
    """Pixel relevance [3, H, W] of logit c and the relevance absorbed on the way (biases, betas, embeddings,
    CLS token, softmax). Conservation: sum(R_pixels) + absorbed = logit."""
    p, C = model.cfg.patch_size, model.cfg.embed_dim
    conv_w, conv_b = model.patch_embed.proj.weight.detach(), model.patch_embed.proj.bias.detach()
    patches = F.unfold(img, p, stride=p)[0].T  # [P, 3*p*p], same flattening as conv_w.view(C, -1)
    tokens = patches @ conv_w.view(C, -1).T + conv_b  # [P, C]
    h0 = torch.cat([model.cls_token.detach()[0], tokens]) + model.pos_embed.detach()[0]  # [N, C]
    hs, h = [], h0
    for blk in model.blocks:  # forward, keeping what the backward needs
        y1 = F.layer_norm(h, (C,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps).detach()
        a = blk.attn(y1[None])[0][0].detach()
        h1 = h + a
        y2 = F.layer_norm(h1, (C,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps).detach()
        u = y2 @ blk.mlp.fc1.weight.detach().T + blk.mlp.fc1.bias.detach()
        m = F.gelu(u) @ blk.mlp.fc2.weight.detach().T + blk.mlp.fc2.bias.detach()
        hs.append((h, y1, a, h1, y2, u, m))
        h = h1 + m
    hf = F.layer_norm(h, (C,), model.norm.weight, model.norm.bias, model.norm.eps).detach()
    W, b = model.head.weight.detach(), model.head.bias.detach()
    logit = float(hf[0] @ W[c] + b[c])
    absorbed = float(b[c])
    R_h = torch.zeros_like(h)
    R_h[0] = hf[0] * W[c]  # the epsilon rule of the head for logit c (relevance logit_c at its output)
    R_h, a_ = _ln(h, model.norm, R_h)
    absorbed += a_
    for blk, (h_in, y1, a, h1, y2, u, m) in zip(reversed(model.blocks), reversed(hs), strict=False):
        R_h1, R_m = _add(h1, m, R_h)
        R_g, a1 = _lin(F.gelu(u), blk.mlp.fc2.weight.detach(), blk.mlp.fc2.bias.detach(), R_m)
        R_y2, a2 = _lin(y2, blk.mlp.fc1.weight.detach(), blk.mlp.fc1.bias.detach(), R_g)  # GELU: identity rule
        R_from_mlp, a3 = _ln(h1, blk.norm2, R_y2)
        R_h1 = R_h1 + R_from_mlp
        R_hin, R_a = _add(h_in, a, R_h1)
        R_y1, a4 = _attention_lrp(y1, blk.attn, R_a, rule)
        R_from_attn, a5 = _ln(h_in, blk.norm1, R_y1)
        R_h = R_hin + R_from_attn
        absorbed += a1 + a2 + a3 + a4 + a5
    prefix_and_tokens = torch.cat([model.cls_token.detach()[0], tokens])
    R_tok, R_pos = _add(prefix_and_tokens, model.pos_embed.detach()[0], R_h)
    absorbed += float(R_pos.sum() + R_tok[0].sum())  # position embedding and CLS token keep theirs
    R_patches, a6 = _lin(patches, conv_w.view(C, -1), conv_b, R_tok[1:])
    absorbed += a6
    R_img = F.fold(R_patches.T[None], img.shape[-2:], p, stride=p)[0]  # [3, H, W]
    assert abs(float(R_img.sum()) + absorbed - logit) < 1e-9 * max(1.0, abs(logit))  # the explicit LRP conserves
    return R_img, absorbed


@pytest.mark.slow
@pytest.mark.parametrize("rule", lrp.RULES)
def test_vit_equals_explicit_lrp(rule):
    """2 blocks, 4 patches + CLS, width 8: our modified-gradient LRP equals the layer-by-layer rules."""
    cfg = ViTConfig(img_size=16, patch_size=8, embed_dim=8, depth=2, num_heads=2, num_classes=3)
    model = _vit(cfg, seed=5, dtype=torch.float64)
    x = _image(16, seed=6, dtype=torch.float64)
    for c in range(3):
        R_img, _ = _explicit_vit_lrp(model, x, c, rule)
        torch.testing.assert_close(lrp.vit_lrp(model, x, c, rule, "pixel"), R_img.sum(0), atol=1e-10, rtol=1e-8)
        patch = R_img.sum(0).view(2, 8, 2, 8).sum((1, 3))  # [gh, p, gw, p] -> [gh, gw]
        torch.testing.assert_close(lrp.vit_lrp(model, x, c, rule), patch, atol=1e-10, rtol=1e-8)


def test_softmax_and_uniform_rules_by_hand():
    """One query over two keys, one head of width 1, q = 1, k = (1, 0), v = (2, 1), no projections.

    scores s = (1, 0), A = (e, 1) / (e + 1), out = (2e + 1) / (e + 1). AttnLRP with R_out = out: A @ V gives each
    factor half, R_A_j = A_j v_j / 2, R_v_j = A_j v_j / 2; softmax rule R_s_j = s_j (R_A_j - A_j sum R_A), so
    R_s = (R_A_0 - A_0 out / 2, 0); q k^T gives q and k_0 half each of R_s_0.
    """
    e = math.e
    A0, A1 = e / (e + 1), 1 / (e + 1)
    out = 2 * A0 + A1
    R_A = torch.tensor([A0 * 2 / 2, A1 * 1 / 2], dtype=torch.float64)
    R_s0 = 1.0 * (R_A[0] - A0 * R_A.sum())
    q = torch.tensor([[[[1.0]]]], dtype=torch.float64, requires_grad=True)  # [1, nh, N_q, hd]
    k = torch.tensor([[[[1.0], [0.0]]]], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([[[[2.0], [1.0]]]], dtype=torch.float64, requires_grad=True)
    o = lrp.attention(q, k, v, 1.0, None, "attnlrp")
    assert abs(float(o.detach()) - out) < 1e-12
    o.sum().backward()  # relevance out at the output: gradient 1 times output
    torch.testing.assert_close((v * v.grad).flatten(), R_A)  # R_v_j = A_j v_j / 2
    torch.testing.assert_close(float((q * q.grad).detach()), float(R_s0) / 2)
    torch.testing.assert_close((k * k.grad).flatten(), torch.tensor([float(R_s0) / 2, 0.0], dtype=torch.float64))
    for t in (q, k, v):
        t.grad = None
    lrp.attention(q, k, v, 1.0, None, "cplrp").sum().backward()
    torch.testing.assert_close((v * v.grad).flatten(), torch.tensor([2 * A0, A1], dtype=torch.float64))
    assert q.grad is None and k.grad is None  # CP-LRP: nothing through the softmax


def test_layer_norm_and_gelu_rules_by_hand():
    """LayerNorm of x = (1, 3) (C = 2, weight 1, bias 0, eps 0): mean 2, sigma 1, y = (-1, 1). With sigma a
    constant, y_0 = (x_0 - x_1) / 2, so the relevance y_0 = -1 of output 0 goes to x as x_0 / 2 = 1/2 and
    -x_1 / 2 = -3/2. GELU's identity rule hands each unit's output GELU(u) to its input unchanged."""
    norm = torch.nn.LayerNorm(2, eps=0.0).double()
    x = torch.tensor([1.0, 3.0], dtype=torch.float64, requires_grad=True)
    y = lrp.layer_norm(x, norm)
    torch.testing.assert_close(y.detach(), torch.tensor([-1.0, 1.0], dtype=torch.float64))
    y[0].backward()  # relevance y_0 = -1 at output 0: R_x_i = x_i * d(x_0 - x_1)/2 / d x_i = (1/2, -3/2)
    torch.testing.assert_close(x * x.grad, torch.tensor([0.5, -1.5], dtype=torch.float64))
    u = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    g = lrp.gelu(u)
    torch.testing.assert_close(g.detach(), F.gelu(u.detach()))
    g.sum().backward()
    torch.testing.assert_close(u * u.grad, g.detach())  # identity rule: the relevance GELU(u) passes to u


# ----------------------------------------------------------------------------------------------------------------
# Properties.


def _additive_leaves(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter that enters the network additively: biases, LayerNorm betas, position embedding, prefix
    tokens, Swin's relative-position bias tables. (Weights multiply and are not leaves of the decomposition.)"""
    return [
        p
        for name, p in model.named_parameters()
        if name.endswith(("bias", "pos_embed", "cls_token", "dist_token", "relative_position_bias_table"))
    ]


def _conservation_gap(forward, model: torch.nn.Module, x: torch.Tensor, c: int) -> tuple[float, float, float]:
    """(logit, sum of pixel relevance, logit - all relevance at pixels and additive leaves)."""
    leaves = _additive_leaves(model)
    x = x.detach().clone().requires_grad_(True)
    logit = forward(x)[0, c]
    grads = torch.autograd.grad(logit, [x, *leaves], allow_unused=True)
    pixels = float((x * grads[0]).sum().detach())
    total = pixels + sum(
        float((p * g).sum().detach()) for p, g in zip(leaves, grads[1:], strict=False) if g is not None
    )
    return float(logit.detach()), pixels, float(logit.detach()) - total


@pytest.mark.slow
@pytest.mark.parametrize("distilled", [False, True])
def test_vit_cplrp_conserves_the_logit(distilled):
    """CP-LRP: pixels + biases + betas + embeddings + prefix tokens hold exactly the logit; AttnLRP loses some in
    the softmax. The map's sum is what reaches the pixels."""
    from dataclasses import replace

    cfg = replace(VIT, distilled=distilled, distill_head=distilled)
    model = _vit(cfg, seed=7, dtype=torch.float64)
    x = _image(cfg.img_size, seed=8, dtype=torch.float64)
    for c in (0, 2):
        logit, pixels, gap = _conservation_gap(lambda inp: lrp.vit_forward(model, inp, "cplrp"), model, x, c)
        assert abs(gap) < 1e-10 * max(1.0, abs(logit))
        assert abs(float(lrp.vit_lrp(model, x, c, "cplrp").sum()) - pixels) < 1e-10
        logit, pixels, gap = _conservation_gap(lambda inp: lrp.vit_forward(model, inp, "attnlrp"), model, x, c)
        assert abs(gap) > 1e-4  # the softmax rule is not conservative (AttnLRP says so); measured, not zero
        assert abs(float(lrp.vit_lrp(model, x, c, "attnlrp").sum()) - pixels) < 1e-10


def test_rules_differ_only_inside_attention():
    """With every attention branch switched off (output projection zero) the two rules give the same map; with it on
    they differ."""
    model = _vit(seed=9)
    x = _image(VIT.img_size, seed=10)
    assert not torch.allclose(lrp.vit_lrp(model, x, 2, "attnlrp"), lrp.vit_lrp(model, x, 2, "cplrp"), atol=1e-4)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.proj.weight.zero_()
            blk.attn.proj.bias.zero_()
    torch.testing.assert_close(lrp.vit_lrp(model, x, 2, "attnlrp"), lrp.vit_lrp(model, x, 2, "cplrp"))


@pytest.mark.parametrize("rule", lrp.RULES)
def test_vit_invariances(rule):
    """The map ignores how attention scores are parameterised (q * a, k / a give the same scores and the same map),
    ignores the other classes' head rows, and scales with the explained logit's head row."""
    model = _vit(seed=11)
    x = _image(VIT.img_size, seed=12)
    before = lrp.vit_lrp(model, x, 1, rule)
    C = VIT.embed_dim
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.weight[:C] *= 3.0
            blk.attn.qkv.bias[:C] *= 3.0
            blk.attn.qkv.weight[C : 2 * C] /= 3.0
            blk.attn.qkv.bias[C : 2 * C] /= 3.0
        model.head.weight[[0, 2, 3]] = torch.randn(3, C)
    torch.testing.assert_close(lrp.vit_lrp(model, x, 1, rule), before, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        model.head.weight[1] *= -2.0
        model.head.bias[1] *= -2.0
    torch.testing.assert_close(lrp.vit_lrp(model, x, 1, rule), -2.0 * before, atol=1e-5, rtol=1e-4)


def test_bad_requests_name_what_is_allowed():
    model = _vit()
    x = _image(VIT.img_size)
    with pytest.raises(ValueError, match="0..4"):
        lrp.vit_lrp(model, x, 5)
    with pytest.raises(ValueError, match="attnlrp"):
        lrp.vit_lrp(model, x, 0, rule="lrp")
    with pytest.raises(ValueError, match="patch"):
        lrp.vit_lrp(model, x, 0, resolution="token")
    with pytest.raises(ValueError, match="one image"):
        lrp.vit_lrp(model, torch.cat([x, x]), 0)
    with pytest.raises(ValueError, match="expects"):
        lrp.vit_lrp(model, _image(48), 0)


def test_runs_under_inference_mode_and_leaves_parameters_alone():
    model = _vit()
    x = _image(VIT.img_size)
    with torch.inference_mode():
        m = lrp.vit_lrp(model, x, 0)
    assert m.shape == (4, 4) and torch.isfinite(m).all()
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# Swin: windows, shifts, merges.


def _dense_structure(H: int, W: int, window: int, shift: int, table: torch.Tensor) -> torch.Tensor:
    """Mask + relative-position bias of one block as global attention over the H x W grid: [nh, HW, HW].

    From coordinates alone: the block rolls the grid by (-shift, -shift), so image token (r, c) sits at rolled
    (r', c') = ((r - shift) mod H, (c - shift) mod W), in window (r' // ws, c' // ws) at offset (r' % ws, c' % ws).
    Two tokens may attend iff they share a window and, on each axis, either both or neither wrapped around the
    border (r' >= H - shift). Allowed pairs get table[(dy + ws - 1) * (2 ws - 1) + dx + ws - 1], (dy, dx) the
    difference of their offsets; blocked pairs -inf.
    """
    r, c = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    r, c = ((r - shift) % H).flatten(), ((c - shift) % W).flatten()  # [HW] rolled coordinates
    wrapped_r = r >= H - shift if shift else torch.zeros_like(r, dtype=torch.bool)
    wrapped_c = c >= W - shift if shift else torch.zeros_like(c, dtype=torch.bool)
    same = (
        (r[:, None] // window == r[None, :] // window)
        & (c[:, None] // window == c[None, :] // window)
        & (wrapped_r[:, None] == wrapped_r[None, :])
        & (wrapped_c[:, None] == wrapped_c[None, :])
    )  # [HW, HW]
    dy = (r % window)[:, None] - (r % window)[None, :] + window - 1
    dx = (c % window)[:, None] - (c % window)[None, :] + window - 1
    bias = table[(dy * (2 * window - 1) + dx).flatten()].T.reshape(-1, H * W, H * W)  # [nh, HW, HW]
    return bias.masked_fill(~same, float("-inf"))


def _dense_swin_logits(model: Any, x: torch.Tensor, rule: str) -> torch.Tensor:
    """Our Swin's weights as a dense network (no roll, no window partition; merges by reshape) with lxt's rule
    functions: `divide_gradient` (uniform rule), `stop_gradient` (CP-LRP), `identity_rule_implicit` (GELU) and
    `layer_norm_forward` (LayerNorm). Returns logits [1, K]."""
    rules, patches, _ = _lxt()

    def ln(t, norm):
        return patches.layer_norm_forward(norm, t)

    h = ln(model.patch_embed.proj(x)[0].permute(1, 2, 0), model.patch_embed.norm)  # [H, W, C]
    for stage in model.layers:
        if stage.downsample is not None:
            H, W, C = h.shape
            g = h.reshape(H // 2, 2, W // 2, 2, C).permute(0, 2, 3, 1, 4)  # [H/2, W/2, dx, dy, C]
            g = g.reshape(H // 2, W // 2, 4 * C)  # children (dy, dx) = (0,0), (1,0), (0,1), (1,1), as in the paper
            h = F.linear(ln(g, stage.downsample.norm), stage.downsample.reduction.weight)  # [H/2, W/2, 2C]
        for blk in stage.blocks:
            H, W, C = h.shape
            att = blk.attn
            nh, hd = att.num_heads, C // att.num_heads
            y = ln(h, blk.norm1).reshape(H * W, C)
            qkv = F.linear(y, att.qkv.weight, att.qkv.bias).view(H * W, 3, nh, hd)  # [HW, 3, nh, hd]
            qkv = qkv.permute(1, 2, 0, 3)  # [3, nh, HW, hd]
            q, k, v = qkv.unbind(0)
            if rule == "attnlrp":
                q, k, v = rules.divide_gradient(q, 2), rules.divide_gradient(k, 2), rules.divide_gradient(v, 2)
            else:
                q, k = rules.stop_gradient(q), rules.stop_gradient(k)
            scores = q @ k.transpose(1, 2) * att.scale + _dense_structure(
                H, W, blk.window, blk.shift, att.relative_position_bias_table
            )
            A = scores.softmax(-1)  # [nh, HW, HW]
            if rule == "attnlrp":
                A = rules.divide_gradient(A, 2)
            out = (A @ v).transpose(0, 1).reshape(H * W, C)  # [HW, nh*hd]
            h = h + att.proj(out).view(H, W, C)
            h = h + blk.mlp.fc2(rules.identity_rule_implicit(F.gelu, blk.mlp.fc1(ln(h, blk.norm2))))
    h = ln(h, model.norm)
    return model.head.fc(h.mean(dim=(0, 1)))[None]  # [1, K]


@pytest.fixture(scope="module")
def swin64():
    return _swin(dtype=torch.float64), _image(SWIN.img_size, seed=13, dtype=torch.float64)


def test_swin_config_has_shifts_and_merges(swin64):
    model, _ = swin64
    assert [b.shift for s in model.layers for b in s.blocks] == [0, 2, 0, 2, 0, 0]
    assert [s.downsample is not None for s in model.layers] == [False, True, True]


@pytest.mark.slow
@pytest.mark.parametrize("rule", lrp.RULES)
def test_swin_windowed_relevance_equals_dense_reference(swin64, rule):
    model, x = swin64
    with torch.no_grad():
        torch.testing.assert_close(_dense_swin_logits(model, x, rule), model(x).logits, atol=1e-10, rtol=1e-10)
    for c in (0, 4):
        theirs = _input_relevance(lambda inp: _dense_swin_logits(model, inp, rule), x, c)
        mine = lrp_swin.swin_lrp(model, x, c, rule, "pixel")
        torch.testing.assert_close(mine, theirs, atol=1e-7 * theirs.abs().max().item(), rtol=1e-6)
        grid = lrp_swin.swin_lrp(model, x, c, rule)
        assert grid.shape == (16, 16)  # the patch-embedding grid = the stage-1 token grid
        torch.testing.assert_close(grid, theirs.view(16, 4, 16, 4).sum((1, 3)), atol=1e-9, rtol=1e-6)


def test_swin_conservation(swin64):
    """CP-LRP: pixels + all biases and betas = logit exactly (the relative-position bias gets nothing: attention is
    constant); AttnLRP: the softmax keeps some, and the relative-position bias table receives relevance."""
    model, x = swin64
    for c in (1, 5):
        logit, pixels, gap = _conservation_gap(lambda inp: lrp_swin.swin_forward(model, inp, "cplrp"), model, x, c)
        assert abs(gap) < 1e-10 * max(1.0, abs(logit))
        assert abs(float(lrp_swin.swin_lrp(model, x, c, "cplrp").sum()) - pixels) < 1e-10
        logit, pixels, gap = _conservation_gap(lambda inp: lrp_swin.swin_forward(model, inp, "attnlrp"), model, x, c)
        assert abs(gap) > 1e-4


@pytest.mark.parametrize("rule", lrp.RULES)
def test_swin_maps_are_class_specific(swin64, rule):
    model, x = swin64
    maps = [lrp_swin.swin_lrp(model, x, c, rule) for c in range(4)]
    for a in range(len(maps)):
        for b in range(a + 1, len(maps)):
            assert (maps[a] - maps[b]).abs().max() > 0.05 * max(maps[a].abs().max(), maps[b].abs().max())
    assert not torch.allclose(maps[0], lrp_swin.swin_lrp(model, x, 0, "cplrp" if rule == "attnlrp" else "attnlrp"))


def test_swin_bad_requests_and_inference_mode():
    model = _swin()
    x = _image(SWIN.img_size)
    with pytest.raises(ValueError, match="0..5"):
        lrp_swin.swin_lrp(model, x, 6)
    with pytest.raises(ValueError, match="attnlrp"):
        lrp_swin.swin_lrp(model, x, 0, rule="gamma")
    with pytest.raises(ValueError, match="expects"):
        lrp_swin.swin_lrp(model, _image(32), 0)
    with torch.inference_mode():
        m = lrp_swin.swin_lrp(model, x, 0, resolution="pixel")
    assert m.shape == (64, 64) and m.dtype == torch.float32 and torch.isfinite(m).all()


@pytest.mark.parametrize("distilled", [False, True])
def test_relevance_aware_forwards_compute_the_models_logits(distilled):
    """The rules change gradients only: the walks give the model's own logits (ViT, DeiT with two heads, Swin)."""
    from dataclasses import replace

    vit = _vit(replace(VIT, distilled=distilled, distill_head=distilled), seed=14)
    swin = _swin(seed=15)
    with torch.no_grad():
        for rule in lrp.RULES:
            x = _image(VIT.img_size, seed=16)
            torch.testing.assert_close(lrp.vit_forward(vit, x, rule), vit(x).logits, atol=1e-5, rtol=1e-5)
            x = _image(SWIN.img_size, seed=17)
            torch.testing.assert_close(lrp_swin.swin_forward(swin, x, rule), swin(x).logits, atol=1e-5, rtol=1e-5)
