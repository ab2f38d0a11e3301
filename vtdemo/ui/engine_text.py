"""What the app says about the engine behind a result: the footer, the status lines, the map captions.

The app runs forward passes at `AppConfig.precision` ("fast" by default: `vtdemo.engine`, OpenVINO on a CPU) and
every gradient method (gradient rollout, LRP, Grad-CAM, DETR relevance) on the exact fp32 PyTorch model; a model the
fast engine could not convert runs exact, and says why. These pure functions turn that into the words shown; the
JSON exports carry the same facts as `runtime` (`vtdemo.pipeline.runtime_info`).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import pipeline

EXACT_NOTE = "computed on the exact fp32 PyTorch model"


def engine_line(loaded: pipeline.LoadedModel, fallback: str | None = None, exact_size: bool = False) -> str:
    """The status-line part naming what produced a result, e.g. 'OpenVINO 2026.4.1 bf16 on cpu (fast)'.

    fallback: why a model asked for at fast precision runs exact (the converter failed); exact_size: the fast model
    ran its exact PyTorch twin because the input is not the size it was converted at (a ViT at another size)."""
    if exact_size and loaded.precision == "fast":
        return f"PyTorch {torch.__version__} f32 on {loaded.device} (exact): this input size runs on the exact model"
    text = pipeline.describe(loaded)
    if fallback:
        text += f": the fast engine could not convert this model ({fallback}), so it runs exact"
    return text


def gradient_note(loaded: pipeline.LoadedModel, method: str) -> str:
    """' (computed on the exact fp32 PyTorch model)' for a gradient method of a fast model, else ''."""
    meth: Any = pipeline.METHODS.get(method)
    if meth is not None and meth.needs_gradients and loaded.precision == "fast":
        return f" ({EXACT_NOTE})"
    return ""
