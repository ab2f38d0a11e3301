"""What the Classify tab shows, as pure functions of a column's cached state: the method choices for a family, the
map over the photo (with the Swin window outline at a clicked point), its caption, and the sanity check's deletion /
insertion chart and its caption. `vtdemo.ui.classify` owns the components and handlers that call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, ImageDraw

from .. import pipeline, render
from ..errors import ExplainError
from ..explain import registry
from ..explain.registry import ExplainOptions
from ..explain.runs import ClassifierRun
from .engine_text import gradient_note


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
    return f"{text}{gradient_note(run.loaded, method.name)}. {method.note}"


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


def class_index_of(run: ClassifierRun, name: str) -> int:
    """The class index of a name shown in the label list."""
    try:
        return run.loaded.labels.index(name)
    except ValueError:
        raise ExplainError(f"'{name}' is not a class of {run.loaded.id}") from None
