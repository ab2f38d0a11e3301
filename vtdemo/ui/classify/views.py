"""What the Classify tab shows, as pure functions of a column's cached state: the method choices for a family, the
map over the photo (with the Swin window outline at a clicked point), and its caption (the sanity check's charts are in
`vtdemo.ui.classify.sanity_views`). `vtdemo.ui.classify.column` owns the components and handlers that call these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image, ImageDraw

from ... import pipeline, render
from ...errors import ExplainError
from ...pipeline import ClassifierRun, ExplainOptions
from ..common import message, status
from ..engine_text import gradient_note


def method_choices(family: str) -> list[tuple[str, str]]:
    """(label, value) pairs for a family's method dropdown, from the registry."""
    return [(m.label, m.name) for m in pipeline.methods_for(family)]


def class_method(family: str) -> str | None:
    """The family's class-specific method (what a click on a class shows): the first registered one."""
    return next((m.name for m in pipeline.methods_for(family) if m.target == "class"), None)


class ColumnView(Protocol):
    """What a classifier column offers its panels (`ClassifierColumn`): its components, its session cache `s`, and
    the updates that redraw it. Panels receive the column as this and touch nothing else of it."""

    family: str
    s: Any  # `common.Services`: the session's runs, the config
    state: Any  # gr.State holding a ClassifyState
    label: Any
    overlay: Any
    caption: Any
    status: Any
    method: Any
    opacity: Any
    controls: list[Any]
    sizes: Any  # the column's `sizes.SizeControls` (its `resized` event)

    def render(self, state: ClassifyState) -> dict: ...

    def redraw(self, state: ClassifyState) -> dict: ...

    def control_updates(self, state: ClassifyState | None, method_name: str) -> dict: ...

    def result_lines(self, state: ClassifyState) -> dict: ...


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
    superseded: bool = False  # a newer run of this session replaced it (`RunIndex.hold`)
    panels: dict[str, Any] = field(default_factory=dict)  # what the column's panels computed for this photo

    @classmethod
    def of(
        cls, run: ClassifierRun, name: str, method: str, options: ExplainOptions | None = None, opacity: float = 0.5
    ) -> ClassifyState:
        """A new run's state: `method` if it applies to the run (else the run's first method), its top 5."""
        names = [m.name for m in run.methods()]  # e.g. the ViT LRP walks need the trained size
        chosen = method if method in names else names[0]
        return cls(run, name, chosen, options or ExplainOptions(), float(opacity), predictions=run.predictions(5))

    def release(self) -> None:
        """Drop the run and the map (the session ended, or the memory budget needs the room)."""
        self.run, self.relevance, self.target, self.predictions, self.released = None, None, None, [], True
        self.panels = {}


def window_outline(
    run: ClassifierRun, point: tuple[float, float], block: int | None, scale: float = 1.0
) -> list[tuple[float, float, float, float]]:
    """The window around `point` (original pixels) in one Swin block, as boxes in displayed pixels."""

    x0, y0, x1, y1 = run.region
    block = run.default_block() if block is None else block
    boxes = pipeline.window_box(run.attentions, run.point_in_input(point), block, reachable=False)
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
    if point is not None and "point" in pipeline.get_method(state.method, run.family).controls:
        draw = ImageDraw.Draw(out)
        for box in window_outline(run, point, state.options.block, scale):
            draw.rectangle(box, outline=(255, 255, 255), width=max(2, round(max(out.size) / 300)))
        out = render.mark_point(out, point, scale)
    return out


def caption(state: ClassifyState) -> str:
    """One line under the map: what it shows."""
    run, o, target = state.run, state.options, state.target
    assert run is not None and target is not None
    method = pipeline.get_method(state.method, run.family)
    text = f"**{method.label}**"
    if method.target == "class":
        text += f" for *{target['label']}* ({target['score']:.1%})"
    if "head" in method.controls:
        text += " · mean of heads" if o.head is None else f" · head {o.head}"
    if "block" in method.controls:
        rec = run.attentions[run.default_block() if o.block is None else o.block]
        text += f" · stage {rec.stage + 1}, block {rec.block + 1}{' (shifted)' if rec.shift else ''}"
    if o.mask_outliers and "mask_outliers" in method.controls:
        text += " · high-norm outlier tokens masked out"
    size = f" *Input size: {run.size_note}.*" if run.size_note else ""
    return f"{text}{gradient_note(run.loaded, method.name)}. {method.note}{size}{empty_note(state.relevance)}"


EMPTY = (
    " **This map is flat**: the method gives every patch the same value here (for a gradient method: no patch has "
    "positive evidence for this class), so it shows nothing; try another method or class."
)


def empty_note(relevance: torch.Tensor | None) -> str:
    """`EMPTY` for a map whose values are all the same (all zero included), else ''."""
    if relevance is None or relevance.numel() == 0:
        return ""
    return EMPTY if float(relevance.max() - relevance.min()) <= 1e-12 else ""


def class_index_of(run: ClassifierRun, name: str) -> int:
    """The class index of a name shown in the label list."""
    try:
        return run.loaded.labels.index(name)
    except ValueError:
        raise ExplainError(f"'{name}' is not a class of {run.loaded.id}") from None


def kept_view(column: ColumnView, state: Any, key: str, make: Any, image: Any, text: Any) -> dict:
    """A panel's (image, caption) for the column's cached run, made once per photo by `make(run)` and kept in the
    state under `key`; "Upload a photo first." without a run, one line when `make` fails."""
    state = column.s.cached(state)
    if state is None or state.run is None:
        return {image: None, text: status("Upload a photo first.", "info")}
    try:
        kept = state.panels.get(key)
        if kept is None:
            kept = state.panels[key] = make(state.run)
    except Exception as exc:  # noqa: BLE001 - one line for the user
        return {image: None, text: status(message(exc), "warn")}
    return {image: kept[0], text: kept[1], column.state: state}
