"""The model cache: load a model once per device and precision, and keep the resident models within a memory budget
(`load`).

Above both `vtdemo.hub` (files -> an exact `LoadedModel`) and `vtdemo.engine` (its fast twin), so neither imports the
other's way up: hub builds, engine converts, this module decides which and keeps the result. The app, the CLI and
`evaluate` load through here (`vtdemo.load_model` / `vtdemo.pipeline.load_model`).

Two limits keep the cache, least recently used evicted first:
- bytes (`set_memory_budget`; the app's `VTDEMO_MODEL_MEMORY_MB`, default 40 % of the machine's memory, at most
  6144 MiB, `vtdemo.memory`): the parameters and buffers of every cached model plus a fast model's compiled graphs,
  shared weights counted once. Room is made before a model is built (its weight file's size is known by then) and
  checked again after;
- count (`VTDEMO_MODEL_CACHE`, default 12): kept as a second, simpler cap for scripts and the CLI (at precision
  fast a model and its exact twin count as two).

A model in use is never evicted: code that runs a model wraps the run in `in_use()`, and every model loaded inside
that block (in this thread) stays until the block ends. A load that cannot make room because the rest is in use waits
up to `WAIT_S` for those runs to finish, then raises `BusyError` (the visitor's line: try again shortly). An evicted
model is dropped from the cache, the functions given to `on_evict` are told (the app releases the cached runs that
still point at it), and the garbage collector and `malloc_trim` hand its memory back to the OS.

Models typed by a web visitor carry `Limits` (the app's `VTDEMO_MAX_MODEL_MB` and the download budget): their weights
are sized before anything is downloaded (`vtdemo.model_size`) and refused past the limit; the operator's own models
(flags / variables) are loaded without a size limit but counted in the same memory budget.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from . import fetching, model_size
from .device import pick_device
from .engine import make_fast, prepare, resident_bytes
from .errors import BusyError, CheckpointError, ModelUnavailableError, UnsupportedModelError
from .hub import LoadedModel, ModelRef, build, files_missing, on_disk, parse_model_id, unavailable
from .memory import MB, default_budget_mb, return_memory
from .settings import PRECISIONS, env_int

log = logging.getLogger(__name__)

#: How long a load waits for models in use by other requests to be released before it answers "busy".
WAIT_S = 30.0
BUSY = "The server's memory for models is taken by other visitors' running requests: please try again in a minute."

Key = tuple[str, str, str]  # (model, device, precision)

_cache: OrderedDict[Key, LoadedModel] = OrderedDict()
_locks: dict[Key, threading.Lock] = {}
_guard = threading.Condition()  # guards the cache and the pins; notified when a pin is released
_pins: Counter[tuple[str, str]] = Counter()  # (model, device) -> running blocks using it
_scope = threading.local()  # this thread's `in_use` block: the pins it holds
_listeners: list[weakref.ref] = []  # weak: an app that is gone is not kept alive by the cache
_budget: list[int | None] = [None]  # bytes; None: the default (`vtdemo.memory.default_budget_mb`)
_slots: list[threading.Semaphore | None] = [None]  # the model slots (`set_model_slots`); None: no limit


@dataclass(frozen=True)
class Limits:
    """What a model typed by a web visitor must keep to. max_bytes: the largest weight file loaded (checked before
    downloading); before_load / after_load: called with the model reference before it is fetched and once it loaded
    (the app's download budget, `vtdemo.downloads.DownloadBudget`)."""

    max_bytes: int
    before_load: Callable[[ModelRef], None] | None = None
    after_load: Callable[[ModelRef], None] | None = None


def cache_size() -> int:
    """How many loaded models are kept per process ($VTDEMO_MODEL_CACHE, default 12: at precision fast a model and
    the exact twin its gradient methods load count as two, and the bytes budget is what bounds memory), read when a
    model loads."""
    return env_int("VTDEMO_MODEL_CACHE", 12, minimum=1)


def set_memory_budget(mb: int | None) -> int:
    """Keep the resident models within `mb` MiB together (None: the default, 40 % of the machine's memory, at most
    6144); returns the budget in bytes. Takes effect at the next load."""
    _budget[0] = None if mb is None else int(mb) * MB
    return memory_budget()


def memory_budget() -> int:
    """The model memory budget in bytes."""
    given = _budget[0]
    return given if given is not None else default_budget_mb() * MB


def on_evict(listener: Callable[[LoadedModel], None]) -> None:
    """Call `listener(loaded)` whenever a model leaves the cache (the app releases the cached runs using it). Held
    weakly (a bound method as long as its object lives): keep a reference to a plain function you pass."""
    ref = weakref.WeakMethod(listener) if hasattr(listener, "__self__") else weakref.ref(listener)
    with _guard:
        _listeners[:] = [r for r in _listeners if r() is not None] + [ref]


def _key(ref: ModelRef, device: torch.device, precision: str = "exact") -> Key:
    return (str(ref.folder) if ref.folder else f"{ref.repo}@{ref.revision or 'main'}", str(device), precision)


def resident() -> int:
    """Bytes held by the cached models together (shared storages once)."""
    with _guard:
        return _total()


def _total() -> int:
    seen: set[int] = set()
    return sum(resident_bytes(m, seen) for m in _cache.values())


@contextlib.contextmanager
def in_use(slot: bool = False) -> Iterator[None]:
    """Every model `load` returns inside this block (in this thread) is in use until the block ends: never evicted
    under a running request. Blocks nest. slot: also hold one of the model slots (`set_model_slots`) for the block,
    waiting for one first (the app's model calls; a download inside steps out of it, `vtdemo.fetching`)."""
    outer = getattr(_scope, "pins", None)
    pins: list[tuple[str, str]] = []
    _scope.pins = pins
    held = _take_slot() if slot and not getattr(_scope, "slot", None) else None
    try:
        yield
    finally:
        if held is not None:
            _scope.slot = None
            held.release()
        _scope.pins = outer
        with _guard:
            for pin in pins:
                _pins[pin] -= 1
                if _pins[pin] <= 0:
                    del _pins[pin]
            _guard.notify_all()


def set_model_slots(n: int | None) -> None:
    """Let `n` blocks `in_use(slot=True)` run at once (the app's `VTDEMO_CONCURRENCY`); None: no limit."""
    _slots[0] = None if n is None else threading.Semaphore(max(1, int(n)))


def _take_slot() -> threading.Semaphore | None:
    slots = _slots[0]
    if slots is not None:
        slots.acquire()
        _scope.slot = slots
    return slots


@contextlib.contextmanager
def _slot_set_aside() -> Iterator[None]:
    """Give this thread's model slot to others for the block (a download), then wait for it again."""
    slots = getattr(_scope, "slot", None)
    if slots is None:
        yield
        return
    slots.release()
    try:
        yield
    finally:
        slots.acquire()


def _pin(key: Key) -> None:
    """(Under the guard.) Mark the model in use for this thread's `in_use` block, once per block."""
    pins = getattr(_scope, "pins", None)
    if pins is not None and key[:2] not in pins:
        pins.append(key[:2])
        _pins[key[:2]] += 1


def is_loaded(model: str, device: str | torch.device | None = None, precision: str = "exact") -> bool:
    """Is this model already loaded (so that `load` returns at once)? False for ids that are not valid."""
    try:
        ref = parse_model_id(model)
    except ModelUnavailableError:
        return False
    key = _key(ref, torch.device(device) if device is not None else pick_device(), precision)
    with _guard:
        return key in _cache


def is_available(model: str, device: str | torch.device | None = None, precision: str = "exact") -> bool:
    """Can this model be had without a download: loaded already, or its files on this machine (`hub.on_disk`)?
    False for ids that are not valid."""
    if is_loaded(model, device, precision):
        return True
    try:
        return on_disk(parse_model_id(model))
    except ModelUnavailableError:
        return False


def load(
    model: str,
    device: str | torch.device | None = None,
    precision: str = "exact",
    limits: Limits | None = None,
    progress: fetching.Progress | None = None,
    session: str | None = None,
) -> LoadedModel:
    """Load (once) and return the model named by a repo id, `repo@revision` or a folder; cached per device and
    precision within the memory budget (module docstring). precision: "exact" (fp32 PyTorch, the parity-tested path)
    or "fast" (`vtdemo.engine`: an optimized runtime at reduced precision, converted on first use). limits: a
    visitor's model (`Limits`); None: the operator's or a script's, no size limit. Files not in the Hub cache yet
    are downloaded out of the model slot (`vtdemo.fetching`: progress(fraction, text) hears how far; session: the
    visitor's, one download each)."""
    if precision not in PRECISIONS:
        raise UnsupportedModelError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    ref = parse_model_id(model)
    dev = torch.device(device) if device is not None else pick_device()
    key = _key(ref, dev, precision)
    with _guard:
        if key in _cache:
            _pin(key)
            _cache.move_to_end(key)
            return _cache[key]
        lock = _locks.setdefault(key, threading.Lock())
    # refused before anything is downloaded: by the file's size, then by the whole memory budget
    size = model_size.check(ref, limits.max_bytes) if limits is not None else _size(ref)
    if limits is not None:
        _refuse_larger_than_budget(size, ref.text)
        if limits.before_load is not None:
            limits.before_load(ref)
    if files_missing(ref):  # out of the model slot, a few at once, one per visitor
        fetching.download(ref, session, progress, _slot_set_aside)
    with lock:  # one load per key at a time (two visitors asking for one new model: one load, both served)
        with _guard:
            if key in _cache:
                _pin(key)
                return _cache[key]
            shared = _cache.get(_key(ref, dev)) if precision == "fast" else None
        if shared is None and size:  # new weights of a known size come in: make room for them first
            _make_room(size, key)
        if precision == "fast":
            if shared is not None:  # the exact model is loaded already: share its weights (never released)
                loaded = make_fast(shared)
            else:  # weights of its own, which the app releases once compiled (`engine.release_weights`)
                loaded = make_fast(_visitor_safe(ref, dev), reload=lambda: load(model, dev).model)
        else:
            loaded = _visitor_safe(ref, dev)
        with _guard:
            _cache[key] = loaded
            _pin(key)
        _make_room(0, key)  # the real bytes are known now
        if limits is not None and limits.after_load is not None:
            limits.after_load(ref)
    return loaded


def _size(ref: ModelRef) -> int | None:
    """The weight file's size for making room before an operator's model loads (None: unknown, room made after)."""
    try:
        return model_size.weights_bytes(ref)
    except (model_size.SizeUnknown, ModelUnavailableError):  # the load itself will say what is wrong
        return None


def _refuse_larger_than_budget(size: int | None, visitor: str) -> None:
    """A visitor's model whose weights alone exceed the whole model memory budget is refused (before downloading)."""
    if size is not None and size > memory_budget():
        raise ModelUnavailableError(
            f"{visitor} was not loaded: its weights ({size / MB:,.0f} MB) do not fit this server's memory "
            "for models. Pick a smaller model."
        )


def _make_room(incoming: int, key: Key) -> None:
    """Evict least recently used models (never one in use, never `key`) until `incoming` more bytes fit the budget
    and the cached models keep the count cap (checked once `key` is in: before, only bytes of a known size make
    room); wait up to `WAIT_S` for models in use, then raise `BusyError`. An operator's model larger than the whole
    budget is loaded, and logged (a visitor's was refused before, `_refuse_larger_than_budget`)."""
    budget = memory_budget()
    if incoming > budget:
        log.warning("%s: %d MiB of weights, over the model budget (%d MiB)", key[0], incoming >> 20, budget >> 20)
    evicted: list[LoadedModel] = []
    deadline = time.monotonic() + WAIT_S
    mine = set(getattr(_scope, "pins", None) or ())
    with _guard:
        while True:
            # the count cap is kept once a model is in (a load that fails must not have evicted anything for it)
            if _total() + incoming <= budget and len(_cache) <= cache_size():
                break
            victim = next((k for k in _cache if k != key and k[:2] not in _pins), None)
            if victim is not None:
                evicted.append(_cache.pop(victim))
                why = (
                    f"to keep at most {cache_size()} models (VTDEMO_MODEL_CACHE)"
                    if len(_cache) > cache_size()
                    else f"to stay within {budget // MB} MiB"
                )
                log.info("model cache: evicted %s (%s, %s) %s", *victim, why)
                continue
            # Everything else is in use. Wait for other requests' models (not this thread's own: it would wait on
            # itself), unless the model is already in (then the budget holds again once they finish).
            others = [k for k in _cache if k != key and not (k[:2] in mine and _pins[k[:2]] == 1)]
            if not others or key in _cache:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise BusyError(BUSY)
            _guard.wait(left)
    if evicted:
        with _guard:
            listeners = [f for r in _listeners if (f := r()) is not None]
        for gone in evicted:
            for listener in listeners:
                listener(gone)
        del evicted, gone, listeners
        return_memory()


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
        _pins.clear()


def preconvert(model: str, progress: Callable[[str], None] | None = None) -> LoadedModel:
    """Load `model` with precision "fast" and convert every graph the app and the CLI use into the engine cache
    (`python -m vtdemo convert`, e.g. while a Hugging Face Space is built): the one with attention outputs and,
    except for RT-DETR (which has one graph), the plain one."""
    loaded = load(model, device="cpu", precision="fast")
    prepare(loaded, True, progress)
    if loaded.family != "rtdetr":
        prepare(loaded, False, progress)
    return loaded
