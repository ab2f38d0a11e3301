"""The Classify tab: one photo, a ViT/DeiT column and a Swin column side by side.

Each column runs its model once per photo (`vtdemo.explain.run_classifier`, attention kept), shows the top 5 and a
map over the part of the photo the model saw, and re-draws the map from the cached run when a control changes. The
methods, their labels and notes, and which controls each one uses come from the method registry
(`vtdemo.explain.registry`); a click on a class switches to the family's class-specific method. A sanity check per
column deletes the patches the map marks first (and inserts them into a blank image) and compares with a random
order. Handlers return dicts keyed by component: what they leave out stays as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import torch
from PIL import Image, ImageDraw

from .. import pipeline, render
from ..errors import ExplainError
from ..explain import registry
from ..explain.api import deletion_check, explain_run, methods_for_model
from ..explain.registry import ExplainOptions
from ..explain.runs import ClassifierRun, run_classifier
from ..images import load_image
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
from .components import Click, Slider, safe_image, upload_name


def method_choices(family: str) -> list[tuple[str, str]]:
    """(label, value) pairs for a family's method dropdown, from the registry."""
    return [(m.label, m.name) for m in registry.methods_for(family)]


def class_method(family: str) -> str | None:
    """The family's class-specific method (what a click on a class shows): the first registered one."""
    return next((m.name for m in registry.methods_for(family) if m.target == "class"), None)


@dataclass
class ClassifyState:
    """One column's cache: the run (logits + attention), the chosen method and options, and what is shown."""

    run: ClassifierRun | None  # None once released
    name: str
    method: str
    options: ExplainOptions = field(default_factory=ExplainOptions)
    opacity: float = 0.5
    relevance: torch.Tensor | None = None
    target: dict[str, Any] | None = None
    predictions: list[pipeline.Prediction] = field(default_factory=list)
    released: bool = False

    def release(self) -> None:
        """Drop the run and the map (the session ended, or the memory budget needs the room)."""
        self.run, self.relevance, self.target, self.predictions, self.released = None, None, None, [], True


# ------------------------------------------------------------------------------------------------- views


def window_outline(
    run: ClassifierRun, point: tuple[float, float], block: int | None, scale: float = 1.0
) -> list[tuple[float, float, float, float]]:
    """The window around `point` (original pixels) in one Swin block, as boxes in displayed pixels."""
    from ..explain import swin as ex_swin

    x0, y0, x1, y1 = run.region
    block = run.default_block() if block is None else block
    boxes = ex_swin.window_box(run.attentions, run.point_in_input(point), block, reachable=False)
    w, h = x1 - x0, y1 - y0
    return [
        ((x0 + a * w) * scale, (y0 + b * h) * scale, (x0 + c * w) * scale, (y0 + d * h) * scale) for a, b, c, d in boxes
    ]


def overlay(state: ClassifyState, max_side: int = render.DISPLAY_MAX) -> Image.Image:
    """The map over the photo (the part outside the model's crop dimmed), display-sized, with the clicked point."""
    run = state.run
    assert run is not None and state.relevance is not None
    shown, scale = render.fit(run.image, max_side)
    out = render.overlay(shown, state.relevance.numpy(), [v * scale for v in run.region], state.opacity)
    point = state.options.point
    if point is not None and "point" in registry.get(state.method, run.family).controls:
        draw = ImageDraw.Draw(out)
        for box in window_outline(run, point, state.options.block, scale):
            draw.rectangle(box, outline=(255, 255, 255), width=max(2, round(max(out.size) / 300)))
        out = render.mark_point(out, point, scale)
    return out


def caption(state: ClassifyState) -> str:
    """One line under the map: what it shows."""
    run, o, target = state.run, state.options, state.target
    assert run is not None and target is not None
    method = registry.get(state.method, run.family)
    text = f"**{method.label}**"
    if method.target == "class":
        text += f" for *{target['label']}* ({target['score']:.1%})"
    if "head" in method.controls:
        text += " · mean of heads" if o.head is None else f" · head {o.head}"
    if "block" in method.controls:
        rec = run.attentions[run.default_block() if o.block is None else o.block]
        text += f" · stage {rec.stage + 1}, block {rec.block + 1}{' (shifted)' if rec.shift else ''}"
    return f"{text}. {method.note}"


def deletion_plot(check: dict[str, Any], width: int = 480, height: int = 220) -> Image.Image:
    """The deletion curves of `deletion_check` as a small chart: probability of the explained class (y) against the
    fraction of patches deleted (x), most-relevant-first (orange) and in random order (grey)."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    small = render.font(12)
    left, right, top, bottom = 48, width - 24, 14, height - 34
    top_p = max(max(check["probability"]), max(check["random_probability"]), 1e-6)
    draw.rectangle((left, top, right, bottom), outline=(190, 190, 190))
    for frac in (0.0, 0.5, 1.0):
        text = f"{frac:.0%}"
        draw.text(
            (left + frac * (right - left) - draw.textlength(text, font=small) / 2, bottom + 4),
            text,
            fill=(90, 90, 90),
            font=small,
        )
    draw.text((4, top - 2), f"{top_p:.2g}", fill=(90, 90, 90), font=small)
    draw.text((left - 14, bottom - 12), "0", fill=(90, 90, 90), font=small)
    draw.text((left + (right - left) / 2 - 60, height - 15), "patches deleted", fill=(90, 90, 90), font=small)

    def points(ys: Sequence[float]) -> list[tuple[float, float]]:
        return [
            (left + f * (right - left), bottom - (p / top_p) * (bottom - top)) for f, p in zip(check["fraction"], ys)
        ]

    draw.line(points(check["random_probability"]), fill=(150, 150, 150), width=2)
    draw.line(points(check["probability"]), fill=(230, 120, 0), width=3)
    draw.text((right - 200, top + 6), f"this map: area {check['auc']:.3f}", fill=(230, 120, 0), font=small)
    draw.text(
        (right - 200, top + 22), f"random order: area {check['random_auc']:.3f}", fill=(120, 120, 120), font=small
    )
    return img


def deletion_caption(check: dict[str, Any], target: dict[str, Any]) -> str:
    """One line under the chart: what the numbers mean for this map."""
    ratio = check["auc"] / max(check["random_auc"], 1e-12)
    verdict = (
        "the map points at patches the model uses"
        if ratio < 0.9
        else "worse than random: the map points away from what the model uses"
        if ratio > 1.1
        else "about the same as random: this map says little about what the model used"
    )
    text = (
        f"Deleting the patches this map marks first drops *{target['label']}* from {check['probability'][0]:.1%} "
        f"with area **{check['auc']:.3f}** under the curve, against **{check['random_auc']:.3f}** in random "
        f"order (lower is better): {verdict}."
    )
    if "insertion_auc" in check:
        text += (
            f" Inserting them first into a blank image: area **{check['insertion_auc']:.3f}** against "
            f"**{check['random_insertion_auc']:.3f}** at random (higher is better)."
        )
    return text


# ------------------------------------------------------------------------------------------------- one column


class ClassifierColumn:
    """One model's column: its components, its cached state and its handlers."""

    def __init__(self, services: Services, family: str, image: gr.components.Component) -> None:
        self.s, self.family = services, family
        choices = services.config.choices(family)
        with gr.Column(scale=1, min_width=320):
            gr.Markdown(f"### {'ViT / DeiT' if family == 'vit' else 'Swin'}")
            self.model = gr.Dropdown(
                choices=choices, value=choices[0], allow_custom_value=True, label="Model (repo id or folder)"
            )
            hint = " (click a class for its own map)" if class_method(family) else ""
            self.label = gr.Label(num_top_classes=5, label=f"Top 5{hint}", elem_id=f"{family}-label")
            self.overlay = gr.Image(
                label="Where it looked" + (" (click a point)" if family == "swin" else ""),
                interactive=False,
                format="jpeg",
                height=320,
                buttons=["download", "fullscreen"],
                elem_id=f"{family}-overlay",
            )
            self.caption = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-caption")
            with gr.Accordion("Explanation settings", open=True):
                self.method = gr.Dropdown(
                    choices=method_choices(family), value=registry.default_for(family).name, label="Method"
                )
                self.klass = gr.Dropdown(choices=[], label="Class", visible=False)
                with gr.Row():
                    self.fusion = gr.Radio(["mean", "max", "min"], value="mean", label="Head fusion")
                    self.discard = Slider(0.0, 0.95, value=0.0, step=0.05, label="Discard lowest")
                with gr.Row():
                    self.head = gr.Dropdown(["mean"], value="mean", label="Head", visible=False, scale=1, min_width=90)
                    self.block = gr.Dropdown([], label="Block", visible=False, scale=2)
                self.opacity = Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
            with gr.Accordion("Sanity check: is the map faithful?", open=False):
                gr.Markdown(
                    "Delete the patches the map marks as most relevant first and watch the class "
                    "probability; a faithful map makes it fall faster than deleting patches at random.",
                    elem_classes="vt-caption",
                )
                self.check = gr.Button("Run the deletion test", size="sm")
                self.check_plot = gr.Image(
                    label="Deletion curve",
                    interactive=False,
                    height=220,
                    buttons=["download"],
                    elem_id=f"{family}-deletion",
                )
                self.check_text = gr.Markdown(elem_classes="vt-caption")
            self.status = gr.Markdown(elem_classes="vt-status", elem_id=f"{family}-status")
        self.state = services.state()
        self.controls = [self.klass, self.fusion, self.discard, self.head, self.block]
        self._wire(image)

    def _wire(self, image: gr.components.Component) -> None:
        f = self.family

        def classify(image_path, model_id, method, opacity, request: gr.Request, progress=gr.Progress()):
            return self.classify(image_path, model_id, method, opacity, progress, request)

        gr.on(
            [image.change, self.model.change],
            classify,
            inputs=[image, self.model, self.method, self.opacity],
            outputs=[self.label, self.overlay, self.caption, self.status, self.state, self.method, *self.controls],
            api_name=f"classify_{f}",
            show_progress="full",
            **MODEL,
        )
        gr.on(
            [
                self.method.input,
                self.klass.input,
                self.fusion.input,
                self.discard.change,
                self.head.input,
                self.block.input,
                self.opacity.change,
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
        self.check.click(
            self.sanity_check,
            inputs=[self.state],
            outputs=[self.check_plot, self.check_text],
            api_name=f"deletion_{f}",
            **MODEL,
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
        if any("point" in m.controls for m in registry.methods_for(f)):
            self.overlay.select(
                self.point_clicked,
                inputs=[self.state, self.opacity],
                outputs=clicked,
                api_name=f"point_map_{f}",
                api_visibility="undocumented",
                **VIEW,
            )

    # --------------------------------------------------------------------------------------------- views

    def _controls(self, state: ClassifyState | None, method_name: str) -> dict:
        """Class / fusion / discard / head / block: shown only where the method reads them (registry `controls`)."""
        method = registry.get(method_name, self.family)
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

    def _render(self, state: ClassifyState) -> dict:
        """Compute the map for the state's method and options, and show it."""
        run = state.run
        assert run is not None
        options = state.options
        method = registry.get(state.method, run.family)
        if "point" in method.controls and options.point is None:  # a window view starts at the centre
            x0, y0, x1, y1 = run.region
            options = dataclasses.replace(options, point=((x0 + x1) / 2, (y0 + y1) / 2))
        # the clicked class is kept for when a class-specific method is chosen again; the others explain the top one
        call = options if method.target == "class" else dataclasses.replace(options, class_index=None)
        result = explain_run(run, method.name, call)
        state.options, state.relevance, state.target = options, result.map, result.target
        return {self.overlay: overlay(state), self.caption: caption(state), self.status: ""}

    def _empty(self, text: str, kind: str = "warn") -> dict:
        method = registry.default_for(self.family).name
        return {
            self.label: None,
            self.overlay: None,
            self.caption: "",
            self.status: status(text, kind),
            self.state: None,
            self.method: gr.Dropdown(choices=method_choices(self.family), value=method),
            **self._controls(None, method),
        }

    def _redraw(self, state: ClassifyState) -> dict:
        """Render, or put the failure in the status line; then the controls."""
        try:
            out = self._render(state)
        except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback goes to the log
            out = {self.overlay: None, self.caption: "", self.status: status(message(exc), "warn")}
        return {**out, self.state: state, **self._controls(state, state.method)}

    # --------------------------------------------------------------------------------------------- handlers

    def classify(
        self,
        image_path: str | bytes | None,
        model_id: str,
        method: str,
        opacity: float,
        progress: Any = None,
        request: Any = None,
    ) -> dict:
        """Run the classifier on the photo (once) and show its top 5 and its map."""
        if not image_path:
            return self._empty("")
        try:
            image = load_image(image_path)
            loaded = self.s.load(model_id, self.family, progress)
            if progress is not None:
                progress(0.5, desc=f"Running {loaded.id}…")
            run = run_classifier(loaded, image)
            names = [m.name for m in methods_for_model(loaded)]
            state = ClassifyState(
                run=run,
                name=upload_name(image_path),
                method=method if method in names else names[0],
                opacity=float(opacity),
                predictions=pipeline.predictions(loaded, run.logits, 5),
            )
            shown = self._render(state)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line for the user
            text = message(exc)
            gr.Warning(text)
            return self._empty(text)
        self.s.runs.hold(getattr(request, "session_hash", None), self.family, state)
        return {
            self.label: {p.label: p.score for p in state.predictions},
            **shown,
            self.status: status(f"{loaded.id} · {loaded.family} · {run.x.shape[-2]}px input"),
            self.state: state,
            self.method: gr.Dropdown(
                choices=[(m.label, m.name) for m in methods_for_model(loaded)], value=state.method
            ),
            **self._controls(state, state.method),
        }

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
                **self._controls(None, registry.default_for(self.family).name),
            }
        run = state.run
        assert run is not None
        try:
            state.method = registry.get(method or state.method, run.family).name
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
                **self._controls(state, state.method),
            }
        return self._redraw(state)

    def class_clicked(self, state: ClassifyState | None, opacity: float, evt: Click) -> dict:
        """A click on a class in the top 5: the class-specific map for it."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return {}
        name = evt.value if isinstance(evt.value, str) else (evt.value or {}).get("label")
        method = class_method(state.run.family)
        if not name or method is None:
            gr.Info(
                "Click a class in the top-5 list to see its map."
                if method
                else f"{state.run.family} has no class-specific map."
            )
            return {}
        try:
            state.options = dataclasses.replace(state.options, class_index=class_index_of(state.run, str(name)))
        except ExplainError as exc:
            return {self.status: status(str(exc), "warn")}
        state.method, state.opacity = method, float(opacity)
        return {**self._redraw(state), self.method: gr.Dropdown(value=method)}

    def point_clicked(self, state: ClassifyState | None, opacity: float, evt: Click) -> dict:
        """A click on the map: the point method of the family (Swin: the window around that point)."""
        state = self.s.cached(state)
        point = click_point(evt)
        if state is None or state.run is None or point is None:
            return {}
        method = next(m.name for m in registry.methods_for(state.run.family) if "point" in m.controls)
        scale = render.fit(state.run.image)[1]
        state.options = dataclasses.replace(state.options, point=(point[0] / scale, point[1] / scale))
        state.method, state.opacity = method, float(opacity)
        return {**self._redraw(state), self.method: gr.Dropdown(value=method)}

    def sanity_check(self, state: ClassifyState | None) -> dict:
        """The deletion (and insertion) curves of the map on screen: a few batched forward passes."""
        state = self.s.cached(state)
        if state is None or state.run is None or state.relevance is None or state.target is None:
            return {self.check_plot: None, self.check_text: status("Upload a photo first.", "info")}
        try:
            check = deletion_check(state.run, state.relevance, state.target["index"])
        except Exception as exc:  # noqa: BLE001
            return {self.check_plot: None, self.check_text: status(message(exc), "warn")}
        return {self.check_plot: deletion_plot(check), self.check_text: deletion_caption(check, state.target)}


def class_index_of(run: ClassifierRun, name: str) -> int:
    """The class index of a name shown in the label list."""
    try:
        return run.loaded.labels.index(name)
    except ValueError:
        raise ExplainError(f"'{name}' is not a class of {run.loaded.id}") from None


# ------------------------------------------------------------------------------------------------- the tab


class ClassifyTab:
    """The photo, its examples and export, and the two columns."""

    def __init__(self, services: Services, examples: list[str], image_limits: dict[str, Any]) -> None:
        self.s = services
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260):
                self.image = safe_image(
                    sources=["upload", "clipboard"], label="Photo", height=300, elem_id="classify-photo", **image_limits
                )
                if examples:
                    gr.Examples(
                        examples=[[p] for p in examples],
                        inputs=[self.image],
                        cache_examples=False,
                        label="Examples (CC0 / public domain)",
                        examples_per_page=8,
                    )
                gr.Markdown(
                    "Maps are drawn over the part of the photo the model saw (its center crop); the dimmed "
                    "border was cut off.",
                    elem_classes="vt-caption",
                )
                with gr.Accordion("Export", open=False):
                    export = gr.Button("Export results", size="sm")
                    self.files = gr.File(
                        label="Downloads: results JSON, overlays (PNG), raw maps (.npy)",
                        file_count="multiple",
                        interactive=False,
                    )
            self.vit = ClassifierColumn(services, "vit", self.image)
            self.swin = ClassifierColumn(services, "swin", self.image)
        export.click(
            self.export,
            inputs=[self.vit.state, self.swin.state],
            outputs=self.files,
            api_name="export_classify",
            **MODEL,
        )

    def export(self, vit: ClassifyState | None, swin: ClassifyState | None) -> list[str]:
        """Results JSON (the CLI's `classify --json` schema, one object per model), overlays (PNG, original size)
        and raw maps (.npy, the model's own grid)."""
        states = [s for s in (self.s.cached(vit), self.s.cached(swin)) if s is not None and s.run is not None]
        if not states:
            raise gr.Error("Nothing to export yet: classify a photo first.")
        folder = export_dir()
        stem = safe_stem(states[0].name)
        files = [
            write_json(
                folder / f"{stem}.classify.json",
                [
                    pipeline.ClassifyResult(image=s.name, model=s.run.loaded.id, predictions=s.predictions).to_dict()
                    for s in states
                    if s.run is not None
                ],
            )
        ]
        for s in states:
            if s.relevance is None or s.run is None:
                continue
            tag = f"{stem}.{s.run.family}.{s.method}"
            render.overlay(s.run.image, s.relevance.numpy(), s.run.region, s.opacity).save(folder / f"{tag}.png")
            files += [folder / f"{tag}.png", write_npy(folder / f"{tag}.npy", s.relevance)]
        return [str(f) for f in files]
