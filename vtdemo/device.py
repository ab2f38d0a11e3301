"""The one place that picks the compute device: CUDA, then Apple MPS, then CPU (override with VTDEMO_DEVICE)."""

from __future__ import annotations

import os

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` (or $VTDEMO_DEVICE) if given, else the best available device."""
    name = requested or os.environ.get("VTDEMO_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
