"""Checkpoint conversion: each Hub format -> our parameter names, as pure functions on state dicts.

One module per family (`vit`, `swin`, `detr`), each a rename table plus the few tensor edits a format needs
(q/k/v merges, dropping derived buffers). The shape of this follows timm's `checkpoint_filter_fn` and
transformers' conversion scripts: the result is loaded with `load_state_dict(strict=True)` by `vtdemo.hub`,
which names missing and unexpected keys when a file does not fit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

StateDict = dict[str, torch.Tensor]


def rename(state_dict: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str]]) -> StateDict:
    """Apply regex substitutions `(pattern, replacement)` to every key, in order; values are kept as they are."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: StateDict = {}
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def drop(state_dict: Mapping[str, torch.Tensor], patterns: Iterable[str]) -> StateDict:
    """Remove keys matching any regex in `patterns` (derived buffers such as `relative_position_index`)."""
    compiled = [re.compile(p) for p in patterns]
    return {k: v for k, v in state_dict.items() if not any(p.search(k) for p in compiled)}


def merge_qkv(state_dict: Mapping[str, torch.Tensor], q: str, k: str, v: str, qkv: str) -> StateDict:
    """Concatenate separate q/k/v Linear weights and biases into one fused `qkv` Linear (rows q, then k, then v).

    `q`, `k`, `v`, `qkv` are key templates with `{}` for the block prefix and no `.weight`/`.bias` suffix, e.g.
    `merge_qkv(sd, "{}.query", "{}.key", "{}.value", "{}.qkv")`. The result for weights is [3*C, C].
    """
    out = dict(state_dict)
    q_re = re.compile("^" + re.escape(q).replace(r"\{\}", "(.+)") + r"\.(weight|bias)$")
    for key in list(state_dict):
        m = q_re.match(key)
        if not m:
            continue
        prefix, kind = m.group(1), m.group(2)
        parts = [out.pop(f"{t.format(prefix)}.{kind}") for t in (q, k, v)]
        out[f"{qkv.format(prefix)}.{kind}"] = torch.cat(parts, dim=0)  # [3*C, C] or [3*C]
    return out
