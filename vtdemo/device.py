"""The one place that picks the compute device: CUDA, then Apple MPS, then CPU (override with VTDEMO_DEVICE), and
the inference context every entry point runs under."""

from __future__ import annotations

import contextlib

import torch

from .settings import env_flag, env_text


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` (or $VTDEMO_DEVICE) if given, else the best available device."""
    name = requested or env_text("VTDEMO_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def inference(device: torch.device) -> contextlib.ExitStack:
    """`torch.inference_mode()`, plus fp16 autocast on CUDA (VTDEMO_AUTOCAST=0 turns it off).

    Convolutions and matrix products run in half precision on the GPU, softmax and LayerNorm stay in fp32 (autocast's
    own lists); callers cast outputs back to fp32 before post-processing. On CPU and MPS everything stays fp32.
    """
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if device.type == "cuda" and env_flag("VTDEMO_AUTOCAST", True):
        stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
    return stack
