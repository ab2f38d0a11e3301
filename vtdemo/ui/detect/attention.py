"""The Detect tab's attention row: what one detection attended to, and why it was kept.

RT-DETR runs show the registry's RT-DETR views in the same places: a detection's sampling points (deformable
attention has no full map), AIFI's self-attention at a clicked point, and Grad-CAM on the encoder as its relevance.

A click on a detection (its label under the photo, a table row, or the Detection picker) shows its decoder
cross-attention; a click on the attention image (or x, y) the encoder self-attention at that point; "Show its
relevance" the detection's relevance for its class or box edges (Chefer, Gur & Wolf, ICCV 2021; one backward pass on
the exact model). Every map re-renders from the tab's cached run; the head and layer pickers follow the run.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ... import pipeline
from ...pipeline import ExplainOptions
from ..common import MODEL, VIEW, Services, click_point, colorbar, fresh, heads_choice, message, status
from ..components import Click, Number, Slider
from ..engine_text import gradient_note
from .views import (
    DIRECTIONS,
    RELEVANCE_CAPTION,
    RELEVANCE_TARGETS,
    RTDETR_RELEVANCE_CAPTION,
    SAMPLING_CAPTION,
    DetectState,
    chosen_detection,
    detr_overlay,
    edge_panels,
    layer_index,
    sampling_image,
)

#: Browser-side: scroll the attention row into view (as little as needed) after a detection is clicked.
SHOW_MAP = "() => document.getElementById('detect-attention')?.scrollIntoView({block: 'nearest'})"


def point_method(run: Any) -> str:
    """The family's method behind the view at a clicked point (DETR: encoder self-attention), from the registry."""
    return pipeline.view_method(run.family, "point").name


def attention_method(run: Any) -> str:
    """The family's method behind a detection's attention view (DETR: decoder cross-attention)."""
    return pipeline.view_method(run.family, "detection").name


def relevance_method(run: Any) -> str:
    """The family's gradient method for a detection (DETR: relevance through every layer)."""
    return pipeline.view_method(run.family, "detection", needs_gradients=True).name


class AttentionView:
    """The attention image and caption, the detection / head / layer / direction / point / relevance controls, and
    their handlers. `state` is the Detect tab's cached run (`DetectState`)."""

    def __init__(self, services: Services, state: gr.State) -> None:
        self.s, self.state = services, state
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=420):
                self.attn = gr.Image(
                    label="Attention (click the photo: encoder self-attention at that point)",
                    interactive=False,
                    format="jpeg",
                    height=420,
                    elem_id="detect-attention",
                )
                colorbar("detect-colorbar")
                self.caption = gr.Markdown(elem_classes="vt-caption", elem_id="detect-caption")
            with gr.Column(scale=1, min_width=260):
                self.pick = gr.Dropdown(choices=[], label="Detection", info="Where this detection's query looked")
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
                self._point_btn = gr.Button("Encoder attention at (x, y)", size="sm")
                with gr.Group():
                    self.relevance_target = gr.Radio(
                        list(RELEVANCE_TARGETS),
                        value="class",
                        label="Relevance of the detection",
                        info="What it depends on, through every layer (one backward pass)",
                    )
                    self._relevance_btn = gr.Button("Show its relevance", size="sm")
                self.opacity = Slider(0.0, 1.0, value=0.55, step=0.05, label="Opacity", elem_id="detect-opacity")
        self.view = [self.head, self.layer, self.direction, self.opacity]

    def wire(self, boxes: gr.components.Component, table: gr.components.Component) -> None:
        """Events: clicks on the tab's box view and table, and this row's own controls."""
        shown = [self.attn, self.caption, self.state]
        for source, name in ((boxes, "detection_click"), (table, "detection_row")):
            source.select(
                self.detection_clicked,
                inputs=[self.state, *self.view],
                outputs=[self.attn, self.caption, self.pick, self.state],
                api_name=name,
                api_visibility="undocumented",
                **VIEW,
            ).then(None, js=SHOW_MAP, api_name=f"{name}_scroll", api_visibility="private")  # its map into view
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
            [self.head.input, self.layer.input, self.direction.input, self.opacity.input],
            self.attention_view,
            inputs=[self.state, *self.view],
            outputs=shown,
            api_name="attention_view",
            **VIEW,
        )

    # --------------------------------------------------------------------------------------------- handlers

    def render(
        self, state: DetectState, head: str | None, layer: str | None, direction: str | None, opacity: float
    ) -> dict:
        """Redraw the current map (decoder attention of the chosen detection, or encoder attention at a point)."""
        run = state.run
        assert run is not None
        rt = run.family == "rtdetr"
        try:
            encoder = state.method == point_method(run) and state.point is not None
            options = ExplainOptions(
                head=heads_choice(head),
                # AIFI is one layer on the top level: the layer picker is the decoder's
                layer=-1 if rt and encoder else layer_index(run, layer, encoder),
                direction=DIRECTIONS.get(direction or "", "row"),
                point=state.point,
                query=state.query,
            )
            if encoder:
                assert state.point is not None
                state.relevance = run.explain(point_method(run), options).map
                x, y = state.point
                what = "where this position looks." if options.direction == "row" else "which positions look at it."
                if rt:
                    th, tw = run.output.shapes[-1]
                    caption = (
                        f"**AIFI self-attention at ({x:.0f}, {y:.0f})**: {what} AIFI is RT-DETR's one dense "
                        f"attention, on the top (stride-32, {th}×{tw}) level; the finer levels are fused by "
                        "convolutions (CCFF), not attention."
                    )
                else:
                    caption = f"**Encoder self-attention at ({x:.0f}, {y:.0f})**: {what}"
                image = detr_overlay(run, state.relevance, opacity, point=state.point)
            else:
                det = chosen_detection(state)
                if det is None:
                    state.relevance = None
                    return {
                        self.attn: None,
                        self.caption: "Click a detection (its label under the photo, or a table "
                        "row) to see where it looked.",
                        self.state: state,
                    }
                state.relevance = run.explain(attention_method(run), options).map
                if rt:
                    points = run.sampling_points(det.query, options.layer)
                    nh, levels, per = points.weights.shape
                    heads = "every head" if options.head is None else f"head {options.head}"
                    caption = (
                        f"**Where query {det.query} looked** ({det.label} {det.score:.2f}): decoder layer "
                        f"{points.layer + 1} of {run.decoder_layers}, {heads} ({nh} heads × {levels} levels × "
                        f"{per} points). {SAMPLING_CAPTION}"
                    )
                    image = sampling_image(run, points, options.head, det.box, opacity)
                else:
                    caption = (
                        f"**Decoder cross-attention of query {det.query}** ({det.label} {det.score:.2f}): the "
                        "image positions this object query read to place its box. Click the photo here to see "
                        "the encoder self-attention at a point."
                    )
                    image = detr_overlay(run, state.relevance, opacity, box=det.box)
        except Exception as exc:  # noqa: BLE001
            return {self.attn: None, self.caption: status(message(exc), "warn"), self.state: state}
        return {self.attn: image, self.caption: caption, self.state: state}

    @fresh
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
            return {self.state: gr.skip()}  # no change ({} reads as a missing output)
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) and evt.index else evt.index
        if not isinstance(index, int) or not 0 <= index < len(state.dets):
            return {self.state: gr.skip()}  # no change ({} reads as a missing output)
        state.method, state.query = attention_method(state.run), state.dets[index].query
        state.label_id = state.dets[index].label_id
        return {**self.render(state, head, layer, direction, opacity), self.pick: gr.Dropdown(value=state.query)}

    @fresh
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
        state.method = attention_method(state.run)
        state.query, state.label_id = None if query in (None, "") else int(query), None
        return self.render(state, head, layer, direction, opacity)

    @fresh
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
            return {self.state: gr.skip()}  # no change ({} reads as a missing output)
        if point is None:
            return {self.caption: status("Click a point on the photo, or enter x and y.", "info")}
        x, y = (v / state.canvas.scale for v in point)
        return {**self.encoder_at(state, x, y, head, layer, direction, opacity), self.px: round(x), self.py: round(y)}

    @fresh
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
        state.method, state.point = (
            point_method(state.run),
            (min(max(float(x), 0), w - 1), min(max(float(y), 0), h - 1)),
        )
        return self.render(state, head, layer, direction, opacity)

    @fresh
    def attention_view(
        self, state: DetectState | None, head: str | None, layer: str | None, direction: str | None, opacity: float
    ) -> dict:
        """Head / layer / direction / opacity changed: redraw the current map."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return {self.attn: None, self.caption: "", self.state: None}
        return self.render(state, head, layer, direction, opacity)

    @fresh
    def relevance_view(self, state: DetectState | None, target: str | None, opacity: float) -> dict:
        """The relevance of the chosen detection for its class, or one map per box edge (a 2x2 panel)."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return {self.attn: None, self.caption: "Detect objects first.", self.state: None}
        det = chosen_detection(state)
        if det is None:
            return {
                self.caption: status("Click a detection first (a label under the photo, or a table row).", "info"),
                self.state: state,
            }
        kind = RELEVANCE_TARGETS.get(target or "class", "class")
        rt = state.run.family == "rtdetr"
        try:
            method = relevance_method(state.run)
            chosen = ExplainOptions(query=det.query, target_kind=kind, class_index=det.label_id if rt else None)
            result = state.run.explain(method, chosen)
        except Exception as exc:  # noqa: BLE001
            return {self.attn: None, self.caption: status(message(exc), "warn"), self.state: state}
        state.method, state.relevance = method, result.map
        what = f"query {det.query} ({det.label} {det.score:.2f}){gradient_note(state.run.loaded, method)}"
        note = RTDETR_RELEVANCE_CAPTION if rt else RELEVANCE_CAPTION
        if kind == "class" or not result.maps:
            image = detr_overlay(state.run, result.map, opacity, box=det.box)
            caption = f"**Relevance of {what} for its class.** {note}"
        else:
            image = edge_panels(state.run, result.maps, opacity, det.box)
            pushed = "pushed that edge right (x0, x1) or down (y0, y1)" if rt else "pushed that edge outwards"
            caption = (
                f"**Relevance of {what} for each box edge** (x0 left, y0 top, x1 right, y1 bottom): which "
                f"positions {pushed}. {note}"
            )
        return {self.attn: image, self.caption: caption, self.state: state}
