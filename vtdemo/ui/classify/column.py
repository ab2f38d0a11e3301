"""One column of the Classify tab (`vtdemo.ui.classify.tab`): a ViT/DeiT or a Swin model, its components, state and
handlers.

The column runs its model once per photo (`vtdemo.pipeline.run_classifier`, attention kept), shows the top 5 and a
map over the part of the photo the model saw, and re-draws the map from the cached run when a control changes. The
methods, their labels and notes, and which controls each one uses come from the method registry
(`vtdemo.explain.registry`); a click on a class switches to the family's class-specific method. A sanity check per
column deletes the patches the map marks first (and inserts them into a blank image) and compares with a random
order, and randomises the model block by block (`vtdemo.ui.classify.sanity`); an accordion compares every method
(`vtdemo.ui.classify.compare`), and the Swin column shows what each stage sees (`vtdemo.ui.classify.stages`). Handlers
return dicts keyed by component: what they leave out stays as it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr

from ... import pipeline, render
from ...errors import ExplainError, ImageError, VtdemoError
from ...pipeline import ExplainOptions, SizeChoice
from ..common import (
    MODEL,
    VIEW,
    Services,
    click_point,
    colorbar,
    fresh,
    heads_choice,
    message,
    runs_models,
    status,
    with_details,
)
from ..components import Click, Slider, upload_name
from .compare import ComparePanel
from .dino import DinoPanel
from .inspector import Inspector
from .sanity import SanityPanel
from .sizes import SizeControls
from .stages import StagesPanel
from .views import (
    ClassifyState,
    caption,
    class_index_of,
    class_method,
    method_choices,
    overlay,
)

# ------------------------------------------------------------------------------------------------- one column


#: What the top-5 box shows for a model without a classifier head (its status line says more).
NO_CLASSES = "No classes: a feature model"


def _skip(outputs: dict) -> dict:
    """The same outputs, each left as it is on the page."""
    return dict.fromkeys(outputs, gr.skip())


class ClassifierColumn:
    """One model's column: its components, its cached state and its handlers."""

    def __init__(self, services: Services, family: str, image: gr.components.Component) -> None:
        self.s, self.family = services, family
        choices = services.config.choices(family)
        with gr.Column(scale=1, min_width=320, elem_id=f"{family}-column"):
            gr.Markdown(f"### {'ViT / DeiT' if family == 'vit' else 'Swin'}")
            self.model = gr.Dropdown(
                choices=choices,
                value=choices[0],
                allow_custom_value=True,
                label="Model (repo id or folder)",
                elem_id=f"{family}-model",
            )
            hint = " (click a class for its own map)" if class_method(family) else ""
            self.label = gr.Label(num_top_classes=5, label=f"Top 5{hint}", elem_id=f"{family}-label")
            self.overlay = gr.Image(
                label=self._heading(None),
                interactive=False,
                format="jpeg",
                height=320,
                buttons=["download", "fullscreen"],
                elem_id=f"{family}-overlay",
            )
            colorbar(f"{family}-colorbar")
            self.caption = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-caption")
            with gr.Accordion("Explanation settings", open=False):
                self.method = gr.Dropdown(
                    choices=method_choices(family),
                    value=pipeline.default_method(family).name,
                    label="Method",
                    elem_id=f"{family}-method",
                )
                self.klass = gr.Dropdown(choices=[], label="Class", visible=False)
                with gr.Row():
                    self.fusion = gr.Radio(
                        list(pipeline.FUSIONS),
                        value="mean",
                        label="Head fusion",
                        info="how each layer's attention heads are combined",
                    )
                    self.discard = Slider(
                        0.0, 0.95, value=0.0, step=0.05, label="Discard lowest", elem_id=f"{family}-discard"
                    )
                with gr.Row():
                    self.head = gr.Dropdown(["mean"], value="mean", label="Head", visible=False, scale=1, min_width=90)
                    self.block = gr.Dropdown([], label="Block", visible=False, scale=2)
                self.opacity = Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity", elem_id=f"{family}-opacity")
                self.sizes = SizeControls(family)
            self.panels = [SanityPanel(family), ComparePanel(family)] + (
                [StagesPanel(family)] if family == "swin" else [DinoPanel(family, services)]
            )
            self.inspector = Inspector(family) if family == "vit" else None
            self.status = gr.Markdown(elem_classes="vt-status", elem_id=f"{family}-status")
        self.state = services.state()
        self.controls = [self.klass, self.fusion, self.discard, self.head, self.block]
        classified = self._wire(image)
        self.sizes.wire(self, classified)
        if self.inspector is not None:
            self.inspector.wire(self, classified)

    def _wire(self, image: gr.components.Component) -> Any:
        f = self.family

        def classify(
            image_path, model_id, method, opacity, size, previous, request: gr.Request, progress=gr.Progress()
        ):
            return self.classify(image_path, model_id, method, opacity, progress, request, size, previous)

        classified = gr.on(
            [image.change, self.model.change],
            classify,
            inputs=[image, self.model, self.method, self.opacity, self.sizes.state, self.state],
            outputs=[self.label, self.overlay, self.caption, self.status, self.state, self.method, *self.controls],
            api_name=f"classify_{f}",
            show_progress="full",
            show_progress_on=[self.label, self.overlay],  # not over the column's controls (outputs too)
            **MODEL,
        )
        gr.on(
            [
                self.method.input,
                self.klass.input,
                self.fusion.input,
                self.discard.input,
                self.head.input,
                self.block.input,
                self.opacity.input,
            ],
            self.explain,
            inputs=[
                self.state,
                self.method,
                self.klass,
                self.fusion,
                self.discard,
                self.head,
                self.block,
                self.opacity,
            ],
            outputs=[self.overlay, self.caption, self.status, self.state, *self.controls],
            api_name=f"explain_{f}",
            **VIEW,
        )
        self.caption.change(
            self.heading,
            inputs=[self.state],
            outputs=[self.overlay],
            api_name=f"heading_{f}",
            api_visibility="private",
            **VIEW,
        )
        for panel in self.panels:
            panel.wire(self)
        views = [v for panel in self.panels for v in panel.views]  # a new photo (or model) clears the panels
        self.label.change(
            lambda: dict.fromkeys(views), outputs=views, api_name=f"clear_panels_{f}", api_visibility="private", **VIEW
        )
        clicked = [self.overlay, self.caption, self.status, self.state, self.method, *self.controls]
        self.label.select(
            self.class_clicked,
            inputs=[self.state, self.opacity],
            outputs=clicked,
            api_name=f"class_map_{f}",
            api_visibility="undocumented",
            **VIEW,
        )
        if any("point" in m.controls for m in pipeline.methods_for(f)):
            self.overlay.select(
                self.point_clicked,
                inputs=[self.state, self.opacity],
                outputs=clicked,
                api_name=f"point_map_{f}",
                api_visibility="undocumented",
                **VIEW,
            )
        return classified

    # --------------------------------------------------------------------------------------------- views

    def control_updates(self, state: ClassifyState | None, method_name: str) -> dict:
        """Class / fusion / discard / head / block: shown only where the method reads them (registry `controls`)."""
        method = pipeline.get_method(method_name, self.family)
        run = state.run if state else None
        classes = [p.label for p in state.predictions] if state else []
        current = state.target["label"] if state and state.target else None
        heads = ["mean"] + [str(i) for i in range(run.num_heads)] if run else ["mean"]
        blocks = run.blocks() if run else []
        o = state.options if state else ExplainOptions()
        block = (run.default_block() if o.block is None else o.block) if blocks else None
        return {
            self.klass: gr.Dropdown(
                choices=classes,
                value=current if current in classes else (classes[0] if classes else None),
                visible="class_index" in method.controls and method.target == "class",
            ),
            self.fusion: gr.Radio(visible="head_fusion" in method.controls),
            self.discard: Slider(visible="discard" in method.controls),
            self.head: gr.Dropdown(
                choices=heads, value="mean" if o.head is None else str(o.head), visible="head" in method.controls
            ),
            self.block: gr.Dropdown(choices=blocks, value=block, visible="block" in method.controls),
        }

    def render(self, state: ClassifyState) -> dict:
        """Compute the map for the state's method and options, and show it."""
        run = state.run
        assert run is not None
        options = state.options
        method = pipeline.get_method(state.method, run.family)
        if "point" in method.controls and options.point is None:  # a window view starts at the centre
            x0, y0, x1, y1 = run.region
            options = dataclasses.replace(options, point=((x0 + x1) / 2, (y0 + y1) / 2))
        # the clicked class is kept for when a class-specific method is chosen again; the others explain the top one
        call = options if method.target == "class" else dataclasses.replace(options, class_index=None)
        result = run.explain(method.name, call)
        state.options, state.relevance, state.target = options, result.map, result.target
        return {self.overlay: overlay(state), self.caption: caption(state), self.status: ""}

    def heading(self, state: ClassifyState | None) -> Any:
        """After the map changed (its caption did): the map's heading names the class a class-specific map explains
        (a clicked class included), not the top class above it. Only the heading changes (a label-only update)."""
        run = getattr(state, "run", None)
        if state is None or run is None or state.target is None:
            return gr.Image(label=self._heading(None))
        specific = pipeline.get_method(state.method, run.family).target == "class"
        return gr.Image(label=self._heading(state.target if specific else None))

    def _heading(self, target: dict[str, Any] | None) -> str:
        """The map's heading: the class it explains when the method is class-specific (a clicked class included)."""
        where = f"Where it looked for “{target['label']}”" if target else "Where it looked"
        return where + (" (click a point)" if self.family == "swin" else "")

    def _empty(self, text: str, kind: str = "warn") -> dict:
        method = pipeline.default_method(self.family).name
        return {
            self.label: None,
            self.overlay: None,
            self.caption: "",
            self.status: status(text, kind),
            self.state: None,
            self.method: gr.Dropdown(choices=method_choices(self.family), value=method),
            **self.control_updates(None, method),
        }

    def _model_refused(self, model_id: Any, exc: VtdemoError, previous: ClassifyState | None) -> dict:
        """A model id that did not load: one toast; the column keeps the previous model's result (if it has one)
        and its status line says which model that is."""
        text = f"'{str(model_id or '').strip()[:80]}' was not loaded: {message(exc)}"
        gr.Warning(text)
        if previous is None or previous.run is None or previous.released:
            return self._empty(text)
        kept = f"{text} Still showing {previous.run.loaded.id}."
        return {**_skip(self._empty("")), self.status: status(kept, "warn")}

    def redraw(self, state: ClassifyState) -> dict:
        """Render, or put the failure in the status line; then the controls."""
        try:
            out = self.render(state)
        except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback goes to the log
            out = {self.overlay: None, self.caption: "", self.status: status(message(exc), "warn")}
        return {**out, self.state: state, **self.control_updates(state, state.method)}

    # --------------------------------------------------------------------------------------------- handlers

    @runs_models
    def classify(
        self,
        image_path: str | bytes | None,
        model_id: str,
        method: str,
        opacity: float,
        progress: Any = None,
        request: Any = None,
        size: SizeChoice | None = None,
        previous: ClassifyState | None = None,
    ) -> dict:
        """Run the classifier on the photo (once, at the column's input size) and show its top 5 and its map.
        previous: the column's state before (kept on screen when the model cannot be loaded)."""
        if not image_path:
            return self._empty("")
        try:
            image = pipeline.load_image(image_path, upload_name(image_path))
        except ImageError as exc:  # the photo's problem: said once for the tab (by the first column), not per column
            text = message(exc)
            if self.family == "vit":
                gr.Warning(text)
            return self._empty(text if self.family == "vit" else "")
        try:
            loaded = self.s.load(model_id, self.family, progress, getattr(request, "session_hash", None))
        except VtdemoError as exc:  # a model that cannot be loaded: the previous result stays, and says whose it is
            return self._model_refused(model_id, exc, previous)
        try:
            if progress is not None:
                progress(0.5, desc=f"Running {loaded.id}…")
            run = pipeline.run_classifier_at(loaded, image, size)  # the column's size, or the trained one and why
            state = ClassifyState.of(run, upload_name(image_path), method, opacity=opacity)
            shown = self.render(state)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line for the user
            text = message(exc)
            gr.Warning(text)
            return self._empty(text)
        self.s.runs.hold(getattr(request, "session_hash", None), self.family, state)
        return {
            **shown,
            **self.result_lines(state),  # after `shown`: its status line wins
            self.state: state,
            self.method: gr.Dropdown(choices=[(m.label, m.name) for m in run.methods()], value=state.method),
            **self.control_updates(state, state.method),
        }

    def result_lines(self, state: ClassifyState) -> dict:
        """The top 5 (or why a feature model has none) and the status line of a run, with what produced it in its
        details: the same after a new photo and after a new input size."""
        run = state.run
        assert run is not None
        loaded = run.model_as_loaded
        h, w = run.input_size
        return {
            self.label: {p.label: p.score for p in state.predictions} if loaded.labels else NO_CLASSES,
            self.status: status(
                with_details(
                    pipeline.no_head_note(loaded) or f"{loaded.id}",
                    f"{loaded.family} · {w}x{h}px input · " + self.s.engine_line(loaded, run.input_size),
                )
            ),
        }

    @fresh
    def explain(
        self,
        state: ClassifyState | None,
        method: str,
        class_name: str | None,
        fusion: str,
        discard: float,
        head: str | None,
        block: int | None,
        opacity: float,
    ) -> dict:
        """Re-draw the map from the cached run (no forward pass; gradient methods run one backward pass)."""
        state = self.s.cached(state)
        if state is None:
            return {
                self.overlay: None,
                self.caption: "",
                self.status: status("Upload a photo first.", "info"),
                self.state: None,
                **self.control_updates(None, pipeline.default_method(self.family).name),
            }
        run = state.run
        assert run is not None
        try:
            state.method = pipeline.get_method(method or state.method, run.family).name
            class_index = state.options.class_index
            if class_name:
                class_index = class_index_of(run, class_name)
            state.options = dataclasses.replace(
                state.options,
                head_fusion=fusion or "mean",
                discard=float(discard or 0),
                head=heads_choice(head),
                block=None if block in (None, "") else int(block),
                class_index=class_index,
            )
            state.opacity = float(opacity)
        except Exception as exc:  # noqa: BLE001
            return {
                self.overlay: None,
                self.caption: "",
                self.status: status(message(exc), "warn"),
                self.state: state,
                **self.control_updates(state, state.method),
            }
        return self.redraw(state)

    @fresh
    def class_clicked(self, state: ClassifyState | None, opacity: float, evt: Click) -> dict:
        """A click on a class in the top 5: the class-specific map for it."""
        state = self.s.cached(state)
        if state is None or state.run is None or not state.predictions:  # no photo yet, or a feature model
            return {self.state: gr.skip()}  # no change ({} reads as a missing output)
        name = evt.value if isinstance(evt.value, str) else (evt.value or {}).get("label")
        method = class_method(state.run.family)
        if not name or method is None:
            gr.Info(
                "Click a class in the top-5 list to see its map."
                if method
                else f"{state.run.family} has no class-specific map."
            )
            return {self.state: gr.skip()}  # no change ({} reads as a missing output)
        try:
            state.options = dataclasses.replace(state.options, class_index=class_index_of(state.run, str(name)))
        except ExplainError as exc:
            return {self.status: status(str(exc), "warn")}
        state.method, state.opacity = method, float(opacity)
        return {**self.redraw(state), self.method: gr.Dropdown(value=method)}

    @fresh
    def point_clicked(self, state: ClassifyState | None, opacity: float, evt: Click) -> dict:
        """A click on the map: the point method of the family (Swin: the window around that point)."""
        state = self.s.cached(state)
        point = click_point(evt)
        if state is None or state.run is None or point is None:
            return {self.state: gr.skip()}  # no change ({} reads as a missing output)
        method = next(m.name for m in pipeline.methods_for(state.run.family) if "point" in m.controls)
        scale = render.fit(state.run.image)[1]
        state.options = dataclasses.replace(state.options, point=(point[0] / scale, point[1] / scale))
        state.method, state.opacity = method, float(opacity)
        return {**self.redraw(state), self.method: gr.Dropdown(value=method)}
