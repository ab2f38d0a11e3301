"""What every tab shares: the app's services (settings, device, model loading, the per-session run index) and the
small helpers that turn results and failures into what Gradio shows.

`Services` is made once per app (`vtdemo.ui.app.create_app`) and handed to each tab. Models load through
`vtdemo.loader.load` (its cache is the only one); the first use of a model in this process shows a progress message.
Each photo's run lives in a `gr.State` of the visitor's session and is indexed by `vtdemo.ui.sessions.RunIndex`, so
that it is released when the session ends or the memory budget needs the room; a view control that gets a released
run says so (`RELEASED`) and asks for the photo again.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from gradio.utils import get_upload_folder

from .. import pipeline
from ..assets import examples_dir
from ..errors import VtdemoError, for_visitor
from . import priority
from .components import Click, safe_image
from .config import AppConfig, model_nice_default
from .sessions import RunIndex

log = logging.getLogger(__name__)

#: The warm-up starts its next model only after visitors' model calls have been quiet this long.
WARM_UP_QUIET_S = 2.0

RELEASED = (
    "This photo's cached results were released (your session ended, or the server needed the memory for "
    "other visitors): please run it again."
)
STATE_TTL_S = 3600  # a photo's cached run is dropped this long after its last use, even if the tab stays open
#: Event settings: re-renders from the cache never wait behind someone else's model call.
VIEW = dict(concurrency_id="view", concurrency_limit=4, trigger_mode="always_last", show_progress="hidden")
MODEL = dict(concurrency_id="model")


def _stale(args: tuple, kwargs: dict) -> bool:
    """Is any argument a run state (a class with a `superseded` field) that a newer run replaced?"""
    return any(hasattr(type(v), "superseded") and v.superseded for v in (*args, *kwargs.values()))


def _skip_all(out: Any) -> Any:
    if isinstance(out, dict):
        return {k: gr.skip() for k in out}
    if isinstance(out, tuple):
        return tuple(gr.skip() for _ in out)
    return gr.skip()


def fresh(fn: Callable) -> Callable:
    """For a handler that reads a photo's cached run: if the visitor ran a newer photo or model while it worked (its
    state was `superseded`, see `RunIndex.hold`), its outputs are dropped (`gr.skip()` each), so that a late view
    of the old run never lands over the new one (Gradio runs view and model events of one session concurrently)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def steps(*args: Any, **kwargs: Any) -> Any:
            for out in fn(*args, **kwargs):
                if _stale(args, kwargs):
                    yield _skip_all(out)
                    return
                yield out

        return steps

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        return _skip_all(out) if _stale(args, kwargs) else out

    return call


@contextlib.contextmanager
def model_call(slot: bool = False) -> Iterator[None]:
    """The model work of a handler: every model it loads stays in use until the block ends (never evicted under it,
    `pipeline.models_in_use`; `slot`: it also holds one of the app's model slots), and the server's threads give way
    to the event loop while it runs (`ui.priority`)."""
    with pipeline.models_in_use(slot=slot):
        priority.yield_to_event_loop()
        yield


class VisitorCalls:
    """Visitors' model calls running or waiting for a slot, and when the last one ended: the warm-up gives way to
    them (`Services.warm_up`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.last_end = 0.0

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
                self.last_end = time.monotonic()

    def quiet_for(self, seconds: float) -> bool:
        """No visitor's model call running or waiting, none ended in the last `seconds`."""
        with self._lock:
            return self.running == 0 and time.monotonic() - self.last_end >= seconds


VISITORS = VisitorCalls()


def runs_models(fn: Callable) -> Callable:
    """For a handler that loads and runs models: it holds one of the app's model slots (`VTDEMO_CONCURRENCY`; a
    download inside steps out of it, `vtdemo.fetching`), and every model it loads stays in use until it returns, so
    that the model cache's memory budget never evicts it under the running request (`pipeline.models_in_use`).

    A generator handler (a panel that shows its steps as they come) holds them for each step: Gradio runs each
    step with `next()` in a worker thread of its own, and the slot and the pins belong to the thread that runs the
    step; between two steps other visitors' model calls may go."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def steps(*args: Any, **kwargs: Any) -> Any:
            made = fn(*args, **kwargs)
            while True:
                with VISITORS.call(), model_call(slot=True):
                    try:
                        out = next(made)
                    except StopIteration:
                        return
                yield out

        return steps

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with VISITORS.call(), model_call(slot=True):
            return fn(*args, **kwargs)

    return call


def hold_model_slots(demo: gr.Blocks) -> int:
    """Every event of the "model" group holds a model slot while it runs (`runs_models`), wrapped here in one place
    so that none is missed. Gradio admits `concurrency + downloads` of them at once: those downloading a model wait
    outside the slots, so the others' runs on loaded models go on. Returns how many events were wrapped."""
    wrapped = 0
    for block_fn in demo.fns.values():
        if block_fn.concurrency_id == MODEL["concurrency_id"] and block_fn.fn is not None:
            block_fn.fn = runs_models(block_fn.fn)
            wrapped += 1
    return wrapped


def message(exc: BaseException) -> str:
    """One line for a visitor. Our errors already say what to do (an operator's remedy goes to the log, the visitor
    reads `for_visitor`); anything else is logged with its traceback."""
    if isinstance(exc, VtdemoError):
        if exc.visitor:
            log.warning("%s", exc)  # the operator's line: what to set or delete on the server
        return for_visitor(exc)
    log.exception("unexpected error in a handler")
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"Unexpected error ({type(exc).__name__}: {text}). The app keeps running; please report this."


def not_yet(text: str) -> Any:
    """A button pressed before there is anything to act on: a hint (an info toast), and no output changes."""
    gr.Info(text)
    return gr.skip()


#: The heat maps' colour scale (OpenCV's COLORMAP_JET, `vtdemo.render.heatmap`), from the lowest to the highest value.
JET_STOPS = ("#00007f", "#0000ff", "#007fff", "#00ffff", "#7fff7f", "#ffff00", "#ff7f00", "#ff0000", "#7f0000")
COLORBAR_CSS = (
    ".vt-colorbar { display: flex; align-items: center; gap: 0.5em; font-size: 0.8em; margin: 0.15em 0 0.3em; }\n"
    ".vt-colorbar .bar { flex: 1; height: 0.7em; border-radius: 2px; "
    f"background: linear-gradient(to right, {', '.join(JET_STOPS)}); }}\n"
)


def colorbar(elem_id: str) -> gr.HTML:
    """The colour scale under a heat map: low (dark blue) to high (dark red), relative to the map's own range."""
    return gr.HTML(
        '<div class="vt-colorbar" title="colours are relative to this map\'s own lowest and highest value">'
        '<span>low</span><span class="bar"></span><span>high</span></div>',
        elem_id=elem_id,
        padding=False,
    )


def with_details(shown: str, details: str) -> str:
    """A status line whose technical part (engine, precision, grid sizes) sits in a collapsed "details" element."""
    return f"{shown} <details class='vt-details'><summary>details</summary>{details}</details>"


def status(text: str = "", kind: str = "ok") -> str:
    """A status line: plain, a warning or a hint."""
    if not text:
        return ""
    return {"ok": "", "warn": "⚠️ ", "info": "ℹ️ "}[kind] + text


def session_of(request: Any) -> str | None:
    """The Gradio session (one browser tab or one gradio_client Client) a request belongs to."""
    return getattr(request, "session_hash", None)


def click_point(evt: Click) -> tuple[float, float] | None:
    """(x, y) displayed pixels of a click on an image, or None if the event carries no finite point."""
    index = evt.index
    if not isinstance(index, (list, tuple)) or len(index) < 2:
        return None
    try:
        x, y = float(index[0]), float(index[1])
    except (TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def heads_choice(value: str | None) -> int | None:
    """A head picker's value ("mean" or "3") -> None or the head index."""
    return None if value in (None, "", "mean") else int(value)


def image_limits(config: AppConfig) -> dict[str, Any]:
    """What every image input accepts besides uploads (the examples) and how large a data URL may be (`safe_image`)."""
    from gradio.utils import _parse_file_size

    return {"allowed": [examples_dir()], "max_bytes": _parse_file_size(config.max_file_size) or 20 * 2**20}


def photo_input(
    elem_id: str, height: int, examples: list[str], image_limits: dict[str, Any], examples_label: str
) -> gr.components.Component:
    """A tab's photo input (upload or paste, through the `SafeImage` door) with its example photos under it."""
    image = safe_image(sources=["upload", "clipboard"], label="Photo", height=height, elem_id=elem_id, **image_limits)
    if examples:
        gr.Examples(
            examples=[[p] for p in examples],
            inputs=[image],
            cache_examples=False,
            label=examples_label,
            examples_per_page=8,
        )
    return image


# ------------------------------------------------------------------------------------------------- exports


def export_dir() -> Path:
    """A fresh folder inside Gradio's upload cache (served to this app only, cleaned with the cache)."""
    folder = Path(get_upload_folder()) / "vtdemo" / f"export-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def safe_stem(name: str) -> str:
    stem = Path(name).stem or "image"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60] or "image"


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_npy(path: Path, relevance: torch.Tensor) -> Path:
    np.save(path, relevance.detach().cpu().float().numpy())
    return path


# ------------------------------------------------------------------------------------------------- services


def _is_path(text: str) -> bool:
    """Does a picker value name a local path rather than a Hub repo id?"""
    try:
        return pipeline.looks_like_path(text) or Path(text).expanduser().exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a usable path either
        return True


class Services:
    """One app's settings, device, model loading and run index, shared by its tabs."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.device = pipeline.pick_device(config.device)  # chosen once, here
        self.runs = RunIndex(config.cache_mb * 2**20)
        if config.precision not in pipeline.PRECISIONS:
            raise VtdemoError(f"precision {config.precision!r}: choose from {', '.join(pipeline.PRECISIONS)}")
        log.info("app precision: %s (gradient methods always run on the exact fp32 PyTorch model)", config.precision)
        budget = pipeline.set_model_memory(config.model_memory_mb) // pipeline.MB
        how = "set" if config.model_memory_mb else "default: 40 percent of this machine's memory, at most 6144"
        log.info(
            "model memory: at most %d MiB for the loaded models together (%s); models typed by visitors: weights of at "
            "most %d MiB, their downloads at most %d MiB on disk",
            budget,
            how,
            config.max_model_mb,
            config.download_cache_mb,
        )
        configured = {config.vit_model, config.swin_model, config.detr_model, config.rtdetr_model}
        self.downloads = pipeline.DownloadBudget(config.download_cache_mb * pipeline.MB, configured)
        self.limits = pipeline.ModelLimits(
            config.max_model_mb * pipeline.MB, self.downloads.before_load, self.downloads.after_load
        )
        pipeline.on_model_evicted(self._model_evicted)  # held weakly: an app that is gone is not called
        pipeline.set_model_slots(config.concurrency)  # model calls at once; downloads wait beside them
        nice = model_nice_default() if config.model_nice is None else config.model_nice
        priority.configure(nice)  # model calls give way to the event loop's light events
        if nice:
            log.info("model calls run at nice %d, below the event loop (light events first); 0 turns it off", nice)
        pipeline.set_download_slots(config.downloads)
        self.fallbacks: dict[str, str] = {}  # model id -> why the fast engine could not convert it (it runs exact)

    def default_model(self, family: str) -> str:
        return {"vit": self.config.vit_model, "swin": self.config.swin_model, "detr": self.config.detr_model}[family]

    def load(
        self, model_id: Any, family: str, progress: Any = None, session: str | None = None, announce: bool = True
    ) -> pipeline.LoadedModel:
        """Load (once, then cached by `vtdemo.loader`) at the app's precision, with a visible message on first use and
        on conversion; check the family fits. A download runs out of the model slot with its progress shown, one per
        visitor (`session`), `config.downloads` at once (`vtdemo.fetching`). A fast model is converted here (DETR: its
        graph with attention outputs, which the webcam shares) and keeps no PyTorch weights of its own
        (`pipeline.release_weights`); one the fast engine cannot convert runs exact (logged, shown, and named in
        `engine_line`). `announce`: toasts for a visitor (False outside an event: the warm-up logs instead)."""
        if model_id is not None and not isinstance(model_id, str):
            raise VtdemoError("the model must be a Hugging Face repo id (org/name[@revision]) or empty for the default")
        model_id = (model_id or "").strip() or self.default_model(family)
        configured = {self.config.vit_model, self.config.swin_model, self.config.detr_model, self.config.rtdetr_model}
        if model_id not in configured and not self.config.allow_typed_folders and _is_path(model_id):
            raise VtdemoError(
                f"'{model_id}': local folders can only be chosen by whoever runs the app "
                "(--vit-model / --swin-model / --detr-model / --rtdetr-model); type a Hugging Face repo id instead"
            )
        limits = None if model_id in configured else self.limits  # the operator's models: counted, not limited
        precision = self.config.precision
        first = not pipeline.is_loaded(model_id, self.device, precision)
        if first and progress is not None:
            progress(0.02, desc=f"Loading {model_id} (first use: downloads the weights if they are not cached)…")
        started = time.perf_counter()
        say = None if progress is None else (lambda fraction, text: progress(fraction, desc=text))
        loaded = pipeline.load_model(
            model_id, device=self.device, precision=precision, limits=limits, progress=say, session=session
        )
        detectors = ("detr", "rtdetr")  # family "detr" here: the Detect tab's detectors, DETR or RT-DETR
        if family == "detr" and loaded.family not in detectors:
            raise VtdemoError(
                f"{model_id} is an image classifier ({pipeline.FAMILIES[loaded.family].display}): pick a DETR or "
                f"RT-DETR model here, e.g. {pipeline.DEFAULT_DETR} or {pipeline.DEFAULT_RTDETR}, and use the Classify "
                "tab for classifiers"
            )
        if family != "detr" and loaded.family in detectors:
            raise VtdemoError(
                f"{model_id} is a detection model ({pipeline.FAMILIES[loaded.family].display}): use it in the "
                "Detect tab"
            )
        if loaded.precision == "fast":
            loaded = self._convert(loaded, progress, announce)
        if announce and first and time.perf_counter() - started > 1.0:
            gr.Info(f"Loaded {model_id} on {self.device.type.upper()} in {time.perf_counter() - started:.1f} s")
        return loaded

    def _model_evicted(self, loaded: pipeline.LoadedModel) -> None:
        """The model cache evicted `loaded` for the memory budget: release the cached runs that still point at it, so
        that its memory really goes (a view control on one of them asks for the photo again, `RELEASED`)."""
        n = self.runs.release_model(loaded)
        if n:
            log.info("%s was evicted from the model cache: released %d cached run(s) using it", loaded.id, n)

    def _convert(self, loaded: pipeline.LoadedModel, progress: Any, announce: bool = True) -> pipeline.LoadedModel:
        """Convert the fast graph now (cached on disk; shown as progress) and release the PyTorch weights; or,
        if the converter fails, the same model on the exact path, with the reason recorded and shown."""
        if loaded.id in self.fallbacks:
            return pipeline.exact_model(loaded)
        say = None if progress is None else (lambda text: progress(0.1, desc=text))
        try:
            pipeline.prepare(loaded, True, say)
        except Exception as exc:  # noqa: BLE001 - any converter failure: run exact, and say so (not silently)
            reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
            log.warning("%s: the fast engine could not convert it (%s); running it exact", loaded.id, reason)
            self.fallbacks[loaded.id] = reason
            if announce:
                gr.Warning(f"{loaded.id} runs exact (fp32 PyTorch): the fast engine could not convert it ({reason})")
            return pipeline.exact_model(loaded)
        pipeline.release_weights(loaded)
        return loaded

    def warm_up(self) -> list[str]:
        """Prepare the configured models (the Classify columns', the Detect tab's DETR, the RT-DETR the webcam may
        pick) as their first visitor would: load, and at precision fast convert, check the fidelity guard and release
        the PyTorch weights. One at a time, each holding a model slot as a visitor's call does, and each only once the
        visitors' model calls have been quiet for `WARM_UP_QUIET_S`, at their nice below the event loop: a visitor who
        comes meanwhile waits for at most the one model being prepared, and if it is theirs, for it instead of
        preparing it twice (`vtdemo.loader`). A model that cannot be prepared (no network, no weights) is logged with
        its reason and left to load on first use, where its visitor gets the message. Returns the ids prepared."""
        config, ready = self.config, []
        models = (
            ("vit", config.vit_model),
            ("swin", config.swin_model),
            ("detr", config.detr_model),
            ("detr", config.rtdetr_model),
        )
        log.info("warm-up: preparing %s in the background", ", ".join(m for _, m in models))
        priority.lower_this_thread()  # below the event loop, as a visitor's model call runs (`ui.priority`)
        for family, model_id in models:
            while not VISITORS.quiet_for(WARM_UP_QUIET_S):
                time.sleep(0.2)
            started = time.perf_counter()
            try:
                with model_call(slot=True):
                    self.load(model_id, family, announce=False)
            except Exception as exc:  # noqa: BLE001 - any failure: this model loads on first use instead
                why = for_visitor(exc) if isinstance(exc, VtdemoError) else f"{type(exc).__name__}: {exc}"
                log.warning("warm-up: %s not prepared (%s); it loads on first use", model_id, why.splitlines()[0][:300])
                continue
            log.info("warm-up: %s ready in %.1f s", model_id, time.perf_counter() - started)
            ready.append(model_id)
        return ready

    def engine_line(self, loaded: pipeline.LoadedModel, size: tuple[int, int] | None = None) -> str:
        """What produced a result of `loaded` at input `size`, for a status line (`vtdemo.ui.engine_text.engine_line`)."""
        from .engine_text import engine_line

        return engine_line(loaded, self.fallbacks.get(loaded.id), size)

    def cached(self, state: Any) -> Any:
        """The state if its run is still held (marked as just used); None, with a toast, if it was released."""
        if state is None:
            return None
        if getattr(state, "released", False):
            gr.Warning(RELEASED)
            return None
        self.runs.touch(state)
        return state

    def end_session(self, request: gr.Request) -> None:
        """`demo.unload`: the visitor's tab (or API client) is gone; release its cached runs now rather than when
        Gradio drops its state (an hour later)."""
        n = self.runs.end(session_of(request))
        if n:
            log.info("session ended: released %d cached run(s)", n)

    def forget(self, state: Any) -> None:
        """`gr.State(delete_callback=...)`: Gradio deleted a state whose time to live ran out."""
        if state is not None:
            self.runs.forget(state)

    def state(self) -> gr.State:
        """A per-session cache slot whose run is released when Gradio drops it."""
        return gr.State(None, time_to_live=STATE_TTL_S, delete_callback=self.forget)
