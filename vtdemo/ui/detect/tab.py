"""The Detect tab: DETR or RT-DETR boxes with a threshold, class filter, max detections and optional NMS, and what
each detection attended to.

The detector runs once per photo with attention (`vtdemo.pipeline.run_detr`, or `run_rtdetr` for an RT-DETR repo:
its boxes are clipped to the photo for display only); the threshold, filter, NMS and every map then
re-render from the cached run (a few ms; the model is not called again). The attention row below
(`vtdemo.ui.detect.attention`) shows what a clicked detection attended to and its relevance; its head and layer
pickers are built from the run (its heads, its decoder layers).
The set-matching panel (`vtdemo.ui.detect.matching`) and the webcam's Freeze use this tab's state and photo input; the
Masks view beside the boxes (`vtdemo.ui.detect.masks`) shows a panoptic DETR's segments and sends a clicked one's query here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gradio as gr
import torch

from ... import pipeline, render
from ...errors import VtdemoError
from ...labels import coco
from ..common import (
    MODEL,
    VIEW,
    Services,
    export_dir,
    fresh,
    message,
    not_yet,
    photo_input,
    runs_models,
    safe_stem,
    status,
    with_details,
    write_json,
    write_npy,
)
from ..components import (
    BoxCanvas,
    BoxImage,
    BoxView,
    Checkbox,
    MultiChoice,
    Slider,
    upload_name,
)
from .attention import AttentionView
from .masks import MasksPanel
from .views import (
    DETECTION_HEADERS,
    DetectOptions,
    DetectState,
    box_label,
    class_ids,
    clipped,
    count_text,
    detection_classes,
    detection_rows,
    detr_overlay,
    draw_detections,
    hex_color,
    select,
)

__all__ = ["DetectOptions", "DetectState", "DetectTab", "draw_detections"]

# ------------------------------------------------------------------------------------------------- the tab


def detector_choices(services: Services) -> list[str]:
    """The Detect picker: the configured DETR and DETR's known repos, then the configured RT-DETR and RT-DETR's
    (the PekingU checkpoints)."""
    detr = services.config.choices("detr")
    rtdetr = [services.config.rtdetr_model, *pipeline.FAMILIES["rtdetr"].known]
    return detr + [m for m in dict.fromkeys(rtdetr) if m not in detr]


class DetectTab:
    """Photo and options, the box view and table, the attention view, export; the matching panel attaches here."""

    def __init__(self, services: Services, examples: list[str], image_limits: dict[str, Any]) -> None:
        self.s = services
        choices = detector_choices(services)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                self.image = photo_input("detect-photo", 260, examples, image_limits, "Examples")
                self.model = gr.Dropdown(
                    choices=choices,
                    value=choices[0],
                    allow_custom_value=True,
                    label="Model (repo id or folder)",
                    elem_id="detect-model",
                )
                self.threshold = Slider(
                    0.0,
                    1.0,
                    value=pipeline.DEFAULT_THRESHOLD,
                    step=0.01,
                    label="Confidence threshold",
                    elem_id="detect-threshold",
                )
                self.classes = MultiChoice(
                    choices=detection_classes(coco()),
                    multiselect=True,
                    value=[],
                    label="Only these classes (empty: all)",
                )
                self.max_det = Slider(1, 100, value=100, step=1, label="Max detections", elem_id="detect-max-det")
                with gr.Group():
                    self.nms = Checkbox(value=False, label="Class-aware NMS (DETR needs none: try it and compare)")
                    self.nms_iou = Slider(0.1, 0.95, value=0.5, step=0.05, label="NMS IoU", elem_id="detect-nms-iou")
                self.status = gr.Markdown(elem_classes="vt-status", elem_id="detect-status")
            with gr.Column(scale=2, min_width=420), gr.Tabs():
                with gr.Tab("Boxes", id="boxes"):
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
                with gr.Tab("Masks", id="masks") as self.masks_tab:
                    self.masks = MasksPanel(services, self)
        self.state = services.state()
        self.attention = AttentionView(services, self.state)
        a = self.attention  # the tab's other parts (and the masks, matching and webcam panels) use these
        self.attn, self.caption, self.pick, self.head, self.layer, self.opacity = (
            a.attn,
            a.caption,
            a.pick,
            a.head,
            a.layer,
            a.opacity,
        )
        self.view = a.view

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
            previous,
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
                previous,
            )

        inputs = [self.image, self.model, self.threshold, self.classes, self.max_det, self.nms, self.nms_iou]
        detected = gr.on(
            [self.image.change, self.model.change],
            detect,
            inputs=[*inputs, *self.view, self.state],
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
            show_progress_on=[self.boxes, self.count],  # not over the controls it also updates
            **MODEL,
        )
        detected.then(
            self.layers,
            inputs=[self.state],
            outputs=[self.layer],
            api_name="detect_layers",
            api_visibility="private",
            **VIEW,
        )
        gr.on(
            [self.threshold.input, self.classes.input, self.max_det.input, self.nms.input, self.nms_iou.input],
            self.rerender,
            inputs=[self.state, *inputs[2:]],
            outputs=[self.boxes, self.count, self.table, self.state, self.pick],
            api_name="rerender",
            **VIEW,
        )
        self.attention.wire(self.boxes, self.table)
        self.masks.wire(detected)

    def export_section(self) -> None:
        with gr.Accordion("Export", open=False):
            export = gr.Button("Export results", size="sm")
            files = gr.File(
                label="Downloads: annotated PNG, results JSON, attention map (PNG, .npy)",
                file_count="multiple",
                interactive=False,
                elem_id="detect-files",
                elem_classes="vt-result",
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
        size = state.run.image.size
        boxes = [
            (d.query, clipped(d.box, size), render.color_for(d.label_id), box_label(d, i))
            for i, d in enumerate(state.dets)
        ]
        colors = {label: hex_color(d.label_id) for (_, _, _, label), d in zip(boxes, state.dets)}
        picks = [(box_label(d, i), d.query) for i, d in enumerate(state.dets)]
        return {
            self.boxes: gr.AnnotatedImage(value=BoxView(state.canvas, boxes), color_map=colors),
            self.count: count_text(state.run, state.dets, state.opts),
            self.table: detection_rows(state.dets, size),
            self.pick: gr.Dropdown(
                choices=picks, value=state.query if any(q == state.query for _, q in picks) else None
            ),
        }

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

    @runs_models
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
        previous: DetectState | None = None,
    ) -> dict:
        """Run the detector once (with attention) and show the boxes and the best detection's view. previous: the
        tab's state before (kept on screen when the model cannot be loaded)."""
        if not image_path:
            return self._empty("")
        try:
            image = pipeline.load_image(image_path, upload_name(image_path))
            try:
                loaded = self.s.load(model_id, "detr", progress, getattr(request, "session_hash", None))
            except VtdemoError as exc:
                text = f"'{str(model_id or '').strip()[:80]}' was not loaded: {message(exc)}"
                if previous is None or previous.run is None or previous.released:
                    raise VtdemoError(text) from None
                gr.Warning(text)
                kept = f"{text} Still showing {previous.run.loaded.id}."
                return {**dict.fromkeys(self._empty(""), gr.skip()), self.status: status(kept, "warn")}
            if progress is not None:
                progress(0.5, desc=f"Running {loaded.id}…")
            started = time.perf_counter()
            run: Any = pipeline.run_detector(loaded, image, keep_dtype=torch.float16)  # DETR's maps: half the memory
            seconds = time.perf_counter() - started
            shown, scale = render.fit(image)
            state = DetectState(
                run=run,
                name=upload_name(image_path),
                canvas=BoxCanvas.create(shown, scale),
                opts=self._options(threshold, classes, max_det, nms, nms_iou, loaded.labels),
            )
            state.method = pipeline.view_method(run.family, "detection").name  # the attention view comes first
            state.dets = select(run, state.opts)
            state.query = state.dets[0].query if state.dets else None
            state.label_id = state.dets[0].label_id if state.dets else None
            boxes = self._boxes(state)
        except Exception as exc:  # noqa: BLE001
            text = message(exc)
            gr.Warning(text)
            return self._empty(text)
        self.s.runs.hold(getattr(request, "session_hash", None), "detect", state)
        h, w = run.feature_size
        grid = (
            f"input {run.x.shape[-1]}×{run.x.shape[-2]} (squashed) · levels "
            + ", ".join(f"{a}×{b}" for a, b in run.output.shapes)
            + f" · top {run.scored.scores.numel()} (query, class) pairs"
            if loaded.family == "rtdetr"
            else f"feature grid {h}×{w} · {run.scored.scores.numel()} queries"
        )
        info = with_details(
            f"{loaded.id} · {seconds:.2f} s",
            f"on {self.s.device.type.upper()} · {grid} · " + self.s.engine_line(loaded),
        )
        return {
            **boxes,
            **self.attention.render(
                state, head, "last" if layer not in self._layers(run) else layer, direction, opacity
            ),
            self.status: status(info),
            self.state: state,
            self.classes: gr.Dropdown(choices=detection_classes(loaded.labels)),
            self.head: gr.Dropdown(choices=["mean"] + [str(i) for i in range(run.num_heads)]),
        }

    @staticmethod
    def _layers(run: Any) -> list[str]:
        return ["last"] + [str(i) for i in range(1, max(run.decoder_layers, run.encoder_layers) + 1)]

    @fresh
    def layers(self, state: DetectState | None) -> Any:
        """The layer picker for the run's model (after `detect`)."""
        if state is None or state.run is None:
            return gr.skip()
        return gr.Dropdown(choices=self._layers(state.run))

    @fresh
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
            return {self.state: gr.skip()}  # no change ({} reads as a missing output)
        state.opts = self._options(threshold, classes, max_det, nms, nms_iou, state.run.loaded.labels)
        return {**self._boxes(state), self.state: state}

    def export(self, state: DetectState | None, opacity: float) -> Any:
        """Annotated PNG (original size), results JSON (the CLI's `detect --json` schema) and the raw map (.npy)."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return not_yet("Nothing to export yet: detect objects in a photo first.")
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
