"""Relevance of the image for one DETR detection: Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model
Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers" (arXiv 2103.15679), with the defaults of
the authors' DETR code (hila-chefer/Transformer-MM-Explainability, `DETR/modules/ExplanationGenerator.py`,
`generate_ours`: gradient x attention, self-attention normalisation on, rule 10 on).

Relevance matrices: R_ii [N, N] over the N image tokens of the encoder, R_qq [Q, Q] over the decoder queries, R_qi
[Q, N] from queries to image tokens. They start as R_ii = I, R_qq = I, R_qi = 0. Each attention A [nh, n, m] of a
layer, with the gradient G of the target with respect to it, gives the head average A_bar = mean_h((G * A)^+). Then
- encoder self-attention (eq. 6):        R_ii += A_bar R_ii
- decoder self-attention (eqs. 6, 7):    R_qq += A_bar R_qq,  R_qi += A_bar R_qi
- decoder cross-attention (eq. 10):      R_qi += norm(R_qq)^T A_bar norm(R_ii)
with norm(R) = (R - I) / rowsum(R - I) + I (eqs. 8-9: the residual's identity kept apart, the rest of each row
scaled to sum 1). The map of detection q is row q of R_qi, on the encoder's token grid (the backbone grid).

Targets (what is differentiated; the gradient G of every attention comes from one backward pass per target):
- 'class': the pre-softmax logit of the query's predicted class (the largest logit without "no object"), as the
  authors' code does;
- 'box': one map per edge of the predicted box. The box head gives (cx, cy, w, h), normalised to [0, 1] of the
  un-padded image; its edges are x0 = cx - w/2, y0 = cy - h/2, x1 = cx + w/2, y1 = cy + h/2, and we differentiate
  each edge's *outward* coordinate: -x0, -y0, x1, y1. Since the rules keep only the positive part of G * A, each
  edge map shows the evidence that pushed that edge outwards, i.e. that made the box reach that far on that side.
  This target is ours: the paper explains classes only.

Where we differ from the authors' code: if a row of R - I sums to 0 (a token no attention has reached), its
normalised row is the identity row here; their division gives NaN, and they then zero the whole rule-10 addition
of that layer. The backbone runs without gradients (only the transformer's attentions need them), which saves the
memory of the ResNet's activations. What it ignores: the backbone's own computation (the map lives on its grid),
and negative evidence (removed by the clamp), as in the paper.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

EDGES = ("x0", "y0", "x1", "y1")
_QUERY_GRAD = threading.Lock()  # one relevance call at a time toggles `query_pos.requires_grad`


def avg_heads(attn: Tensor, grad: Tensor) -> Tensor:
    """Gradient-weighted head average: [nh, n, m] attention and its gradient -> mean_h((grad * attn)^+), [n, m]."""
    return (grad.float() * attn.float()).clamp(min=0).mean(dim=0)


def normalize_residual(R: Tensor) -> Tensor:
    """norm(R) = (R - I) / rowsum(R - I) + I for a square relevance matrix R [n, n] with R - I >= 0.

    Rows of R - I that sum to 0 stay 0 (their normalised row is the identity row)."""
    eye = torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    S = R - eye  # [n, n]
    rows = S.sum(dim=-1, keepdim=True)  # [n, 1]
    return torch.where(rows > 0, S / rows.clamp(min=torch.finfo(R.dtype).tiny), torch.zeros_like(S)) + eye


@dataclass
class Relevance:
    """The three relevance matrices after all layers: R_ii [N, N], R_qq [Q, Q], R_qi [Q, N]."""

    R_ii: Tensor
    R_qq: Tensor
    R_qi: Tensor


def propagate(
    encoder: list[tuple[Tensor, Tensor]], decoder: list[tuple[Tensor, Tensor, Tensor, Tensor]], normalize: bool = True
) -> Relevance:
    """Apply the rules layer by layer, in forward order.

    encoder: per encoder layer (attention [nh, N, N], its gradient); decoder: per decoder layer (self-attention
    [nh, Q, Q], gradient, cross-attention [nh, Q, N], gradient). normalize: eqs. 8-9 in rule 10 (the authors'
    default, True).
    """
    if not encoder or not decoder:
        raise ValueError("relevance needs at least one encoder and one decoder layer")
    N = encoder[0][0].shape[-1]
    Q = decoder[0][0].shape[-1]
    device = encoder[0][0].device
    R_ii = torch.eye(N, device=device)
    for attn, grad in encoder:
        R_ii = R_ii + avg_heads(attn, grad) @ R_ii  # [N, N]
    R_ii_bar = normalize_residual(R_ii) if normalize else R_ii
    R_qq = torch.eye(Q, device=device)
    R_qi = torch.zeros(Q, N, device=device)
    for self_attn, self_grad, cross_attn, cross_grad in decoder:
        A = avg_heads(self_attn, self_grad)  # [Q, Q]
        R_qq, R_qi = R_qq + A @ R_qq, R_qi + A @ R_qi
        R_qq_bar = normalize_residual(R_qq) if normalize else R_qq
        R_qi = R_qi + R_qq_bar.T @ avg_heads(cross_attn, cross_grad) @ R_ii_bar  # [Q, N]
    return Relevance(R_ii, R_qq, R_qi)


def targets_of(logits: Tensor, boxes: Tensor, query: int, kind: str) -> dict[str, Tensor]:
    """The scalars to differentiate for one query. logits [Q, K+1], boxes [Q, 4] normalised cxcywh.

    'class': {"class": logit of the predicted class}; 'box': {"x0": -x0, "y0": -y0, "x1": x1, "y1": y1}."""
    if kind == "class":
        label = int(logits[query, :-1].argmax())
        return {"class": logits[query, label]}
    if kind == "box":
        cx, cy, w, h = boxes[query].unbind(-1)
        return {"x0": -(cx - w / 2), "y0": -(cy - h / 2), "x1": cx + w / 2, "y1": cy + h / 2}
    raise ValueError(f"target must be 'class' or 'box', not {kind!r}")


def relevance_maps(
    model: Any, pixel_values: Tensor, pixel_mask: Tensor | None, query: int, kind: str = "class", normalize: bool = True
) -> dict[str, Tensor]:
    """Relevance maps of one detection of a `vtdemo.models.detr.DETR` for one image.

    pixel_values [1, 3, H, W] normalised RGB, pixel_mask [1, H, W] bool (None: no padding); query: the decoder
    query of the detection; kind: 'class' or 'box' (see the module docstring). Returns {name: [h, w]} on the
    backbone grid, not scaled: {"class": ...} or {"x0", "y0", "x1", "y1"}. One transformer forward pass with
    gradients and one backward pass per target; the backbone runs once, without gradients.
    """
    if pixel_values.ndim != 4 or pixel_values.shape[0] != 1:
        raise ValueError(f"relevance explains one image: expected [1, 3, H, W], got {list(pixel_values.shape)}")
    if kind not in ("class", "box"):
        raise ValueError(f"target must be 'class' or 'box', not {kind!r}")
    with torch.no_grad():
        features = model.backbone_features(pixel_values)  # [1, 2048, h, w]
        B, _, h, w = features.shape
        if pixel_mask is None:
            mask = torch.ones(B, h, w, dtype=torch.bool, device=features.device)
        else:  # as DETR.forward: nearest interpolation of the pixel mask
            mask = torch.nn.functional.interpolate(pixel_mask[:, None].to(features.dtype), size=(h, w))[:, 0] > 0
    with _QUERY_GRAD, torch.inference_mode(False), torch.enable_grad():
        # The first decoder layer's self-attention depends on the learned query positions only: they must require
        # grad (for this call; no .grad is accumulated) or that attention would not be in the graph.
        was = model.query_pos.requires_grad
        model.query_pos.requires_grad_(True)
        try:
            features = features.detach().clone().requires_grad_(True)
            out = model.forward_transformer(features, mask, return_attn=True)
        finally:
            model.query_pos.requires_grad_(was)
        if not 0 <= query < out.logits.shape[1]:
            raise ValueError(f"query {query} is out of range: the model has {out.logits.shape[1]} queries")
        attns = [*out.encoder_attn, *out.decoder_self_attn, *out.decoder_cross_attn]
        L_enc, L_dec = len(out.encoder_attn), len(out.decoder_self_attn)
        maps = {}
        items = list(targets_of(out.logits[0], out.boxes[0], query, kind).items())
        for i, (name, scalar) in enumerate(items):
            grads = torch.autograd.grad(scalar, attns, retain_graph=i < len(items) - 1)
            a = [t[0].detach() for t in attns]  # each [nh, n, m]
            g = [t[0].detach() for t in grads]
            enc = list(zip(a[:L_enc], g[:L_enc], strict=True))
            dec = list(
                zip(
                    a[L_enc : L_enc + L_dec],
                    g[L_enc : L_enc + L_dec],
                    a[L_enc + L_dec :],
                    g[L_enc + L_dec :],
                    strict=True,
                )
            )
            R = propagate(enc, dec, normalize)
            maps[name] = R.R_qi[query].view(h, w)  # [N] -> [h, w]
    return maps
