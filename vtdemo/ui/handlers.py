"""Event handlers: Gradio values in, `vtdemo` calls, Gradio values out. Thin on purpose.

Each photo's raw model output is kept in a `gr.State` (a `ClassifyState` per classifier column, a `DetectState` for
DETR), so that every control that only changes the view (threshold, class filter, method, head fusion, opacity, a
clicked detection or point) re-renders from that cache and never runs the model again. Errors become one line in
the panel's status (plus a toast); a traceback only ever goes to the server log.

The cached runs are indexed by session (`vtdemo.ui.sessions.RunIndex`): a session's runs are released as soon as
the session ends (`end_session`, wired to `demo.unload`), and all runs together stay within `--cache-mb` (the least
recently used are released first). A view control that gets a released run says so and asks for the photo again.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from gradio.utils import get_upload_folder
from PIL import Image

from .. import hub, pipeline, render
from ..device import pick_device
from ..errors import ExplainError, VtdemoError
from ..images import load_image
from . import views, webcam
from .components import BoxCanvas, BoxView, Click, upload_name
from .config import AppConfig
from .sessions import RunIndex

log = logging.getLogger(__name__)

FAMILY_NAMES = {"vit": "ViT / DeiT", "swin": "Swin", "detr": "DETR"}
RELEASED = ("This photo's cached results were released (your session ended, or the server needed the memory for "
            "other visitors): please run it again.")


def message(exc: BaseException) -> str:
    """One line for the user. Our errors already say what to do; anything else is logged with its traceback."""
    if isinstance(exc, VtdemoError):
        return str(exc)
    log.exception("unexpected error in a handler")
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"Unexpected error ({type(exc).__name__}: {text}). The app keeps running; please report this."


def _is_path(text: str) -> bool:
    """Does a picker value name a local path rather than a Hub repo id?"""
    try:
        return hub.looks_like_path(text) or Path(text).expanduser().exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a usable path either
        return True


def _click_point(evt: Click) -> tuple[float, float] | None:
    """(x, y) displayed pixels of a click on an image, or None if the event carries no finite point."""
    index = evt.index
    if not isinstance(index, (list, tuple)) or len(index) < 2:
        return None
    try:
        x, y = float(index[0]), float(index[1])
    except (TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def status(text: str = "", kind: str = "ok") -> str:
    if not text:
        return ""
    return {"ok": "", "warn": "⚠️ ", "info": "ℹ️ "}[kind] + text


def session_of(request: Any) -> str | None:
    """The Gradio session (one browser tab or one gradio_client Client) a request belongs to."""
    return getattr(request, "session_hash", None)


def export_dir() -> Path:
    """A fresh folder inside Gradio's upload cache (served to this app only, cleaned with the cache)."""
    folder = Path(get_upload_folder()) / "vtdemo" / f"export-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class ClassifyState:
    """One classifier column's cache: the run (logits + attention) and the current explanation settings."""

    run: pipeline.ClassifierRun | None  # None once released
    name: str
    opts: views.MapOptions = field(default_factory=views.MapOptions)
    relevance: torch.Tensor | None = None
    target: dict[str, Any] | None = None
    method: str = ""
    predictions: list[pipeline.Prediction] = field(default_factory=list)
    released: bool = False

    def release(self) -> None:
        """Drop the run and the map (the session ended, or the memory budget needs the room)."""
        self.run, self.relevance, self.target, self.predictions, self.released = None, None, None, [], True


@dataclass
class DetectState:
    """The Detect tab's cache: DETR's run, the files of the box view, what is shown, and the attention view."""

    run: pipeline.DetrRun | None  # None once released
    name: str
    canvas: BoxCanvas | None
    opts: views.DetectOptions = field(default_factory=views.DetectOptions)
    dets: list[pipeline.Detection] = field(default_factory=list)
    map_method: str = "detr-decoder"
    query: int | None = None
    point: tuple[float, float] | None = None
    relevance: torch.Tensor | None = None
    map_target: dict[str, Any] = field(default_factory=dict)
    released: bool = False

    def release(self) -> None:
        """Drop the run (with its attention) and the map. The box view's files stay until Gradio's cache expiry:
        a client may still be downloading them."""
        self.run, self.canvas, self.relevance, self.dets, self.released = None, None, None, [], True


class Handlers:
    """All event handlers of one app, sharing its settings and the chosen device."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.device = pick_device(config.device)  # chosen once, here
        self._loaded: set[tuple[str, str]] = set()
        self.runs = RunIndex(config.cache_mb * 2**20)

    # ------------------------------------------------------------------------------------------------- sessions

    def _cached(self, state: Any) -> Any:
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

    # ------------------------------------------------------------------------------------------------- models

    def load(self, model_id: str | None, family: str, progress: Any = None) -> hub.LoadedModel:
        """Load (once, then cached by `hub.load`) with a visible message on first use; check the family fits."""
        default = {"vit": self.config.vit_model, "swin": self.config.swin_model, "detr": self.config.detr_model}
        if model_id is not None and not isinstance(model_id, str):
            raise VtdemoError("the model must be a Hugging Face repo id (org/name[@revision]) or empty for the default")
        model_id = (model_id or "").strip() or default[family]
        configured = {self.config.vit_model, self.config.swin_model, self.config.detr_model}
        if model_id not in configured and not self.config.allow_typed_folders and _is_path(model_id):
            raise VtdemoError(f"'{model_id}': local folders can only be chosen by whoever runs the app "
                              "(--vit-model / --swin-model / --detr-model); type a Hugging Face repo id instead")
        key = (model_id, str(self.device))
        first = key not in self._loaded
        if first and progress is not None:
            progress(0.05, desc=f"Loading {model_id} (first use: downloads the weights if they are not cached)…")
        started = time.perf_counter()
        loaded = hub.load(model_id, device=self.device)
        if first:
            self._loaded.add(key)
            if time.perf_counter() - started > 1.0:
                gr.Info(f"Loaded {model_id} on {self.device.type.upper()} in {time.perf_counter() - started:.1f} s")
        if family == "detr" and loaded.family != "detr":
            raise VtdemoError(f"{model_id} is an image classifier ({FAMILY_NAMES[loaded.family]}): pick a DETR model "
                              f"here, e.g. {hub.DEFAULT_DETR}, and use the Classify tab for classifiers")
        if family != "detr" and loaded.family == "detr":
            raise VtdemoError(f"{model_id} is a detection model (DETR): use it in the Detect tab")
        return loaded

    # ------------------------------------------------------------------------------------------------- classify

    def _controls(self, family: str, method: str, state: ClassifyState | None) -> list[Any]:
        """Updates for (class, fusion, discard, head, block): shown only where the method uses them."""
        rollout = method in ("rollout", "swin-rollout")
        classes = [p.label for p in state.predictions] if state else []
        class_value = None
        if state and state.target and method in views.CLASS_SPECIFIC:
            class_value = state.target["label"] if state.target["label"] in classes else None
        heads = ["mean"] + ([str(i) for i in range(views.num_heads(state.run))] if state else [])
        blocks = views.swin_blocks(state.run) if state and state.run.loaded.family == "swin" else []
        head_value = "mean" if not state or state.opts.head is None else str(state.opts.head)
        block_value = None
        if blocks:
            block_value = views.default_swin_block(state.run) if state.opts.block is None else state.opts.block
        return [
            gr.Dropdown(choices=classes, value=class_value or (classes[0] if classes else None),
                        visible=method in views.CLASS_SPECIFIC),
            gr.Radio(visible=rollout),
            gr.Slider(visible=rollout),
            gr.Dropdown(choices=heads, value=head_value, visible=method in ("cls-attention", "swin-window")),
            gr.Dropdown(choices=blocks, value=block_value, visible=method == "swin-window"),
        ]

    def _empty_column(self, family: str, text: str, kind: str = "warn") -> tuple:
        method = pipeline.CLASSIFIER_METHODS[family][0]
        return (None, None, "", status(text, kind), None,
                gr.Dropdown(choices=views.method_choices(family), value=method), *self._controls(family, method, None))

    def _render_column(self, state: ClassifyState) -> tuple[Image.Image, str]:
        relevance, target, method = views.classifier_map(state.run, state.opts)
        state.relevance, state.target, state.method = relevance, target, method
        return views.classifier_overlay(state.run, relevance, state.opts), views.map_caption(
            state.run, method, target, state.opts)

    def sanity_check(self, state: ClassifyState | None) -> tuple:
        """The deletion curve of the map on screen (about 6 batched forward passes). Returns (chart, caption)."""
        state = self._cached(state)
        if state is None or state.relevance is None or state.target is None:
            return None, status("Upload a photo first.", "info")
        try:
            check = pipeline.deletion_check(state.run, state.relevance, state.target["index"])
        except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback goes to the log
            return None, status(message(exc), "warn")
        return views.deletion_plot(check), views.deletion_caption(check, state.target)

    def classify(self, family: str, image_path: str | None, model_id: str, method: str, opacity: float,
                 progress: Any = None, request: Any = None) -> tuple:
        """Run one classifier on the photo (once) and show its top-5 and its default map.

        Returns (label, overlay, caption, status, state, method, class, fusion, discard, head, block).
        """
        if not image_path:
            return self._empty_column(family, "")
        try:
            image = load_image(image_path)
            loaded = self.load(model_id, family, progress)
            if progress is not None:
                progress(0.5, desc=f"Running {loaded.id}…")
            run = pipeline.run_classifier(loaded, image)
            methods = pipeline.CLASSIFIER_METHODS[loaded.family]
            opts = views.MapOptions(method=method if method in methods else methods[0], opacity=float(opacity))
            state = ClassifyState(run=run, name=upload_name(image_path), opts=opts,
                                  predictions=views.top_classes(run, 5))
            overlay, caption = self._render_column(state)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line for the user
            text = message(exc)
            gr.Warning(text)
            return self._empty_column(family, text)
        self.runs.hold(session_of(request), family, state)
        return (views.label_scores(state.predictions), overlay, caption,
                status(f"{loaded.id} · {loaded.family} · {tuple(run.x.shape[-2:])[0]}px input", "ok"), state,
                gr.Dropdown(choices=views.method_choices(loaded.family), value=state.method),
                *self._controls(loaded.family, state.method, state))

    def explain(self, state: ClassifyState | None, method: str, class_name: str | None, fusion: str,
                discard: float, head: str | None, block: int | None, opacity: float) -> tuple:
        """Re-draw the map from the cached run (no forward pass; grad-rollout runs one backward pass).

        Returns (overlay, caption, status, state, class, fusion, discard, head, block).
        """
        state = self._cached(state)
        if state is None:
            return (None, "", status("Upload a photo first.", "info"), None,
                    *self._controls("vit", method or "rollout", None))
        try:
            opts = state.opts
            opts.method = method or opts.method
            opts.head_fusion, opts.discard, opts.opacity = fusion or "mean", float(discard or 0), float(opacity)
            opts.head = None if head in (None, "", "mean") else int(head)
            opts.block = None if block in (None, "") else int(block)
            if class_name:
                opts.class_index = views.class_index_of(state.run, class_name)
            overlay, caption = self._render_column(state)
            text = ""
        except Exception as exc:  # noqa: BLE001
            overlay, caption, text = None, "", message(exc)
        return (overlay, caption, status(text, "warn"), state,
                *self._controls(state.run.loaded.family, state.method, state))

    def class_clicked(self, state: ClassifyState | None, opacity: float, evt: Click) -> tuple:
        """A click on a class in the top-5: the class-specific map (gradient rollout) for it.

        Returns (overlay, caption, status, state, method, class, fusion, discard, head, block).
        """
        state = self._cached(state)
        if state is None:
            return (gr.skip(),) * 10
        family = state.run.loaded.family
        name = evt.value if isinstance(evt.value, str) else (evt.value or {}).get("label")
        if not name:
            gr.Info("Click a class in the top-5 list to see its map.")
            return (gr.skip(),) * 10
        method = views.CLASS_METHOD.get(family)
        if method not in pipeline.CLASSIFIER_METHODS[family]:
            gr.Info(f"{FAMILY_NAMES[family]} has no class-specific map.")
            return (gr.skip(),) * 10
        try:
            state.opts.method, state.opts.opacity = method, float(opacity)
            state.opts.class_index = views.class_index_of(state.run, str(name))
            overlay, caption = self._render_column(state)
            text = ""
        except Exception as exc:  # noqa: BLE001
            overlay, caption, text = None, "", message(exc)
        return (overlay, caption, status(text, "warn"), state, gr.Dropdown(value=method),
                *self._controls(family, state.method, state))

    def point_clicked(self, state: ClassifyState | None, opacity: float, evt: Click) -> tuple:
        """A click on a Swin overlay: the attention of the window around that point.

        Returns (overlay, caption, status, state, method, class, fusion, discard, head, block).
        """
        state = self._cached(state)
        if state is None or "swin-window" not in pipeline.CLASSIFIER_METHODS[state.run.loaded.family]:
            return (gr.skip(),) * 10
        point = _click_point(evt)
        if point is None:
            gr.Info("Click a point on the image.")
            return (gr.skip(),) * 10
        try:
            scale = views.fit(state.run.image)[1]
            x, y = (v / scale for v in point)
            state.opts.method, state.opts.point, state.opts.opacity = "swin-window", (x, y), float(opacity)
            overlay, caption = self._render_column(state)
            text = ""
        except Exception as exc:  # noqa: BLE001
            overlay, caption, text = None, "", message(exc)
        return (overlay, caption, status(text, "warn"), state, gr.Dropdown(value="swin-window"),
                *self._controls(state.run.loaded.family, state.method, state))

    def export_classify(self, vit: ClassifyState | None, swin: ClassifyState | None) -> list[str]:
        """Results JSON (the CLI's `classify --json` schema, one object per model), overlays (PNG, original size)
        and raw maps (.npy, the model's own grid)."""
        states = [s for s in (self._cached(vit), self._cached(swin)) if s is not None]
        if not states:
            raise gr.Error("Nothing to export yet: classify a photo first.")
        folder = export_dir()
        stem = views.safe_stem(states[0].name)
        files = [views.write_json(folder / f"{stem}.classify.json", [
            pipeline.ClassifyResult(image=s.name, model=s.run.loaded.id, predictions=s.predictions).to_dict()
            for s in states])]
        for s in states:
            if s.relevance is None:
                continue
            tag = f"{stem}.{s.run.loaded.family}.{s.method}"
            render.overlay(s.run.image, s.relevance.numpy(), s.run.region, s.opts.opacity).save(folder / f"{tag}.png")
            files += [str(folder / f"{tag}.png"), str(views.write_npy(folder / f"{tag}.npy", s.relevance))]
        return [str(f) for f in files]

    # ------------------------------------------------------------------------------------------------- detect

    def _options(self, threshold: float, classes: list[str] | None, max_det: float | None, nms: bool,
                 nms_iou: float, labels) -> views.DetectOptions:
        return views.DetectOptions(threshold=float(threshold), classes=views.class_ids(labels, classes),
                                   max_detections=int(max_det) if max_det else None,
                                   nms_iou=float(nms_iou) if nms else None)

    def _boxes(self, state: DetectState) -> tuple[gr.AnnotatedImage, str, list[list[Any]]]:
        """Select from the cached scores and build the box view, the count line and the table rows."""
        state.dets = views.select(state.run, state.opts)
        boxes = [(d.query, d.box, render.color_for(d.label_id), views.box_label(d, i))
                 for i, d in enumerate(state.dets)]
        colors = {label: views.hex_color(d.label_id) for (_, _, _, label), d in zip(boxes, state.dets)}
        return (gr.AnnotatedImage(value=BoxView(state.canvas, boxes), color_map=colors),
                views.count_text(state.run, state.dets, state.opts), views.detection_rows(state.dets))

    def _detr_map(self, state: DetectState, head: str | None, layer: str | None, direction: str | None,
                  opacity: float) -> tuple[Image.Image | None, str]:
        head_i = None if head in (None, "", "mean") else int(head)
        layer_i = -1 if layer in (None, "", "last") else int(layer) - 1
        direction = "column" if direction and direction.startswith("who") else "row"
        if state.map_method == "detr-encoder" and state.point is not None:
            state.relevance = pipeline.detr_map(state.run, "detr-encoder", point=state.point, layer=layer_i,
                                                head=head_i, direction=direction)
            state.map_target = {"point": list(state.point), "direction": direction}
            x, y = state.point
            caption = (f"**Encoder self-attention at ({x:.0f}, {y:.0f})**: "
                       + ("where this position looks." if direction == "row" else "which positions look at it."))
            return views.detr_overlay(state.run, state.relevance, opacity, point=state.point), caption
        det = next((d for d in state.dets if d.query == state.query), None)
        if det is None:
            state.relevance, state.map_target = None, {}
            return None, "Click a detection (its label under the photo, or a table row) to see where it looked."
        state.relevance = pipeline.detr_map(state.run, "detr-decoder", query=det.query, layer=layer_i, head=head_i)
        state.map_target = {"query": det.query, "label_id": det.label_id, "label": det.label, "score": det.score,
                            "box": det.box}
        caption = (f"**Decoder cross-attention of query {det.query}** ({det.label} {det.score:.2f}): the image "
                   "positions this object query read to place its box. Click the photo here to see the encoder "
                   "self-attention at a point.")
        return views.detr_overlay(state.run, state.relevance, opacity, box=det.box), caption

    def _empty_detect(self, text: str, kind: str = "warn") -> tuple:
        return (None, "", [], status(text, kind), None, gr.Dropdown(), gr.Dropdown(choices=[], value=None),
                None, "", gr.Dropdown())

    def detect(self, image_path: str | None, model_id: str, threshold: float, classes: list[str] | None,
               max_det: float | None, nms: bool, nms_iou: float, head: str | None, layer: str | None,
               direction: str | None, opacity: float, progress: Any = None, request: Any = None) -> tuple:
        """Run DETR once (with attention) and show the boxes and the best detection's attention.

        Returns (boxes, count, table, status, state, class filter, detection, map, caption, head).
        """
        if not image_path:
            return self._empty_detect("")
        try:
            image = load_image(image_path)
            loaded = self.load(model_id, "detr", progress)
            if progress is not None:
                progress(0.5, desc=f"Running {loaded.id}…")
            started = time.perf_counter()
            run = pipeline.run_detr(loaded, image, keep_dtype=torch.float16)  # halves a session's memory
            seconds = time.perf_counter() - started
            shown, scale = views.fit(image)
            state = DetectState(run=run, name=upload_name(image_path),
                                canvas=BoxCanvas.create(get_upload_folder(), shown, scale),
                                opts=self._options(threshold, classes, max_det, nms, nms_iou, loaded.labels))
            boxes, count, rows = self._boxes(state)
            state.query = state.dets[0].query if state.dets else None
            picks = self._boxes_picks(state)
        except Exception as exc:  # noqa: BLE001
            text = message(exc)
            gr.Warning(text)
            return self._empty_detect(text)
        self.runs.hold(session_of(request), "detect", state)
        attn, caption, _ = self.attention_view(state, head, layer, direction, opacity)  # a failing map keeps the boxes
        heads = int(run.output.decoder_cross_attn[-1].shape[1])
        h, w = run.output.feature_size
        info = (f"{loaded.id} · {seconds:.2f} s on {self.device.type.upper()} · feature grid {h}×{w} · "
                f"{run.scored.scores.numel()} queries")
        filter_names = views.detection_classes(loaded.labels)
        return (boxes, count, rows, status(info), state, gr.Dropdown(choices=filter_names), picks, attn, caption,
                gr.Dropdown(choices=["mean"] + [str(i) for i in range(heads)]))

    def rerender(self, state: DetectState | None, threshold: float, classes: list[str] | None,
                 max_det: float | None, nms: bool, nms_iou: float) -> tuple:
        """Threshold / class filter / max detections / NMS: re-select from the cached scores. No model call.

        Returns (boxes, count, table, state, detection).
        """
        state = self._cached(state)
        if state is None:
            return (gr.skip(),) * 5
        state.opts = self._options(threshold, classes, max_det, nms, nms_iou, state.run.loaded.labels)
        return (*self._boxes(state), state, self._boxes_picks(state))

    def _boxes_picks(self, state: DetectState) -> gr.Dropdown:
        picks = [(views.box_label(d, i), d.query) for i, d in enumerate(state.dets)]
        return gr.Dropdown(choices=picks, value=state.query if any(q == state.query for _, q in picks) else None)

    def detection_clicked(self, state: DetectState | None, head: str | None, layer: str | None,
                          direction: str | None, opacity: float, evt: Click) -> tuple:
        """A click on a detection (legend entry or table row) -> its decoder cross-attention.

        Returns (map, caption, detection, state).
        """
        state = self._cached(state)
        if state is None or not state.dets:
            return (gr.skip(),) * 4
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(index, int) or not 0 <= index < len(state.dets):
            return (gr.skip(),) * 4
        state.map_method, state.query = "detr-decoder", state.dets[index].query
        return (*self.attention_view(state, head, layer, direction, opacity)[:2], gr.Dropdown(value=state.query),
                state)

    def detection_picked(self, state: DetectState | None, query: int | None, head: str | None,
                         layer: str | None, direction: str | None, opacity: float) -> tuple:
        """The detection picker (also the API way to ask for one query's map). Returns (map, caption, state)."""
        state = self._cached(state)
        if state is None:
            return None, "Detect objects first.", None
        state.map_method = "detr-decoder"
        state.query = None if query in (None, "") else int(query)
        return self.attention_view(state, head, layer, direction, opacity)

    def point_clicked_detr(self, state: DetectState | None, head: str | None, layer: str | None,
                           direction: str | None, opacity: float, evt: Click) -> tuple:
        """A click on the attention image -> encoder self-attention there. Returns (map, caption, x, y, state)."""
        state = self._cached(state)
        if state is None:
            return (gr.skip(),) * 5
        point = _click_point(evt)
        if point is None:
            return gr.skip(), status("Click a point on the photo, or enter x and y.", "info"), gr.skip(), gr.skip(), state
        scale = state.canvas.scale
        x, y = (v / scale for v in point)
        out = self.encoder_at(state, x, y, head, layer, direction, opacity)
        return out[0], out[1], round(x), round(y), out[2]

    def encoder_at(self, state: DetectState | None, x: float, y: float, head: str | None, layer: str | None,
                   direction: str | None, opacity: float) -> tuple:
        """Encoder self-attention at (x, y) original pixels. Returns (map, caption, state)."""
        state = self._cached(state)
        if state is None:
            return None, "Detect objects first.", None
        if x is None or y is None:
            return gr.skip(), status("Enter x and y in pixels, or click the photo.", "info"), state
        w, h = state.run.image.size
        state.map_method, state.point = "detr-encoder", (min(max(float(x), 0), w - 1), min(max(float(y), 0), h - 1))
        return self.attention_view(state, head, layer, direction, opacity)

    def attention_view(self, state: DetectState | None, head: str | None, layer: str | None,
                       direction: str | None, opacity: float) -> tuple:
        """Head / layer / direction / opacity changed: redraw the current map. Returns (map, caption, state)."""
        state = self._cached(state)
        if state is None:
            return None, "", None
        try:
            image, caption = self._detr_map(state, head, layer, direction, opacity)
        except Exception as exc:  # noqa: BLE001
            image, caption = None, status(message(exc), "warn")
        return image, caption, state

    def export_detect(self, state: DetectState | None, opacity: float) -> list[str]:
        """Annotated PNG (original size), results JSON (the CLI's `detect --json` schema) and the raw map (.npy)."""
        state = self._cached(state)
        if state is None:
            raise gr.Error("Nothing to export yet: detect objects in a photo first.")
        folder = export_dir()
        stem = views.safe_stem(state.name)
        result = pipeline.DetectResult(image=state.name, model=state.run.loaded.id, size=list(state.run.image.size),
                                       detections=state.dets)
        views.draw_detections(state.run.image, state.dets).save(folder / f"{stem}.detections.png")
        files = [folder / f"{stem}.detections.png", views.write_json(folder / f"{stem}.detect.json",
                                                                     [result.to_dict()])]
        if state.relevance is not None:
            tag = f"{stem}.{state.map_method}"
            views.detr_overlay(state.run, state.relevance, opacity, max_side=10**6).save(folder / f"{tag}.png")
            files += [folder / f"{tag}.png", views.write_npy(folder / f"{tag}.npy", state.relevance)]
        return [str(f) for f in files]

    # ------------------------------------------------------------------------------------------------- matching

    def fill_ground_truth(self, state: DetectState | None) -> list[list[Any]]:
        """The shown detections as a starting ground truth (edit it to see the matching change)."""
        state = self._cached(state)
        if state is None or not state.dets:
            raise gr.Error("Detect objects first (with at least one box shown).")
        return [[d.label, *[round(v) for v in d.box]] for d in state.dets[:5]]

    def load_ground_truth(self, path: str | None, state: DetectState | None) -> list[list[Any]]:
        """An uploaded JSON ([[label, x0, y0, x1, y1], ...] or COCO annotations) -> table rows."""
        if not path:
            return gr.skip()
        from ..explain import matching

        state = self._cached(state)
        labels = state.run.loaded.labels if state else self._coco_names()
        try:
            text = Path(path).read_text(encoding="utf-8")
            gt = matching.parse_ground_truth(text, labels)
        except (OSError, UnicodeDecodeError) as exc:
            raise gr.Error(f"cannot read the file: {exc}") from None
        except VtdemoError as exc:
            raise gr.Error(str(exc)) from None
        return [[labels[int(c)], *[round(float(v), 1) for v in box]] for c, box in zip(gt.labels, gt.boxes)]

    @staticmethod
    def _coco_names():
        from ..labels import coco

        return coco()

    def match(self, state: DetectState | None, rows: Any) -> tuple:
        """Hungarian matching of the cached 100 predictions to the ground truth. Returns (image, table, text)."""
        state = self._cached(state)
        if state is None:
            raise gr.Error("Detect objects first: the matching uses DETR's predictions for the photo.")
        try:
            gt_rows = views.ground_truth_rows(rows)
            if not gt_rows:
                raise ExplainError("add at least one ground-truth box (label, x0, y0, x1, y1), or press "
                                   "'Use the detections'")
            result = views.match(state.run, gt_rows)
        except Exception as exc:  # noqa: BLE001
            text = message(exc)
            return None, [], status(text, "warn")
        return views.match_image(state.run, result), views.match_rows(result), views.match_text(result)

    # ------------------------------------------------------------------------------------------------- webcam

    def live(self, frame: str | bytes | None, threshold: float, live_size: Any, model_id: str,
             session: webcam.LiveSession | None, request: gr.Request | None = None) -> tuple:
        """One webcam frame -> the same frame with boxes, and the speed line. Returns (frame, stats, session)."""
        if session is None or session.released:
            session = webcam.LiveSession()
        if frame is None:
            return gr.skip(), gr.skip(), session
        try:
            frame = np.asarray(load_image(frame))  # the pixel limit applies before decoding, as for photos
            loaded = self.load(model_id, "detr")
            live = views.live_model(loaded, int(live_size or self.config.live_size))
            out = webcam.process_frame(session, live, frame, float(threshold))
        except Exception as exc:  # noqa: BLE001
            return gr.skip(), status(message(exc), "warn"), session
        last = session.last_frame
        self.runs.hold(session_of(request), "webcam", session, nbytes=last.nbytes if last is not None else 0)
        return out, session.text(), session

    def freeze(self, session: webcam.LiveSession | None) -> tuple:
        """Hand the last webcam frame to the Detect tab (full resolution there). Returns (image, tabs)."""
        if session is None or session.last_frame is None:
            raise gr.Error("No webcam frame yet: start the camera and press Record first.")
        folder = export_dir()
        path = folder / f"webcam-{time.strftime('%H%M%S')}.png"
        Image.fromarray(np.ascontiguousarray(session.last_frame[..., :3])).save(path)
        return str(path), gr.Tabs(selected="detect")
