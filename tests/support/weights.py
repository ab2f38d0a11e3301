"""Random weights for test models, one function per kind of model.

A model's own initialisation hides mistakes (zero biases and tokens, identity norms, std-0.02 weights that make
every query or patch look alike), so every parity and explanation test starts from one of these: values at a scale
that keeps activations O(1) and attention visibly non-uniform, so that a swapped, skipped or mis-named tensor
shows in the outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def randomise(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Every parameter ~ N(0, scale^2), in eval mode (conversion tests: any value shows a naming mistake)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def randomise_classifier(model: torch.nn.Module, seed: int, gain: float = 1.5, bias: float = 0.3) -> torch.nn.Module:
    """Random weights at a scale that keeps activations O(1) (matrices: `gain` / sqrt(fan_in); other vectors: std
    `bias`); relative-position bias tables get std 1 so that a wrong index would show, and attention is visibly
    non-uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("relative_position_bias_table"):
                p.copy_(noise)
            elif p.ndim > 1:
                p.copy_(noise * gain * p[0].numel() ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(bias * noise)
    return model.eval()


def randomise_swinv2(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights; logit scales from log 2 to log 400 (above the clamp at log 100 for some heads)."""
    randomise_classifier(model, seed, gain=1.0, bias=0.1)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.copy_(torch.empty(p.shape).uniform_(math.log(2), math.log(400), generator=g))
    return model.eval()


def randomise_detr(model: torch.nn.Module, seed: int, sharp_qk: float = 3.0) -> torch.nn.Module:
    """A quick DETR randomisation (no calibration pass, for the app's tiny models): random frozen-BN statistics,
    transformer weights with variance 1/fan_in, and the input projection scaled so that the memory varies over
    positions; attention logits sharpened by `sharp_qk`. `randomise_detr_calibrated` is the careful one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0, generator=g)
            elif name.endswith("running_mean"):
                t.uniform_(-0.2, 0.2, generator=g)
            elif "input_projection" in name and t.dim() == 4:
                t.normal_(0.0, t[0].numel() ** -0.5 * 10, generator=g)  # features here are ~0.1: bring to ~1
            elif "query_position" in name:
                t.normal_(0.0, 1.0, generator=g)
            elif t.dim() == 1 and "backbone" not in name:
                t.add_(torch.randn(t.shape, generator=g) * 0.2)
            elif "backbone" not in name and t.is_floating_point():
                sharp = sharp_qk if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0  # peaked attention
                t.normal_(0.0, sharp * t[0].numel() ** -0.5, generator=g)
    return model.eval()


def randomise_detr_calibrated(model: torch.nn.Module, seed: int, run_backbone: Callable[[], object]) -> None:
    """Give every tensor a non-trivial value, so that a swapped or skipped key shows in the outputs.

    transformers' own init would hide mistakes: std-0.02 weights make every query give the same output, a timm
    backbone gets std-0.02 convolutions whose features vanish, and frozen BN starts as the identity. Here:
    - backbone convolutions are Kaiming-normal; each frozen BN gets the statistics of its actual input on a
      calibration image, perturbed per channel (mean + 0.1 std noise, var x U(0.8, 1.25)), gamma U(0.5, 1.5),
      beta N(0, 0.2), as in a trained network, so that the features keep their spatial detail;
    - transformer weights get variance 1/fan_in (the input projection 1/(100 fan_in): the features have RMS ~10,
      and no attention should be one-hot), LayerNorm weights and all biases get noise, query positions N(0, 1).
    `run_backbone()` runs the backbone on the calibration image through its BN modules' own forward, so that their
    pre-hooks see the inputs.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_var", "running_mean", "num_batches_tracked")):
                continue
            if "backbone" in name and t.dim() == 1:
                if name.endswith("weight"):  # BN gamma
                    t.uniform_(0.5, 1.5, generator=g)
                else:  # BN beta
                    t.normal_(0.0, 0.2, generator=g)
            elif "backbone" in name:
                t.normal_(0.0, (2 / t[0].numel()) ** 0.5, generator=g)
            elif "input_proj" in name and t.dim() == 4:  # the features have RMS ~10: bring them to ~1
                t.normal_(0.0, t[0].numel() ** -0.5 / 10, generator=g)
            elif "query_pos" in name:
                t.normal_(0.0, 1.0, generator=g)
            elif t.dim() == 1:
                t.add_(torch.randn(t.shape, generator=g) * 0.2)
            else:
                t.normal_(0.0, t[0].numel() ** -0.5, generator=g)

        def calibrate(module, args):
            x = args[0]  # [B, C, H, W]
            mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3))
            module.running_mean.copy_(mean + 0.1 * var.sqrt() * torch.randn(mean.shape, generator=g))
            module.running_var.copy_(var * torch.empty_like(var).uniform_(0.8, 1.25, generator=g))

        bns = [m for m in model.modules() if hasattr(m, "running_var")]
        hooks = [m.register_forward_pre_hook(calibrate) for m in bns]
        try:
            run_backbone()
        finally:
            for h in hooks:
                h.remove()
