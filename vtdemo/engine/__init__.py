"""Fast inference engines for our models: precision "fast" next to the exact fp32 PyTorch path.

    loaded = vtdemo.load_model("facebook/detr-resnet-50", precision="fast")   # LoadedModel (vtdemo.loader)
    engine.runtime_info(loaded)  # {"precision": "fast", "engine": "openvino", "version": ..., "dtype": "bf16", ...}
    engine.describe(loaded)      # "OpenVINO 2026.4.1 bf16 on cpu (fast)": for a footer
    engine.exact_model(loaded)   # the same model on the exact PyTorch path (gradient methods use it)
    engine.release_weights(loaded)  # drop the PyTorch weights after compiling (exact_model reloads them)
    engine.prepare(loaded)       # convert now instead of at the first forward pass (shows progress)

`python -m vtdemo convert MODEL ...` pre-converts into the engine cache (`vtdemo.engine.cache`, through
`vtdemo.loader.preconvert`), e.g. while a Hugging Face Space is built.
See `vtdemo.engine.fast` for what "fast" picks where, `vtdemo.engine.graphs` for how
the attention maps stay available, `vtdemo.engine.openvino_runtime` for the input-shape policy.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..settings import env_flag

if TYPE_CHECKING:
    from ..hub import LoadedModel

log = logging.getLogger(__name__)


def make_fast(exact: LoadedModel, reload: Callable[[], torch.nn.Module] | None = None) -> LoadedModel:
    """The fast twin of an exact LoadedModel (shares its PyTorch module; converts nothing yet). reload: where the
    PyTorch module comes from again after `release_weights` (None: its weights are never released). A panoptic
    DETR stays exact: its masks come from the PyTorch mask head only. A classifier's or an RT-DETR's graph is
    converted for the input size its processor gives (224x224 for most classifiers, DINOv2's included although its
    positions are for 518 px; 640x640 for the published RT-DETRs); DETR's takes any size."""
    from ..preprocess import trained_input_size
    from .fast import FastModel, choose, guarded

    if hasattr(exact.model, "mask_head"):  # the fast graphs return boxes and attention, not panoptic masks
        log.info("%s: a panoptic model has no fast graph (no masks there); it runs exact", exact.id)
        return exact
    choice = choose(str(exact.device))
    size = None if exact.family == "detr" else trained_input_size(exact.preprocess)
    model = FastModel(exact.model, exact.family, exact.id, exact.weights, choice, reload, size)
    fast = dataclasses.replace(exact, model=model, precision="fast")
    if guarded(model.choice, exact.family):  # checked against the exact model before its first result
        check = _guard[0]
        if check is None:  # nobody gave a check (vtdemo.pipeline does): no bf16 without one
            model.choice = dataclasses.replace(model.choice, dtype="f32")
        else:
            model.guard = functools.partial(check, fast)
    return fast


#: The run-time fidelity check for reduced-precision models (`set_guard`): (fast LoadedModel, progress) -> None if
#: within the guard, else the reason.
_guard: list[Callable[..., str | None] | None] = [None]


def set_guard(check: Callable[..., str | None]) -> None:
    """Give the engine its run-time fidelity check (`vtdemo.pipeline.fidelity.bf16_verdict`, set when
    `vtdemo.pipeline` is imported: the check runs the pipeline, a layer above the engine). Without one, a model
    that would need it runs f32."""
    _guard[0] = check


def release_weights(loaded: LoadedModel) -> bool:
    """Free a fast model's PyTorch weights once its graphs are compiled (the app keeps one copy of each model
    resident); gradient methods then load the exact model again on demand (`exact_model`). False if nothing was
    released (an exact model, a PyTorch engine, nothing compiled yet, or weights shared with a cached exact model)."""
    from .fast import FastModel

    return isinstance(loaded.model, FastModel) and loaded.model.release_weights()


def resident_bytes(loaded: LoadedModel, seen: set[int] | None = None) -> int:
    """Bytes a loaded model holds in memory: its PyTorch parameters and buffers, and a fast model's compiled graphs;
    storages in `seen` are counted once across calls (`vtdemo.memory.module_bytes`)."""
    from ..memory import module_bytes
    from .fast import FastModel

    if isinstance(loaded.model, FastModel):
        return loaded.model.resident_bytes(seen)
    return module_bytes(loaded.model, seen)


def exact_model(loaded: LoadedModel) -> LoadedModel:
    """The exact (fp32 PyTorch, parity-tested) version of a loaded model; itself if it is exact already."""
    from .fast import FastModel

    if isinstance(loaded.model, FastModel):
        return dataclasses.replace(loaded, model=loaded.model.exact, precision="exact")
    return loaded


def exact_at(loaded: LoadedModel, size: tuple[int, int] | None) -> bool:
    """Does this fast model run an input of `size` (height, width) on its exact PyTorch twin? A classifier's or an
    RT-DETR's graph has one input size, its processor's (`FastModel.runs_fast`). False for exact models and for
    size None (the processor's own size)."""
    from .fast import FastModel

    return size is not None and isinstance(loaded.model, FastModel) and not loaded.model.runs_fast(size)


def runtime_info(loaded: LoadedModel, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Which engine and precision produce this model's outputs (the `runtime` field of every JSON result) for an
    input of `size` (height, width; None: the processor's own size).

    {"precision": "exact" | "fast", "engine": "pytorch" | "openvino", "version": str, "dtype": "f32" | "bf16" |
    "fp16", "device": str}. Exact on CUDA reports fp16 (the pipeline's autocast there, VTDEMO_AUTOCAST=0: f32). A
    fast model at an input size its graph was not converted for reports what ran: exact (`exact_at`).
    """
    from .fast import FastModel

    model = loaded.model
    if isinstance(model, FastModel) and not exact_at(loaded, size):
        c = model.choice
        return {"precision": "fast", "engine": c.engine, "version": c.version, "dtype": c.dtype, "device": c.device}
    cuda_half = loaded.device.type == "cuda" and env_flag("VTDEMO_AUTOCAST", True)
    return {
        "precision": "exact",
        "engine": "pytorch",
        "version": torch.__version__,
        "dtype": "fp16" if cuda_half else "f32",
        "device": str(loaded.device),
    }


def describe(loaded: LoadedModel, size: tuple[int, int] | None = None) -> str:
    """One line for a footer, e.g. 'OpenVINO 2026.4.1 bf16 on cpu (fast)' or 'PyTorch 2.14.1 f32 on cpu (exact)';
    a DETR that the fidelity guard kept at f32 says so ('... f32 on cpu (fast; bf16 was outside the fidelity
    guard)'), a fast model at an input size its graph does not take says that it ran exact (`exact_at`)."""
    info = runtime_info(loaded, size)
    name = {"openvino": "OpenVINO", "pytorch": "PyTorch"}[info["engine"]]
    head = f"{name} {info['version']} {info['dtype']} on {info['device']}"
    if exact_at(loaded, size):
        return f"{head} (exact): this input size runs on the exact model"
    note = "; bf16 was outside the fidelity guard" if getattr(loaded.model, "guard_note", None) else ""
    return f"{head} ({info['precision']}{note})"


def prepare(loaded: LoadedModel, with_attention: bool = True, progress: Callable[[str], None] | None = None) -> None:
    """Convert and compile a fast graph now: the one with attention outputs, or if `with_attention` is False the
    plain one (DETR and classifiers; RT-DETR has one graph); nothing to do for exact models or PyTorch engines."""
    from .fast import FastModel

    if isinstance(loaded.model, FastModel):
        loaded.model.prepare(with_attention, progress)


def precision_summary(precision: str, device: torch.device) -> str:
    """The words for an app's precision, e.g. 'fast: OpenVINO 2026.4.1 bf16 (DETR and RT-DETR bf16 within the
    fidelity guard, else f32) on CPU; gradient methods on the exact fp32 PyTorch model' or 'exact: PyTorch 2.x f32 on
    CPU'."""
    kind = device.type.upper()
    if precision != "fast":
        return f"exact: PyTorch {torch.__version__} f32 on {kind}"
    from .fast import choose, guarded

    choice = choose(str(device))
    name = {"openvino": "OpenVINO", "pytorch": "PyTorch"}[choice.engine]
    note = " (DETR and RT-DETR bf16 within the fidelity guard, else f32)" if guarded(choice, "detr") else ""
    dtype = choice.dtype + note
    return f"fast: {name} {choice.version} {dtype} on {kind}; gradient methods on the exact fp32 PyTorch model"
