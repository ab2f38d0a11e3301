"""The Detect tab: DETR boxes with a threshold, class filter, max detections and optional NMS, and what each
detection attended to.

DETR runs once per photo with attention (`vtdemo.explain.run_detr`); the threshold, filter, NMS and every map then
re-render from the cached run (a few ms; the model is not called again). A click on a detection (its label under the
photo, or a table row) shows its decoder cross-attention; a click on the attention image shows the encoder
self-attention at that point. The head and layer pickers are built from the run (its heads, its decoder layers).
The set-matching panel (`vtdemo.ui.matching`) and the webcam's Freeze use this tab's state and photo input.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gradio as gr
import torch
from gradio.utils import get_upload_folder

from .. import pipeline, render
from ..explain.api import explain_run
from ..explain.registry import ExplainOptions
from ..explain.runs import DetrRun, run_detr
from ..images import load_image
from ..labels import coco
from .common import (
    MODEL,
    VIEW,
    Services,
    click_point,
    export_dir,
    heads_choice,
    message,
    safe_stem,
    status,
    write_json,
    write_npy,
)
from .components import (
    BoxCanvas,
    BoxImage,
    BoxView,
    Checkbox,
    Click,
    MultiChoice,
    Number,
    Slider,
    safe_image,
    upload_name,
)
from .detect_views import (
    DETECTION_HEADERS,
    DIRECTIONS,
    RELEVANCE_CAPTION,
    RELEVANCE_TARGETS,
    DetectOptions,
    DetectState,
    box_label,
    class_ids,
    count_text,
    detection_classes,
    detection_rows,
    detr_overlay,
    draw_detections,
    edge_panels,
    hex_color,
    layer_index,
    select,
)
from .engine_text import gradient_note

__all__ = ["DetectOptions", "DetectState", "DetectTab", "draw_detections"]

# ------------------------------------------------------------------------------------------------- the tab


class DetectTab:
    """Photo and options, the box view and table, the attention view, export; the matching panel attaches here."""

    def __init__(self, services: Services, examples: list[str], image_limits: dict[str, Any]) -> None:
        self.s = services
        choices = services.config.choices("detr")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                self.image = safe_image(
                    sources=["upload", "clipboard"], label="Photo", height=260, elem_id="detect-photo", **image_limits
                )
                if examples:
                    gr.Examples(
                        examples=[[p] for p in examples],
                        inputs=[self.image],
                        cache_examples=False,
                        label="Examples",
                        examples_per_page=8,
                    )
                self.model = gr.Dropdown(
                    choices=choices, value=choices[0], allow_custom_value=True, label="Model (repo id or folder)"
                )
                self.threshold = Slider(
                    0.0, 1.0, value=0.7, step=0.01, label="Confidence threshold", elem_id="detect-threshold"
                )
                self.classes = MultiChoice(
                    choices=detection_classes(coco()),
                    multiselect=True,
                    value=[],
                    label="Only these classes (empty: all)",
                )
                self.max_det = Slider(1, 100, value=100, step=1, label="Max detections")
                with gr.Group():
                    self.nms = Checkbox(value=False, label="Class-aware NMS (DETR needs none: try it and compare)")
                    self.nms_iou = Slider(0.1, 0.95, value=0.5, step=0.05, label="NMS IoU")
                self.status = gr.Markdown(elem_classes="vt-status", elem_id="detect-status")
            with gr.Column(scale=2, min_width=420):
                self.count = gr.Markdown(
                    "Upload a photo to detect objects.", elem_classes="vt-count", elem_id="detect-count"
                )
                self.boxes = BoxImage(
                    label="Detections (click a label under the photo for its attention)", elem_id="detect-boxes"
                )
                self.table = gr.Dataframe(
                    headers=DETECTION_HEADERS,
                    interactive=False,
                    label="Detections (click a row)",
                    max_height=220,
                    wrap=True,
                    elem_id="detect-table",
                )
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=420):
                self.attn = gr.Image(
                    label="Attention (click the photo: encoder self-attention at that point)",
                    interactive=False,
                    format="jpeg",
                    height=420,
                    elem_id="detect-attention",
                )
                self.caption = gr.Markdown(elem_classes="vt-caption", elem_id="detect-caption")
            with gr.Column(scale=1, min_width=260):
                self.pick = gr.Dropdown(choices=[], label="Detection", info="Decoder cross-attention of this query")
                with gr.Row():
                    self.head = gr.Dropdown(["mean"], value="mean", label="Head")
                    # DETR-R50's six layers until a photo's run says how many its model has (`layers`)
                    self.layer = gr.Dropdown(["last"] + [str(i) for i in range(1, 7)], value="last", label="Layer")
                self.direction = gr.Radio(
                    list(DIRECTIONS), value="where it looks", label="Encoder attention at a point"
                )
                with gr.Row():
                    self.px = Number(value=None, label="x", precision=0, minimum=0)
                    self.py = Number(value=None, label="y", precision=0, minimum=0)
                point_btn = gr.Button("Encoder attention at (x, y)", size="sm")
                with gr.Group():
                    self.relevance_target = gr.Radio(
                        list(RELEVANCE_TARGETS),
                        value="class",
                        label="Relevance of the detection",
                        info="What it depends on, through every layer (one backward pass)",
                    )
                    relevance_btn = gr.Button("Show its relevance", size="sm")
                self.opacity = Slider(0.0, 1.0, value=0.55, step=0.05, label="Opacity")
        self.state = services.state()
        self.view = [self.head, self.layer, self.direction, self.opacity]
        self._point_btn, self._relevance_btn = point_btn, relevance_btn

    def wire(self) -> None:
        """Events (called after the matching panel is laid out, so that the page order stays as it was)."""

        def detect(
            image_path,
            model_id,
            threshold,
            classes,
            max_det,
            nms,
            nms_iou,
            head,
            layer,
            direction,
            opacity,
            request: gr.Request,
            progress=gr.Progress(),
        ):
            return self.detect(
                image_path,
                model_id,
                threshold,
                classes,
                max_det,
                nms,
                nms_iou,
                head,
                layer,
                direction,
                opacity,
                progress,
                request,
            )

        inputs = [self.image, self.model, self.threshold, self.classes, self.max_det, self.nms, self.nms_iou]
        shown = [self.attn, self.caption, self.state]
        gr.on(
            [self.image.change, self.model.change],
            detect,
            inputs=[*inputs, *self.view],
            outputs=[
                self.boxes,
                self.count,
                self.table,
                self.status,
                self.state,
                self.classes,
                self.pick,
                self.attn,
                self.caption,
                self.head,
            ],
            api_name="detect",
            show_progress="full",
            **MODEL,
        ).then(
            self.layers,
            inputs=[self.state],
            outputs=[self.layer],
            api_name="detect_layers",
            api_visibility="private",
            **VIEW,
        )
        gr.on(
            [self.threshold.change, self.classes.change, self.max_det.change, self.nms.input, self.nms_iou.change],
            self.rerender,
            inputs=[self.state, *inputs[2:]],
            outputs=[self.boxes, self.count, self.table, self.state, self.pick],
            api_name="rerender",
            **VIEW,
        )
        for source, name in ((self.boxes, "detection_click"), (self.table, "detection_row")):
            source.select(
                self.detection_clicked,
                inputs=[self.state, *self.view],
                outputs=[self.attn, self.caption, self.pick, self.state],
                api_name=name,
                api_visibility="undocumented",
                **VIEW,
            )
        self.pick.input(
            self.detection_picked,
            inputs=[self.state, self.pick, *self.view],
            outputs=shown,
            api_name="detection_map",
            **VIEW,
        )
        self.attn.select(
            self.point_clicked,
            inputs=[self.state, *self.view],
            outputs=[self.attn, self.caption, self.px, self.py, self.state],
            api_name="encoder_click",
            api_visibility="undocumented",
            **VIEW,
        )
        self._point_btn.click(
            self.encoder_at,
            inputs=[self.state, self.px, self.py, *self.view],
            outputs=shown,
            api_name="encoder_map",
            **VIEW,
        )
        self._relevance_btn.click(
            self.relevance_view,
            inputs=[self.state, self.relevance_target, self.opacity],
            outputs=shown,
            api_name="relevance_map",
            **MODEL,
        )
        gr.on(
            [self.head.input, self.layer.input, self.direction.input, self.opacity.change],
            self.attention_view,
            inputs=[self.state, *self.view],
            outputs=shown,
            api_name="attention_view",
            **VIEW,
        )

    def export_section(self) -> None:
        with gr.Accordion("Export", open=False):
            export = gr.Button("Export results", size="sm")
            files = gr.File(
                label="Downloads: annotated PNG, results JSON (CLI schema), attention map (PNG, .npy)",
                file_count="multiple",
                interactive=False,
            )
        export.click(self.export, inputs=[self.state, self.opacity], outputs=files, api_name="export_detect", **MODEL)

    # --------------------------------------------------------------------------------------------- views

    def _options(
        self,
        threshold: float,
        classes: list[str] | None,
        max_det: float | None,
        nms: bool,
        nms_iou: float,
        labels: Sequence[str],
    ) -> DetectOptions:
        return DetectOptions(
            threshold=float(threshold),
            classes=class_ids(labels, classes),
            max_detections=int(max_det) if max_det else None,
            nms_iou=float(nms_iou) if nms else None,
        )

    def _boxes(self, state: DetectState) -> dict:
        """Select from the cached scores and build the box view, the count line, the table and the picker."""
        assert state.run is not None and state.canvas is not None
        state.dets = select(state.run, state.opts)
        boxes = [(d.query, d.box, render.color_for(d.label_id), box_label(d, i)) for i, d in enumerate(state.dets)]
        colors = {label: hex_color(d.label_id) for (_, _, _, label), d in zip(boxes, state.dets)}
        picks = [(box_label(d, i), d.query) for i, d in enumerate(state.dets)]
        return {
            self.boxes: gr.AnnotatedImage(value=BoxView(state.canvas, boxes), color_map=colors),
            self.count: count_text(state.run, state.dets, state.opts),
            self.table: detection_rows(state.dets),
            self.pick: gr.Dropdown(
                choices=picks, value=state.query if any(q == state.query for _, q in picks) else None
            ),
        }

    def _map(
        self, state: DetectState, head: str | None, layer: str | None, direction: str | None, opacity: float
    ) -> dict:
        """Redraw the current map (decoder attention of the chosen detection, or encoder attention at a point)."""
        run = state.run
        assert run is not None
        try:
            encoder = state.method == "detr-encoder" and state.point is not None
            options = ExplainOptions(
                head=heads_choice(head),
                layer=layer_index(run, layer, encoder),
                direction=DIRECTIONS.get(direction or "", "row"),
                point=state.point,
                query=state.query,
            )
            if encoder:
                assert state.point is not None
                state.relevance = explain_run(run, "detr-encoder", options).map
                x, y = state.point
                caption = f"**Encoder self-attention at ({x:.0f}, {y:.0f})**: " + (
                    "where this position looks." if options.direction == "row" else "which positions look at it."
                )
                image = detr_overlay(run, state.relevance, opacity, point=state.point)
            else:
                det = next((d for d in state.dets if d.query == state.query), None)
                if det is None:
                    state.relevance = None
                    return {
                        self.attn: None,
                        self.caption: "Click a detection (its label under the photo, or a table "
                        "row) to see where it looked.",
                        self.state: state,
                    }
                state.relevance = explain_run(run, "detr-decoder", options).map
                caption = (
                    f"**Decoder cross-attention of query {det.query}** ({det.label} {det.score:.2f}): the "
                    "image positions this object query read to place its box. Click the photo here to see "
                    "the encoder self-attention at a point."
                )
                image = detr_overlay(run, state.relevance, opacity, box=det.box)
        except Exception as exc:  # noqa: BLE001
            return {self.attn: None, self.caption: status(message(exc), "warn"), self.state: state}
        return {self.attn: image, self.caption: caption, self.state: state}

    def _empty(self, text: str) -> dict:
        return {
            self.boxes: None,
            self.count: "",
            self.table: [],
            self.status: status(text, "warn"),
            self.state: None,
            self.classes: gr.Dropdown(),
            self.pick: gr.Dropdown(choices=[], value=None),
            self.attn: None,
            self.caption: "",
            self.head: gr.Dropdown(),
        }

    # --------------------------------------------------------------------------------------------- handlers

    def detect(
        self,
        image_path: str | bytes | None,
        model_id: str,
        threshold: float,
        classes: list[str] | None,
        max_det: float | None,
        nms: bool,
        nms_iou: float,
        head: str | None,
        layer: str | None,
        direction: str | None,
        opacity: float,
        progress: Any = None,
        request: Any = None,
    ) -> dict:
        """Run DETR once (with attention) and show the boxes and the best detection's attention."""
        if not image_path:
            return self._empty("")
        try:
            image = load_image(image_path)
            loaded = self.s.load(model_id, "detr", progress)
            if progress is not None:
                progress(0.5, desc=f"Running {loaded.id}…")
            started = time.perf_counter()
            run = run_detr(loaded, image, keep_dtype=torch.float16)  # halves a session's memory
            seconds = time.perf_counter() - started
            shown, scale = render.fit(image)
            state = DetectState(
                run=run,
                name=upload_name(image_path),
                canvas=BoxCanvas.create(get_upload_folder(), shown, scale),
                opts=self._options(threshold, classes, max_det, nms, nms_iou, loaded.labels),
            )
            state.dets = select(run, state.opts)
            state.query = state.dets[0].query if state.dets else None
            boxes = self._boxes(state)
        except Exception as exc:  # noqa: BLE001
            text = message(exc)
            gr.Warning(text)
            return self._empty(text)
        self.s.runs.hold(getattr(request, "session_hash", None), "detect", state)
        h, w = run.feature_size
        info = (
            f"{loaded.id} · {seconds:.2f} s on {self.s.device.type.upper()} · feature grid {h}×{w} · "
            f"{run.scored.scores.numel()} queries · {self.s.engine_line(loaded)}"
        )
        return {
            **boxes,
            **self._map(state, head, "last" if layer not in self._layers(run) else layer, direction, opacity),
            self.status: status(info),
            self.state: state,
            self.classes: gr.Dropdown(choices=detection_classes(loaded.labels)),
            self.head: gr.Dropdown(choices=["mean"] + [str(i) for i in range(run.num_heads)]),
        }

    @staticmethod
    def _layers(run: DetrRun) -> list[str]:
        return ["last"] + [str(i) for i in range(1, max(run.decoder_layers, run.encoder_layers) + 1)]

    def layers(self, state: DetectState | None) -> Any:
        """The layer picker for the run's model (after `detect`)."""
        if state is None or state.run is None:
            return gr.skip()
        return gr.Dropdown(choices=self._layers(state.run))

    def rerender(
        self,
        state: DetectState | None,
        threshold: float,
        classes: list[str] | None,
        max_det: float | None,
        nms: bool,
        nms_iou: float,
    ) -> dict:
        """Threshold / class filter / max detections / NMS: re-select from the cached scores. No model call."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return {}
        state.opts = self._options(threshold, classes, max_det, nms, nms_iou, state.run.loaded.labels)
        return {**self._boxes(state), self.state: state}

    def detection_clicked(
        self,
        state: DetectState | None,
        head: str | None,
        layer: str | None,
        direction: str | None,
        opacity: float,
        evt: Click,
    ) -> dict:
        """A click on a detection (legend entry or table row) -> its decoder cross-attention."""
        state = self.s.cached(state)
        if state is None or not state.dets:
            return {}
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) and evt.index else evt.index
        if not isinstance(index, int) or not 0 <= index < len(state.dets):
            return {}
        state.method, state.query = "detr-decoder", state.dets[index].query
        return {**self._map(state, head, layer, direction, opacity), self.pick: gr.Dropdown(value=state.query)}

    def detection_picked(
        self,
        state: DetectState | None,
        query: int | None,
        head: str | None,
        layer: str | None,
        direction: str | None,
        opacity: float,
    ) -> dict:
        """The detection picker (also the API way to ask for one query's map)."""
        state = self.s.cached(state)
        if state is None:
            return {self.attn: None, self.caption: "Detect objects first.", self.state: None}
        state.method = "detr-decoder"
        state.query = None if query in (None, "") else int(query)
        return self._map(state, head, layer, direction, opacity)

    def point_clicked(
        self,
        state: DetectState | None,
        head: str | None,
        layer: str | None,
        direction: str | None,
        opacity: float,
        evt: Click,
    ) -> dict:
        """A click on the attention image -> encoder self-attention there (and the point in the x / y fields)."""
        state = self.s.cached(state)
        point = click_point(evt)
        if state is None or state.canvas is None:
            return {}
        if point is None:
            return {self.caption: status("Click a point on the photo, or enter x and y.", "info")}
        x, y = (v / state.canvas.scale for v in point)
        return {**self.encoder_at(state, x, y, head, layer, direction, opacity), self.px: round(x), self.py: round(y)}

    def encoder_at(
        self,
        state: DetectState | None,
        x: float | None,
        y: float | None,
        head: str | None,
        layer: str | None,
        direction: str | None,
        opacity: float,
    ) -> dict:
        """Encoder self-attention at (x, y) original pixels."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return {self.attn: None, self.caption: "Detect objects first.", self.state: None}
        if x is None or y is None:
            return {self.caption: status("Enter x and y in pixels, or click the photo.", "info"), self.state: state}
        w, h = state.run.image.size
        state.method, state.point = "detr-encoder", (min(max(float(x), 0), w - 1), min(max(float(y), 0), h - 1))
        return self._map(state, head, layer, direction, opacity)

    def attention_view(
        self, state: DetectState | None, head: str | None, layer: str | None, direction: str | None, opacity: float
    ) -> dict:
        """Head / layer / direction / opacity changed: redraw the current map."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return {self.attn: None, self.caption: "", self.state: None}
        return self._map(state, head, layer, direction, opacity)

    def relevance_view(self, state: DetectState | None, target: str | None, opacity: float) -> dict:
        """The relevance of the chosen detection for its class, or one map per box edge (a 2x2 panel)."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return {self.attn: None, self.caption: "Detect objects first.", self.state: None}
        det = next((d for d in state.dets if d.query == state.query), None)
        if det is None:
            return {
                self.caption: status("Click a detection first (a label under the photo, or a table row).", "info"),
                self.state: state,
            }
        kind = RELEVANCE_TARGETS.get(target or "class", "class")
        try:
            result = explain_run(state.run, "detr-relevance", ExplainOptions(query=det.query, target_kind=kind))
        except Exception as exc:  # noqa: BLE001
            return {self.attn: None, self.caption: status(message(exc), "warn"), self.state: state}
        state.method, state.relevance = "detr-relevance", result.map
        what = f"query {det.query} ({det.label} {det.score:.2f}){gradient_note(state.run.loaded, 'detr-relevance')}"
        if kind == "class" or not result.maps:
            image = detr_overlay(state.run, result.map, opacity, box=det.box)
            caption = f"**Relevance of {what} for its class.** {RELEVANCE_CAPTION}"
        else:
            image = edge_panels(state.run, result.maps, opacity, det.box)
            caption = (
                f"**Relevance of {what} for each box edge** (x0 left, y0 top, x1 right, y1 bottom): which "
                f"positions pushed that edge outwards. {RELEVANCE_CAPTION}"
            )
        return {self.attn: image, self.caption: caption, self.state: state}

    def export(self, state: DetectState | None, opacity: float) -> list[str]:
        """Annotated PNG (original size), results JSON (the CLI's `detect --json` schema) and the raw map (.npy)."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            raise gr.Error("Nothing to export yet: detect objects in a photo first.")
        folder = export_dir()
        stem = safe_stem(state.name)
        result = pipeline.DetectResult(
            image=state.name,
            model=state.run.loaded.id,
            size=list(state.run.image.size),
            detections=state.dets,
            runtime=pipeline.runtime_info(state.run.loaded, state.method),
        )
        draw_detections(state.run.image, state.dets).save(folder / f"{stem}.detections.png")
        files = [folder / f"{stem}.detections.png", write_json(folder / f"{stem}.detect.json", [result.to_dict()])]
        if state.relevance is not None:
            tag = f"{stem}.{state.method}"
            detr_overlay(state.run, state.relevance, opacity, max_side=10**6).save(folder / f"{tag}.png")
            files += [folder / f"{tag}.png", write_npy(folder / f"{tag}.npy", state.relevance)]
        return [str(f) for f in files]
