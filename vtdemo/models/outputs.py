"""Output records shared by the classifiers (ViT/DeiT, Swin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ClassifierOutput:
    """logits: [B, num_classes] (before softmax).

    attentions: None unless the forward pass was asked for them (`return_attn=True`). Then one entry per block, in
    forward order: for ViT a tensor [B, nh, N, N] (softmax probabilities, rows sum to 1, N = prefix tokens + patches);
    for Swin a `vtdemo.models.swin.SwinAttention` record (window attention plus the geometry to place it).
    The tensors stay in the autograd graph when gradients are enabled, so gradient-weighted explanations can call
    `.retain_grad()` on them before `backward()`.
    grid: the patch grid (rows, cols) this input was cut into (ViT; it follows the input size, which may differ from
    the trained one), or None where the model does not report it.
    tokens: None unless asked for (`return_tokens=True`, ViT): one [B, N, C] per block, its output tokens.
    """

    logits: torch.Tensor
    attentions: list[Any] | None = None
    grid: tuple[int, int] | None = None
    tokens: list[torch.Tensor] | None = None
