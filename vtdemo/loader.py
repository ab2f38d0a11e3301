"""The model cache: load a model once per device and precision, keep the most recently used (`load`).

Above both `vtdemo.hub` (files -> an exact `LoadedModel`) and `vtdemo.engine` (its fast twin), so neither imports the
other's way up: hub builds, engine converts, this module decides which and keeps the result. The app, the CLI and
`evaluate` load through here (`vtdemo.load_model` / `vtdemo.pipeline.load_model`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

from .device import pick_device
from .engine import make_fast, prepare
from .errors import CheckpointError, ModelUnavailableError, UnsupportedModelError
from .hub import LoadedModel, ModelRef, build, parse_model_id, unavailable
from .settings import PRECISIONS, env_int

_cache: OrderedDict[tuple[str, str, str], LoadedModel] = OrderedDict()
_locks: dict[tuple[str, str, str], threading.Lock] = {}
_guard = threading.Lock()


def cache_size() -> int:
    """How many loaded models are kept per process ($VTDEMO_MODEL_CACHE, default 6), read when a model loads."""
    return env_int("VTDEMO_MODEL_CACHE", 6, minimum=1)


def _key(ref: ModelRef, device: torch.device, precision: str = "exact") -> tuple[str, str, str]:
    return (str(ref.folder) if ref.folder else f"{ref.repo}@{ref.revision or 'main'}", str(device), precision)


def is_loaded(model: str, device: str | torch.device | None = None, precision: str = "exact") -> bool:
    """Is this model already loaded (so that `load` returns at once)? False for ids that are not valid."""
    try:
        ref = parse_model_id(model)
    except ModelUnavailableError:
        return False
    key = _key(ref, torch.device(device) if device is not None else pick_device(), precision)
    with _guard:
        return key in _cache


def load(model: str, device: str | torch.device | None = None, precision: str = "exact") -> LoadedModel:
    """Load (once) and return the model named by a repo id, `repo@revision` or a folder; LRU-cached per device and
    precision. precision: "exact" (fp32 PyTorch, the parity-tested path) or "fast" (`vtdemo.engine`: an optimized
    runtime at reduced precision, converted on first use)."""
    if precision not in PRECISIONS:
        raise UnsupportedModelError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    ref = parse_model_id(model)
    dev = torch.device(device) if device is not None else pick_device()
    key = _key(ref, dev, precision)
    with _guard:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # one load per key at a time; other keys load in parallel
        with _guard:
            if key in _cache:
                return _cache[key]
        if precision == "fast":
            with _guard:
                shared = _cache.get(_key(ref, dev))
            if shared is not None:  # the exact model is loaded already: share its weights (never released)
                loaded = make_fast(shared)
            else:  # weights of its own, which the app releases once compiled (`engine.release_weights`)
                loaded = make_fast(_visitor_safe(ref, dev), reload=lambda: load(model, dev).model)
        else:
            loaded = _visitor_safe(ref, dev)
        with _guard:
            _cache[key] = loaded
            while len(_cache) > cache_size():
                _cache.popitem(last=False)
    return loaded


def _visitor_safe(ref: ModelRef, dev: torch.device) -> LoadedModel:
    """`hub.build`, with a visitor's line on a damaged checkpoint (its message names server paths and their fix)."""
    try:
        return build(ref, dev)
    except CheckpointError as exc:
        exc.visitor = exc.visitor or unavailable(ref.text)
        raise


def clear_cache() -> None:
    """Forget every loaded model (tests; freeing memory)."""
    with _guard:
        _cache.clear()
        _locks.clear()


def preconvert(model: str, progress: Callable[[str], None] | None = None) -> LoadedModel:
    """Load `model` with precision "fast" and convert every graph the app uses into the engine cache
    (`python -m vtdemo convert`, e.g. while a Hugging Face Space is built)."""
    loaded = load(model, device="cpu", precision="fast")
    prepare(loaded, True, progress)
    if loaded.family == "detr":
        prepare(loaded, False, progress)
    return loaded
