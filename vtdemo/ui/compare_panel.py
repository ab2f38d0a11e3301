"""All methods side by side, in a Classify column: every method that applies to the model
(`vtdemo.explain.api.methods_for_run`) as a thumbnail over the photo, each with its deletion and insertion AUC
against a random order, and how much the methods agree (Spearman rank correlation between their maps), from
`vtdemo.explain.compare.compare` (the CLI's `explain --method all`; the protocol of Chefer, Gur & Wolf, CVPR 2021,
§4, with the curves of Petsiuk et al. 2018).

It runs on request, on the column's cached run: the attention methods reuse its forward pass, each gradient method
runs its own forward and backward pass once, and each map's curves cost (STEPS + 1) perturbed images per curve.
The result is kept in the column's state per photo, class and point: asking again, or clicking a thumbnail, does not
run the model. A click on a thumbnail makes that method the column's main map (through the column's own re-render).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from .. import render
from ..explain import registry
from ..explain.api import methods_for_run
from ..explain.compare import Comparison, MethodScore, compare
from ..explain.registry import ExplainOptions
from ..explain.runs import ClassifierRun
from .classify_views import ClassifyState
from .common import MODEL, VIEW, fresh, message, status
from .components import Click
from .panel_views import agreement_heatmap, captioned

if TYPE_CHECKING:
    from .classify import ClassifierColumn

#: Points per curve in the app (0, 25, 50, 75, 100 % of the patches): the CLI's default is 20.
STEPS = 4
THUMB = 240  # width of a thumbnail, pixels


def compare_key(state: ClassifyState) -> tuple[int | None, tuple[float, float] | None]:
    """What a comparison depends on besides the photo: the class the class methods explain, and the point."""
    return state.options.class_index, state.options.point


def compare_options(state: ClassifyState) -> ExplainOptions:
    """Default options for every method, with the column's class and (for a window method) its point, or the
    centre of the crop when none was clicked yet."""
    run = state.run
    assert run is not None
    point = state.options.point
    if point is None:
        x0, y0, x1, y1 = run.region
        point = ((x0 + x1) / 2, (y0 + y1) / 2)
    return ExplainOptions(class_index=state.options.class_index, point=point)


def thumbnail(run: ClassifierRun, score: MethodScore, side: int = THUMB) -> Image.Image:
    """One method's map over the part of the photo the model saw, `side` pixels wide, with its name and its two
    areas (random order's in brackets) written above it: the gallery's own caption is cut short in its grid."""
    x0, y0, x1, y1 = (round(v) for v in run.region)
    crop = run.image.crop((x0, y0, x1, y1))
    shown = crop.resize((side, max(1, round(side * crop.height / max(crop.width, 1)))), Image.Resampling.BILINEAR)
    return captioned(
        render.overlay(shown, score.map.numpy(), None, 0.5),
        [
            score.method,
            f"deletion {score.deletion_auc:.3f} ({score.random_deletion_auc:.3f})",
            f"insertion {score.insertion_auc:.3f} ({score.random_insertion_auc:.3f})",
        ],
    )


def thumb_caption(score: MethodScore) -> str:
    """A thumbnail's caption: its name and its two areas, each next to the random order's."""
    return (
        f"{score.label} · deletion {score.deletion_auc:.3f} (random {score.random_deletion_auc:.3f}, lower is "
        f"better) · insertion {score.insertion_auc:.3f} (random {score.random_insertion_auc:.3f}, higher is better)"
    )


def summary(result: Comparison) -> str:
    """The line under the grid: what was explained and how to read it."""
    best_del = min(result.scores, key=lambda s: s.deletion_auc)
    best_ins = max(result.scores, key=lambda s: s.insertion_auc)
    skipped = f" Left out: {', '.join(result.skipped)}." if result.skipped else ""
    return (
        f"Every map explains *{result.target['label']}* ({result.target['score']:.1%}). Fewest patches to delete "
        f"before the class goes: **{best_del.label}**; fewest to insert to bring it back: **{best_ins.label}** "
        f"(curves at {STEPS + 1} points; the CLI's `explain --method all` uses 21). The matrix is the Spearman rank "
        f"correlation of each pair of maps on a {result.spearman_grid[0]}x{result.spearman_grid[1]} grid. Click a "
        f"thumbnail to make it the main map.{skipped}"
    )


class ComparePanel:
    """The accordion with the button, the thumbnails and the agreement matrix of one column."""

    def __init__(self, family: str) -> None:
        self.family = family
        with gr.Accordion("All methods side by side", open=False):
            gr.Markdown(
                "Every method's map for this photo, how faithful each is (deletion and insertion curves against a "
                "random order; above each thumbnail, the random order's in brackets) and how much they agree (Spearman "
                "matrix). Click a thumbnail to show it above. Runs the gradient methods once each and the curves: a few "
                "seconds for the tiny models, up to half a minute for ViT-B on a 2-core CPU.",
                elem_classes="vt-caption",
            )
            self.button = gr.Button("Compare all methods", size="sm")
            self.gallery = gr.Gallery(
                label="Methods (click one to show it above)",
                show_label=False,
                columns=2,
                object_fit="contain",
                allow_preview=False,
                interactive=False,
                elem_id=f"{family}-compare",
            )
            self.matrix = gr.Image(
                label="Agreement (Spearman)",
                show_label=False,
                interactive=False,
                height=300,
                buttons=["download"],
                elem_id=f"{family}-agreement",
            )
            self.text = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-compare-text")
        self.views = [self.gallery, self.matrix, self.text]  # what a new photo clears

    def wire(self, column: ClassifierColumn) -> None:
        self.column = column

        def run(state, progress=gr.Progress()):
            return self.compare(state, progress)

        self.button.click(
            run,
            inputs=[column.state],
            outputs=[self.gallery, self.matrix, self.text, column.state],
            api_name=f"compare_{self.family}",
            show_progress="full",
            **MODEL,
        )
        self.gallery.select(
            self.pick,
            inputs=[column.state, column.opacity],
            outputs=[
                column.overlay,
                column.caption,
                column.status,
                column.state,
                column.method,
                *column.controls,
            ],
            api_name=f"compare_pick_{self.family}",
            api_visibility="undocumented",
            **VIEW,
        )

    @fresh
    def compare(self, state: ClassifyState | None, progress: Any = None) -> dict:
        """Every method on the cached run (or the comparison already kept for this photo, class and point)."""
        state = self.column.s.cached(state)
        if state is None or state.run is None:
            return {self.gallery: None, self.matrix: None, self.text: status("Upload a photo first.", "info")}
        key = compare_key(state)
        kept = state.panels.get("compare")
        try:
            if kept is None or kept[0] != key:

                def step(done: int, total: int, name: str) -> None:
                    if progress is not None:
                        progress((done, total), desc=f"{name}…", unit="methods")

                names = [m.name for m in methods_for_run(state.run)]
                result = compare(state.run, compare_options(state), STEPS, methods=names, progress=step)
                thumbs = [(thumbnail(state.run, s), thumb_caption(s)) for s in result.scores]
                kept = (key, result, thumbs, agreement_heatmap(result.methods, result.spearman))
                state.panels["compare"] = kept
        except Exception as exc:  # noqa: BLE001 - one line for the user
            return {self.gallery: None, self.matrix: None, self.text: status(message(exc), "warn")}
        _, result, thumbs, heat = kept
        return {self.gallery: thumbs, self.matrix: heat, self.text: summary(result), self.column.state: state}

    @fresh
    def pick(self, state: ClassifyState | None, opacity: float, evt: Click) -> dict:
        """A click on thumbnail k: method k becomes the column's map (re-rendered from the cached run)."""
        state = self.column.s.cached(state)
        kept = state.panels.get("compare") if state is not None and state.run is not None else None
        if state is None or kept is None:
            return {self.column.state: gr.skip()}  # no change ({} reads as a missing output)
        methods = kept[1].methods
        k = evt.index
        if isinstance(k, (list, tuple)) and len(k) == 1:
            k = k[0]
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(methods):
            return {self.column.status: status(f"Pick one of the {len(methods)} thumbnails.", "warn")}
        assert state.run is not None
        state.method = registry.get(methods[k], state.run.family).name
        state.opacity = float(opacity)
        choices = [(m.label, m.name) for m in methods_for_run(state.run)]
        return {**self.column._redraw(state), self.column.method: gr.Dropdown(choices=choices, value=state.method)}
