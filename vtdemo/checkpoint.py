"""What a checkpoint must satisfy before its model is built: architecture sizes within bounds, and weights whose
names and shapes fit the architecture its config describes, checked on the meta device before any real allocation.

`vtdemo.hub` fetches the files and calls `build_checked`; every refusal is a one-line `VtdemoError` naming the source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, UnsupportedModelError


def check_fits(expected: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise `CheckpointError` naming missing / unexpected keys and shape mismatches of `state_dict` against the
    tensors `expected` (a model's state dict; meta tensors are fine: only names and shapes are compared)."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:

        def cut(items: list[str]) -> str:
            return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")

        parts = [
            f"missing keys: {cut(missing)}" if missing else "",
            f"unexpected keys: {cut(unexpected)}" if unexpected else "",
            f"shape mismatches (file vs config): {cut(shapes)}" if shapes else "",
        ]
        raise CheckpointError(
            f"the weights of {source} do not fit its config.json: " + "; ".join(p for p in parts if p)
        )


#: Bounds on architecture hyper-parameters read from a config.json, far above every published checkpoint; a config
#: beyond them is refused before anything is built (a 175-byte file must not be able to cost gigabytes).
CONFIG_BOUNDS = {
    "depth": 64,
    "depths": 64,
    "num_heads": 256,
    "embed_dim": 8192,
    "d_model": 8192,
    "ffn_dim": 65536,
    "img_size": 4096,
    "patch_size": 256,
    "window_size": 96,
    "num_classes": 100_000,
    "encoder_layers": 48,
    "decoder_layers": 48,
    "num_queries": 4096,
    "mlp_ratio": 16,
    "in_chans": 16,
    # RT-DETR (`vtdemo.models.rtdetr_config`; its backbone's `depths` and `hidden_sizes` are checked too)
    "hidden_sizes": 8192,
    "embedding_size": 1024,
    "encoder_in_channels": 8192,
    "decoder_in_channels": 8192,
    "encoder_hidden_dim": 8192,
    "encoder_ffn_dim": 65536,
    "decoder_ffn_dim": 65536,
    "encoder_heads": 256,
    "decoder_heads": 256,
    "num_levels": 8,
    "num_points": 64,
}
#: Fields that may be 0: a ViT without a head (`num_classes=0`, a feature model such as DINOv2's backbones).
MAY_BE_ZERO = {"num_classes"}


def check_config_bounds(cfg: Any, source: str) -> None:
    """Refuse a config whose sizes are not positive or exceed `CONFIG_BOUNDS` (tuples: their sum / each entry)."""
    for field in dataclasses.fields(cfg):
        nested = getattr(cfg, field.name)
        if dataclasses.is_dataclass(nested) and not isinstance(nested, type):  # e.g. RT-DETR's backbone config
            check_config_bounds(nested, source)
            continue
        limit = CONFIG_BOUNDS.get(field.name)
        if limit is None:
            continue
        value = getattr(cfg, field.name)
        values = list(value) if isinstance(value, (tuple, list)) else [value]
        total = sum(values) if field.name == "depths" else max(values, default=0)
        lowest = 0 if field.name in MAY_BE_ZERO else 1
        if not values or min(values) < lowest or total > limit:
            what = "values from 0" if lowest == 0 else "positive values"
            raise UnsupportedModelError(
                f"{source}: config.json gives {field.name}={value!r}; vtdemo accepts {what} up to {limit}"
            )


def build_checked(
    ctor: Callable[[Any], nn.Module], cfg: Any, state_dict: dict[str, torch.Tensor], source: str
) -> nn.Module:
    """Build the architecture for `state_dict` only once its names and shapes are known to fit.

    The model is first built on the meta device (no memory, no initialisation cost), compared with the weights, and
    only then built for real; so a config that claims 40 layers next to a 76-byte weights file is refused at once.
    """
    check_config_bounds(cfg, source)
    try:
        with torch.device("meta"):
            shapes = ctor(cfg).state_dict()
    except (ValueError, RuntimeError, TypeError, ZeroDivisionError) as exc:
        raise UnsupportedModelError(
            f"{source}: config.json describes an architecture that cannot be built ({str(exc)[:200]})"
        ) from None
    check_fits(shapes, state_dict, source)
    model = ctor(cfg)
    model.load_state_dict(state_dict, strict=True)
    return model
