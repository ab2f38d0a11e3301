"""What the app says about the engine behind a result: the footer, the status lines, the map captions.

The app runs forward passes at `AppConfig.precision` ("fast" by default: `vtdemo.engine`, OpenVINO on a CPU) and
every gradient method (gradient rollout, LRP, Grad-CAM, DETR relevance) on the exact fp32 PyTorch model; a model the
fast engine could not convert runs exact, and says why. These pure functions turn that into the words shown; the
JSON exports carry the same facts as `runtime` (`vtdemo.pipeline.runtime_info`).
"""

from __future__ import annotations

from typing import Any

from .. import pipeline

EXACT_NOTE = "computed on the exact fp32 PyTorch model"


def engine_line(loaded: pipeline.LoadedModel, fallback: str | None = None, size: tuple[int, int] | None = None) -> str:
    """The status-line part naming what produced a result, e.g. 'OpenVINO 2026.4.1 bf16 on cpu (fast)'.

    fallback: why a model asked for at fast precision runs exact (the converter failed); size: the run's input
    (height, width): a fast model runs its exact PyTorch twin at a size its graph was not converted for, and says so
    (`vtdemo.pipeline.describe`)."""
    text = pipeline.describe(loaded, size)
    if fallback:
        text += f": the fast engine could not convert this model ({fallback}), so it runs exact"
    return text


def gradient_note(loaded: pipeline.LoadedModel, method: str) -> str:
    """' (computed on the exact fp32 PyTorch model)' for a gradient method of a fast model, else ''."""
    meth: Any = pipeline.METHODS.get(method)
    if meth is not None and meth.needs_gradients and loaded.precision == "fast":
        return f" ({EXACT_NOTE})"
    return ""
