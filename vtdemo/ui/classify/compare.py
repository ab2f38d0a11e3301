"""All methods side by side, in a Classify column: every method that applies to the model
(`vtdemo.explain.api.methods_for_run`) as a thumbnail over the photo, each with its deletion and insertion AUC
against a random order, and how much the methods agree (Spearman rank correlation between their maps), from
`vtdemo.explain.compare.compare` (the CLI's `explain --method all`; the protocol of Chefer, Gur & Wolf, CVPR 2021,
§4, with the curves of Petsiuk et al. 2018).

It runs on request, on the column's cached run: the attention methods reuse its forward pass, each gradient method
runs its own forward and backward pass once, and each map's curves cost (STEPS + 1) perturbed images per curve.
It answers in two steps: the maps and the agreement matrix as soon as they exist (`compare_maps`, about ten forward
passes for ViT-B), then the same thumbnails with their areas once the curves are measured (`score_maps`).
The result is kept in the column's state per photo, class and point: asking again, or clicking a thumbnail, does not
run the model. A click on a thumbnail makes that method the column's main map (through the column's own re-render).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
from PIL import Image

from ... import pipeline, render
from ...pipeline import GRID_STEPS, ClassifierRun, Comparison, ExplainOptions, MethodScore
from ..common import MODEL, VIEW, fresh, message, status
from ..components import Click
from .panel_views import agreement_heatmap, captioned
from .views import ClassifyState, ColumnView

STEPS = GRID_STEPS  # points per curve in the app: 0, 25, 50, 75, 100 % of the patches (the CLI's default is 20)
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
    lines = [
        f"deletion {score.deletion_auc:.3f} ({score.random_deletion_auc:.3f})",
        f"insertion {score.insertion_auc:.3f} ({score.random_insertion_auc:.3f})",
    ]
    return captioned(
        render.overlay(shown, score.map.numpy(), None, 0.5),
        [score.method, *(lines if score.scored else ["deletion, insertion: measuring…"])],
    )


def thumb_caption(score: MethodScore) -> str:
    """A thumbnail's caption: its name and its two areas, each next to the random order's."""
    if not score.scored:
        return f"{score.label} · deletion and insertion curves: being measured"
    return (
        f"{score.label} · deletion {score.deletion_auc:.3f} (random {score.random_deletion_auc:.3f}, lower is "
        f"better) · insertion {score.insertion_auc:.3f} (random {score.random_insertion_auc:.3f}, higher is better)"
    )


def summary(result: Comparison) -> str:
    """The line under the grid: what was explained and how to read it."""
    agreement = (
        f"The matrix is the Spearman rank correlation of each pair of maps on a {result.spearman_grid[0]}x"
        f"{result.spearman_grid[1]} grid. Click a thumbnail to make it the main map."
    )
    if not all(s.scored for s in result.scores):
        return (
            f"Every map explains *{result.target['label']}* ({result.target['score']:.1%}). {agreement} Measuring "
            f"each map's deletion and insertion curves ({STEPS + 1} points each) now: the areas follow."
        )
    best_del = min(result.scores, key=lambda s: s.deletion_auc)
    best_ins = max(result.scores, key=lambda s: s.insertion_auc)
    skipped = f" Left out: {', '.join(result.skipped)}." if result.skipped else ""
    return (
        f"Every map explains *{result.target['label']}* ({result.target['score']:.1%}). Fewest patches to delete "
        f"before the class goes: **{best_del.label}**; fewest to insert to bring it back: **{best_ins.label}** "
        f"(curves at {STEPS + 1} points: a quick estimate). {agreement}{skipped}"
    )


class ComparePanel:
    """The accordion with the button, the thumbnails and the agreement matrix of one column."""

    def __init__(self, family: str) -> None:
        self.family = family
        with gr.Accordion("All methods side by side", open=False):
            gr.Markdown(
                "Every method's map for this photo, how faithful each is (deletion and insertion curves against a "
                "random order; above each thumbnail, the random order's in brackets) and how much they agree (Spearman "
                "matrix). Click a thumbnail to show it above. The maps and the matrix appear first; the areas "
                "follow once the curves are measured (that part takes longest).",
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
                elem_classes=["vt-thumbs", "vt-result"],  # caption overlay hidden: each thumbnail has it above
            )
            self.matrix = gr.Image(
                label="Agreement (Spearman)",
                show_label=False,
                interactive=False,
                height=300,
                buttons=["download"],
                elem_id=f"{family}-agreement",
                elem_classes="vt-result",
            )
            self.text = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-compare-text")
        self.views = [self.gallery, self.matrix, self.text]  # what a new photo clears

    def wire(self, column: ColumnView) -> None:
        self.column = column

        def run(state, progress=gr.Progress()):
            yield from self.compare(state, progress)

        self.button.click(
            run,
            inputs=[column.state],
            outputs=[self.gallery, self.matrix, self.text, column.state],
            api_name=f"compare_{self.family}",
            show_progress="full",
            show_progress_on=[self.text],  # the thumbnails stay visible while their curves are measured
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
    def compare(self, state: ClassifyState | None, progress: Any = None) -> Iterator[dict]:
        """Every method on the cached run (or the comparison already kept for this photo, class and point): first
        the maps and the agreement matrix, then (a second update) the same thumbnails with their curves' AUCs."""
        state = self.column.s.cached(state)
        if state is None or state.run is None:
            yield {self.gallery: None, self.matrix: None, self.text: status("Upload a photo first.", "info")}
            return
        run = state.run
        key = compare_key(state)
        kept = state.panels.get("compare")
        try:
            if kept is None or kept[0] != key:
                names = [m.name for m in run.methods()]
                result = run.compare_maps(compare_options(state), names, self._progress(progress, "map"))
                kept = self._keep(state, key, result)
                yield self._shown(state, kept)
            result = kept[1]
            if not all(s.scored for s in result.scores):
                run.score_maps(result, compare_options(state), STEPS, progress=self._progress(progress, "curves"))
                kept = self._keep(state, key, result)
        except Exception as exc:  # noqa: BLE001 - one line for the user
            yield {self.gallery: None, self.matrix: None, self.text: status(message(exc), "warn")}
            return
        yield self._shown(state, kept)

    @staticmethod
    def _progress(progress: Any, what: str) -> Callable[[int, int, str], None]:
        def step(done: int, total: int, name: str) -> None:
            if progress is not None:
                progress((done, total), desc=f"{name}…", unit="maps" if what == "map" else "curves")

        return step

    def _keep(self, state: ClassifyState, key: Any, result: Comparison) -> tuple:
        """(key, result, thumbnails, agreement image), kept in the state (only the thumbnails are redrawn once
        scored)."""
        assert state.run is not None
        thumbs = [(thumbnail(state.run, s), thumb_caption(s)) for s in result.scores]
        old = state.panels.get("compare")
        same = old is not None and old[0] == key and old[1] is result  # scored now: the matrix is unchanged
        kept = (key, result, thumbs, old[3] if same else agreement_heatmap(result.methods, result.spearman))
        state.panels["compare"] = kept
        return kept

    def _shown(self, state: ClassifyState, kept: tuple) -> dict:
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
        state.method = pipeline.get_method(methods[k], state.run.family).name
        state.opacity = float(opacity)
        choices = [(m.label, m.name) for m in state.run.methods()]
        return {**self.column.redraw(state), self.column.method: gr.Dropdown(choices=choices, value=state.method)}
