"""The fast path: which runtime and precision "fast" means on this device, and the module that runs it.

`choose(device)` decides once per process and device (logged at INFO, overridable with `VTDEMO_FAST_ENGINE` =
openvino | pytorch and `VTDEMO_FAST_DTYPE` = bf16 | f32 | fp16):
- CPU with OpenVINO installed: OpenVINO, bf16 where its CPU plugin reports bf16 units (AMX or AVX512-BF16), else
  f32. Measured (README "Fast path"): on an AMD EPYC with AVX512-BF16 and a Xeon with AMX, OpenVINO bf16 beats
  OpenVINO f32, PyTorch bf16 autocast and PyTorch fp32 for ViT, Swin and DETR. A DETR or RT-DETR at bf16 is
  checked against its exact model before its first result (`guarded`, `FastModel.check_guard`; the check is the
  pipeline's `vtdemo.pipeline.fidelity.bf16_verdict`, given through `vtdemo.engine.set_guard`) and runs f32 outside
  the fidelity guard (our random full-size DETR fixture does: its class head amplifies tiny differences), unless
  VTDEMO_FAST_DTYPE forces the dtype;
- CPU without OpenVINO: PyTorch bf16 autocast where oneDNN has bf16 kernels, else PyTorch fp32, with a warning that
  says how to get the faster runtime;
- CUDA: PyTorch fp16 autocast; MPS: PyTorch fp32 (nothing faster there), with a warning.

`FastModel` wraps our PyTorch module and is called exactly like it (`model(x, return_attn=...)`,
`model(pixel_values, pixel_mask, return_attn=...)`), returning the same records (`ClassifierOutput` with ViT tensors
or `SwinAttention` records, `DetrOutput`, `RtDetrOutput`). With gradients enabled (gradient rollout, relevance, LRP,
RT-DETR's Grad-CAM) it runs the exact PyTorch module instead, so gradient methods always see fp32 PyTorch (logged
once per model). Conversion happens on the first fast call (or `prepare()`), never at import or load.
`release_weights()` frees the PyTorch weights once a graph is compiled (the app does, to keep one copy of each
model); `exact` then loads them again on demand through the `reload` it was given (`vtdemo.loader.load` at
precision exact).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..memory import module_bytes, return_memory
from ..settings import env_text
from . import graphs, openvino_runtime

log = logging.getLogger(__name__)

ENGINES = ("openvino", "pytorch")
DTYPES = ("bf16", "f32", "fp16")


@dataclass(frozen=True)
class EngineChoice:
    """What "fast" runs on: engine (openvino | pytorch), its version, dtype (bf16 | f32 | fp16), device, and why."""

    engine: str
    version: str
    dtype: str
    device: str
    reason: str


def _torch_cpu_bf16() -> bool:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


@functools.cache
def choose(device: str) -> EngineChoice:
    """The fast engine for a device ("cpu", "cuda", "cuda:0", "mps"); decided once per process and device."""
    kind = torch.device(device).type
    engine = (env_text("VTDEMO_FAST_ENGINE") or "").strip().lower() or None
    dtype = (env_text("VTDEMO_FAST_DTYPE") or "").strip().lower() or None
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"VTDEMO_FAST_ENGINE={engine!r}: choose from {', '.join(ENGINES)}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"VTDEMO_FAST_DTYPE={dtype!r}: choose from {', '.join(DTYPES)}")
    forced = " (set by VTDEMO_FAST_ENGINE / VTDEMO_FAST_DTYPE)" if engine or dtype else ""
    if kind == "cuda":
        choice = EngineChoice("pytorch", torch.__version__, dtype or "fp16", device, "CUDA: fp16 autocast" + forced)
    elif kind != "cpu":
        log.warning("fast precision on %s: no faster runtime there, running PyTorch fp32", device)
        choice = EngineChoice("pytorch", torch.__version__, dtype or "f32", device, f"{kind}: PyTorch" + forced)
    elif engine != "pytorch" and openvino_runtime.available():
        bf16 = "BF16" in openvino_runtime.cpu_capabilities()
        why = "the CPU has bf16 units" if bf16 else "the CPU has no bf16 units"
        choice = EngineChoice(
            "openvino",
            openvino_runtime.version(),
            dtype or ("bf16" if bf16 else "f32"),
            device,
            f"OpenVINO on CPU, {why}" + forced,
        )
    else:
        if engine is None:
            log.warning("fast precision: OpenVINO is not installed (pip install openvino), using PyTorch autocast")
        bf16 = _torch_cpu_bf16()
        choice = EngineChoice(
            "pytorch",
            torch.__version__,
            dtype or ("bf16" if bf16 else "f32"),
            device,
            "PyTorch on CPU" + (" (OpenVINO not installed)" if engine is None else forced),
        )
    log.info("fast precision on %s: %s %s %s (%s)", device, choice.engine, choice.version, choice.dtype, choice.reason)
    return choice


#: The families whose reduced precision is checked at run time (`guarded`): detectors, whose scores a threshold cuts.
GUARDED_FAMILIES = ("detr", "rtdetr")


def guarded(choice: EngineChoice, family: str) -> bool:
    """Does this model's reduced precision need the run-time fidelity check? DETR and RT-DETR at bf16 on OpenVINO,
    unless VTDEMO_FAST_DTYPE forces the dtype (the operator decided)."""
    return (
        family in GUARDED_FAMILIES
        and choice.engine == "openvino"
        and choice.dtype == "bf16"
        and not env_text("VTDEMO_FAST_DTYPE")
    )


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _floats(out: Any) -> Any:
    """Cast every tensor of an output record to float32 (autocast leaves attention in half precision)."""
    from ..models.outputs import ClassifierOutput

    if isinstance(out, ClassifierOutput):
        out.logits = out.logits.float()
        if out.attentions is not None:
            out.attentions = [
                replace(a, attn=a.attn.float()) if hasattr(a, "attn") else a.float() for a in out.attentions
            ]
        return out
    for name in ("logits", "boxes"):
        setattr(out, name, getattr(out, name).float())
    for name in ("init_boxes", "query_index"):  # RT-DETR
        if hasattr(out, name) and getattr(out, name).is_floating_point():
            setattr(out, name, getattr(out, name).float())
    for name in (
        "encoder_attn",
        "decoder_self_attn",
        "decoder_cross_attn",
        "encoder_maps",  # RT-DETR from here on
        "layer_logits",
        "layer_boxes",
        "reference_boxes",
        "sampling_locations",
        "sampling_weights",
        "aifi_attn",
    ):
        if getattr(out, name, None) is not None:
            setattr(out, name, [a.float() for a in getattr(out, name)])
    return out


class FastModel(nn.Module):
    """Our model on the fast engine; called like the PyTorch module and returning the same records.

    exact: the PyTorch module (fp32, the parity-tested path); it also runs whenever gradients are enabled.
    skeleton: the same module for its structure (config, Swin geometry), which stays after `release_weights`.
    reload: where `exact` comes from once the weights were released (`vtdemo.loader.load` at precision exact).
    input_size: the graph's fixed input (height, width), the size the processor gives (`make_fast`; None for DETR,
    whose graph takes any size): another size runs the exact model (`runs_fast`).
    """

    def __init__(
        self,
        exact: nn.Module,
        family: str,
        model_id: str,
        weights: Path | None,
        choice: EngineChoice,
        reload: Callable[[], nn.Module] | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        #: (height, width) a classifier's or an RT-DETR's graph is converted for (its processor's size); None for DETR.
        self.input_size = input_size
        self.skeleton = exact
        self._reload = reload
        self.released = False
        self.family = family
        self.model_id = model_id
        self.weights = weights
        self.choice = choice
        #: Why this model runs f32 although the device chose bf16 (the fidelity guard said so), else None.
        self.guard_note: str | None = None
        #: The run-time fidelity check still to run on first use (`vtdemo.engine.make_fast` sets it): progress -> None
        #: (within the guard) or the reason it is not.
        self.guard: Callable[[Callable[[str], None] | None], str | None] | None = None
        self._guard_lock = threading.RLock()  # re-entrant: the check itself runs this model
        self._checking = False
        self._graphs: dict[bool, openvino_runtime.CompiledGraph] = {}
        self._lock = threading.Lock()
        self._told_gradients = False

    @property
    def cfg(self) -> Any:
        return self.skeleton.cfg

    @property
    def exact(self) -> nn.Module:
        """The exact PyTorch module: the kept one, or (after `release_weights`) loaded again, once, on demand."""
        if not self.released:
            return self.skeleton
        assert self._reload is not None
        return self._reload()

    def release_weights(self) -> bool:
        """Free the PyTorch weights once the compiled graphs hold their own copy (what the app does: it keeps one
        copy of each model resident); `exact` loads them again when a gradient method asks. Only for a model that
        knows how to reload them; returns whether the weights were released."""
        if self._reload is None or self.released or self.choice.engine != "openvino" or not self._graphs:
            return False
        self.skeleton.to("meta")  # parameters and buffers become shapes only (structure and config stay)
        self.released = True
        return_memory()
        log.info("%s: PyTorch weights released (the OpenVINO graph holds the model; exact reloads them)", self.model_id)
        return True

    def resident_bytes(self, seen: set[int] | None = None) -> int:
        """Bytes this model holds: its PyTorch weights unless released (storages in `seen` count once, see
        `vtdemo.memory.module_bytes`) plus each compiled graph's weights."""
        with self._lock:
            graphs_bytes = sum(g.weights_bytes() for g in self._graphs.values())
        return module_bytes(self.skeleton, seen) + graphs_bytes

    def _graph_kind(self, return_attn: bool) -> bool:
        # RT-DETR: one graph with attention outputs serves both calls (AIFI's attention over 20x20 cells is small:
        # the plain graph is hardly faster). DETR and classifiers: a call without attention has a plain graph of its
        # own (DETR's 800-px encoder maps are large; a classifier's fused attention skips writing every probability,
        # which matters most with many tokens, e.g. DINOv2 at 448 px: docs/performance.md), except once the weights
        # were released (the app, which keeps one copy of each model): then the attention graph serves plain calls.
        if self.family == "rtdetr" or return_attn:
            return True
        return self.released and True in self._graphs and False not in self._graphs

    def graph(self, return_attn: bool, progress: Callable[[str], None] | None = None) -> openvino_runtime.CompiledGraph:
        """The compiled OpenVINO graph (converted or read from the engine cache on first use); a guarded model is
        checked against its exact twin before its first result is given out (`check_guard`)."""
        if self.guard is not None:
            self.check_guard(progress)
        return self._compiled(return_attn, progress)

    def check_guard(self, progress: Callable[[str], None] | None = None) -> bool:
        """Run the pending fidelity check once (other threads wait for it; the check's own calls pass); outside the
        guard, drop the bf16 graphs and run f32 from now on. Returns whether it fell back."""
        with self._guard_lock:
            guard = self.guard
            if guard is None or self._checking:
                return False
            self._checking = True
            try:
                reason = guard(progress)
            finally:
                self._checking = False
                self.guard = None
            if reason is None:
                log.info("%s: bf16 is within the fidelity guard on the example photos: it runs bf16", self.model_id)
                return False
            log.warning("%s: %s; it runs f32", self.model_id, reason)
            with self._lock:
                self.choice = replace(self.choice, dtype="f32")
                self.guard_note = reason
                self._graphs.clear()
            return True

    def _compiled(self, return_attn: bool, progress: Callable[[str], None] | None) -> openvino_runtime.CompiledGraph:
        kind = self._graph_kind(return_attn)
        with self._lock:
            if kind not in self._graphs:
                self._graphs[kind] = openvino_runtime.load_graph(
                    self.model_id,
                    self.weights,
                    self.family,
                    self.skeleton,
                    kind,
                    self.choice.dtype,
                    progress,
                    source=lambda: self.exact,  # the weights, should this graph need converting
                    input_size=self.input_size,
                )
            return self._graphs[kind]

    def prepare(self, return_attn: bool = True, progress: Callable[[str], None] | None = None) -> None:
        """Convert / compile now (e.g. before the first request, or at build time); no-op for PyTorch engines."""
        if self.choice.engine == "openvino":
            self.graph(return_attn, progress)

    @property
    def converted(self) -> bool:
        return self.choice.engine != "openvino" or bool(self._graphs)

    def runs_fast(self, size: tuple[int, int]) -> bool:
        """Does an input of `size` (height, width) run on the fast engine? DETR's graph takes any size; a classifier's
        or an RT-DETR's only the size it was converted for (its processor's): another runs the exact model."""
        if self.family == "detr" or self.choice.engine != "openvino":
            return True
        if self.input_size is not None:
            return tuple(size) == tuple(self.input_size)
        img_size = getattr(self.skeleton.cfg, "img_size", None)  # a classifier made without its processor's size
        return self.family != "rtdetr" and (img_size is None or tuple(size) == (img_size, img_size))

    def forward(self, *inputs: torch.Tensor, return_attn: bool = False, return_tokens: bool = False) -> Any:
        if (
            torch.is_grad_enabled()
            or return_tokens
            or not self.runs_fast((int(inputs[0].shape[-2]), int(inputs[0].shape[-1])))
        ):
            if not self._told_gradients:
                log.info(
                    "%s: gradients, block outputs or another input size asked for: running the exact PyTorch "
                    "fp32 model",
                    self.model_id,
                )
                self._told_gradients = True
            extra = {"return_tokens": True} if return_tokens else {}
            return self.exact(*inputs, return_attn=return_attn, **extra)
        if self.choice.engine == "pytorch":
            dtype = _AUTOCAST.get(self.choice.dtype)
            if dtype is None:
                return self.exact(*inputs, return_attn=return_attn)
            with torch.autocast(torch.device(self.choice.device).type, dtype=dtype):
                return _floats(self.exact(*inputs, return_attn=return_attn))
        if self.family == "detr":
            pixel_values = inputs[0]
            mask = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
            if mask is None:
                mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[-2:])
            arrays = self.graph(return_attn)([pixel_values, mask.float()])
            return graphs.detr_output(self.skeleton, arrays, return_attn)
        if self.family == "rtdetr":
            arrays = self.graph(return_attn)([inputs[0]])
            return graphs.rtdetr_output(self.skeleton, arrays, return_attn)
        if return_attn:
            return graphs.classifier_output(self.skeleton, self.graph(True)([inputs[0]]), True)
        return graphs.classifier_output(self.skeleton, self.graph(False)([inputs[0]], outputs=1), False)  # logits
