"""OpenVINO as the fast CPU runtime: convert our modules once (cached on disk), compile, run.

OpenVINO (https://github.com/openvinotoolkit/openvino) converts a PyTorch module by tracing it with an example input
(`openvino.convert_model(module, example_input=..., input=[(name, shape)])`, -1 = dynamic dimension), saves it as
IR (`model.xml` + `model.bin`, `openvino.save_model`) and compiles it for the CPU with an inference-precision hint
(`"INFERENCE_PRECISION_HINT": "bf16"` runs matrix products and convolutions in bfloat16 on CPUs with bf16 units,
AMX or AVX512-BF16; `"f32"` keeps float32) and `"PERFORMANCE_HINT": "LATENCY"` (one image at a time, all cores).

Input-shape policy (part of the cache key):
- classifiers: the size the checkpoint's own preprocessing gives (its processor's crop: fixed, as our models require;
  a DINOv2 with positions for 518 px is cropped to 224, and its graph holds the positions resampled for 224),
  dynamic batch (the deletion check runs batches of 8): `static-HxW-batch-dynamic`; another input size (a visitor's
  choice) runs the exact model, `FastModel.runs_fast`;
- DETR: dynamic batch, height and width (`dynamic-hw`): one conversion serves every photo size the preprocessing
  produces (short side 800, long side <= 1333, any aspect ratio) and the webcam's fixed size; OpenVINO's CPU plugin
  keeps compiled kernels per shape it has seen, so a repeated size (the webcam's) costs nothing extra;
- RT-DETR: its processor's fixed size (640x640 for the published checkpoints; every photo is squashed to it),
  dynamic batch, as classifiers: `static-HxW-batch-dynamic` (the level shapes, anchors and query selection are
  then fixed in the graph; another input size runs the exact model, as for classifiers).
Where we differ from the plain recipe: our graphs (`vtdemo.engine.graphs`) add the attention probabilities as
outputs, so explanations still work from the compiled model.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import cache, graphs

log = logging.getLogger(__name__)


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    import openvino as ov

    return ov.__version__.split("-")[0]


def cpu_capabilities() -> list[str]:
    """OpenVINO's CPU plugin capabilities (e.g. ['BF16', 'FP32', 'INT8', ...]): BF16 = the CPU has bf16 units."""
    import openvino as ov

    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def shape_policy(family: str, model: nn.Module, input_size: tuple[int, int] | None = None) -> str:
    """The input-shape policy (module docstring); input_size: (height, width) of the processor's input (RT-DETR:
    required; classifiers: the model's own `img_size` if None)."""
    if family == "detr":
        return "dynamic-hw"
    if family == "rtdetr" and input_size is None:
        raise ValueError("an RT-DETR graph needs its processor's input size")
    cfg: Any = model.cfg
    height, width = input_size if input_size is not None else (cfg.img_size, cfg.img_size)
    return f"static-{height}x{width}-batch-dynamic"


def _trace_inputs(
    family: str, model: nn.Module, return_attn: bool, input_size: tuple[int, int] | None = None
) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[tuple[str, list[int]]]]:
    if family == "rtdetr":
        if input_size is None:
            raise ValueError("an RT-DETR graph needs its processor's input size")
        x = graphs.rtdetr_example(input_size)
        return graphs.RtDetrGraph(model, return_attn), (x,), [("x", [-1, 3, *input_size])]
    if family == "detr":
        return (
            graphs.DetrGraph(model, return_attn),
            graphs.detr_example(),
            [("pixel_values", [-1, 3, -1, -1]), ("pixel_mask", [-1, -1, -1])],
        )
    x = graphs.classifier_example(model, size=input_size)
    return graphs.ClassifierGraph(model, return_attn), (x,), [("x", [-1, *x.shape[1:]])]


def convert(
    family: str, model: nn.Module, return_attn: bool, folder: Path, input_size: tuple[int, int] | None = None
) -> None:
    """Trace `model` (as its flat graph) and write `model.xml` / `model.bin` into `folder` (weights kept fp32);
    input_size: (height, width) of the graph's input (RT-DETR: required; classifiers: their `img_size` if None)."""
    import openvino as ov

    module, example, inputs = _trace_inputs(family, model, return_attn, input_size)
    with warnings.catch_warnings():  # the tracer warns about every Python bool/int it freezes (shape checks)
        warnings.simplefilter("ignore")
        with torch.no_grad():
            converted = ov.convert_model(module, example_input=example, input=inputs)
    ov.save_model(converted, str(folder / "model.xml"), compress_to_fp16=False)


#: Inputs up to this many pixels keep OpenVINO's intermediate buffers between calls (the webcam's fixed canvas, up
#: to 640 x 864); after a larger one (a photo at DETR's 800 px: ~320 MB of buffers for DETR-R50) they are released.
KEEP_BUFFERS_PIXELS = 640 * 864


class CompiledGraph:
    """A compiled OpenVINO model with a pool of infer requests (one per concurrent caller).

    OpenVINO's CPU plugin keeps the intermediate memory of the largest input it has run, shared by the compiled
    model's requests; after an input larger than `KEEP_BUFFERS_PIXELS` that memory is handed back
    (`CompiledModel.release_memory`, when no other request is running), so one 800-px photo does not keep a few
    hundred MB resident for a webcam stream that needs a fraction of it.
    """

    def __init__(self, compiled: Any, weights_file: Path | None = None) -> None:
        self.compiled = compiled
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = 0
        self._weights_file = weights_file  # its mapped pages are dropped after the first call (`drop_file_pages`)
        try:
            self._weights_bytes = weights_file.stat().st_size if weights_file is not None else 0
        except OSError:
            self._weights_bytes = 0

    def weights_bytes(self) -> int:
        """What the compiled graph holds for its weights, estimated by the size of its IR weight file (0 if unknown);
        counted in the loader's model memory budget."""
        return self._weights_bytes

    def __call__(self, inputs: Sequence[torch.Tensor], outputs: int | None = None) -> list[torch.Tensor]:
        """Run the graph; returns its outputs as tensors (copies), or only the first `outputs` of them (the others,
        e.g. the attention maps of a call that asked for logits only, are then not copied out of OpenVINO)."""
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        with self._lock:
            self._running += 1
        try:
            arrays = [t.detach().cpu().float().contiguous().numpy() for t in inputs]
            if outputs is None:
                result = request.infer(arrays)
                return [torch.from_numpy(result[out]) for out in self.compiled.outputs]  # copies (share_outputs=False)
            result = request.infer(arrays, share_outputs=True)  # views of the request's buffers: copy what is kept
            return [torch.from_numpy(result[out].copy()) for out in self.compiled.outputs[:outputs]]
        finally:
            self._idle.put(request)
            with self._lock:
                self._running -= 1
                large = inputs[0].shape[-2] * inputs[0].shape[-1] > KEEP_BUFFERS_PIXELS
                if large and self._running == 0 and hasattr(self.compiled, "release_memory"):
                    self.compiled.release_memory()
                if self._weights_file is not None:  # the first call made the plugin's own copies (bf16)
                    drop_file_pages(self._weights_file)
                    self._weights_file = None


def drop_file_pages(path: Path) -> int:
    """Drop the resident pages of every read-only mapping of `path` in this process (Linux `madvise(MADV_DONTNEED)`);
    returns the bytes advised. OpenVINO maps the IR's weight file (`model.bin`) and keeps it mapped after compiling,
    next to its own copies (bf16); those pages stay resident although a bf16 graph never reads them again. Dropping
    them is safe for a read-only file mapping: a page touched later is read back from the file, unchanged."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return 0
    target = str(Path(path).resolve())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        advised = 0
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() == target and "w" not in fields[1]:
                    lo, hi = (int(v, 16) for v in fields[0].split("-"))
                    if libc.madvise(lo, hi - lo, 4) == 0:  # 4 = MADV_DONTNEED
                        advised += hi - lo
    except (OSError, AttributeError, ValueError) as exc:
        log.info("could not drop the mapped pages of %s (%s): they stay resident", target, exc)
        return 0
    return advised


_core_lock = threading.Lock()
_core: Any = None


def _ov_core() -> Any:
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


def load_graph(
    model_id: str,
    weights: Path | None,
    family: str,
    model: nn.Module,
    return_attn: bool,
    hint: str,
    progress: Callable[[str], None] | None = None,
    source: Callable[[], nn.Module] | None = None,
    input_size: tuple[int, int] | None = None,
) -> CompiledGraph:
    """The compiled graph of `model`: read from the engine cache, or converted (and cached) first.

    hint: "bf16" or "f32" (OpenVINO's INFERENCE_PRECISION_HINT). model: for the shape policy (and the weights
    unless `source` gives them: only a conversion calls it). input_size: (height, width) of a classifier's or an
    RT-DETR's processor (its shape policy). A cache entry OpenVINO cannot read is removed and
    rebuilt once; a failing conversion raises (the caller reports it: no silent fallback).
    """
    graph = "attn" if return_attn else "plain"
    key = cache.entry_key(model_id, weights, "openvino", version(), graph, shape_policy(family, model, input_size))
    core = _ov_core()
    for attempt in (1, 2):
        folder = cache.lookup(key)
        if folder is None:
            message = (
                f"converting {model_id} to OpenVINO ({'with' if return_attn else 'without'} attention "
                f"outputs), once; cached in {cache.cache_root()}"
            )
            log.info(message)
            if progress is not None:  # the visitor's line: no folder of the host
                progress(f"Preparing the fast engine for {model_id} (first use only)…")
            t0 = time.perf_counter()
            module = source() if source is not None else model  # the weights (`model` may be a skeleton)
            sized: dict[str, Any] = {"input_size": input_size} if input_size is not None else {}
            folder = cache.store(key, functools.partial(convert, family, module, return_attn, **sized))
            log.info("converted %s in %.1f s", model_id, time.perf_counter() - t0)
        try:
            ir = core.read_model(str(folder / "model.xml"))
            compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
            return CompiledGraph(compiled, folder / "model.bin")
        except RuntimeError as exc:  # a damaged IR that passed the size check
            if attempt == 2:
                raise
            log.warning("OpenVINO cannot read the cached %s (%s): rebuilding", folder, str(exc)[:200])
            cache.remove(key)
    raise AssertionError("unreachable")
