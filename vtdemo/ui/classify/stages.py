"""What each stage sees, in the Swin column: the first three principal components of each stage's tokens as RGB
(`vtdemo.explain.stages.run_stage_pca`), stage 1 (56x56 for Swin-T at 224 px) to stage 4 (7x7), next to the crop of
the photo the model saw. Swin builds a feature pyramid by patch merging (Liu et al. 2021, arXiv 2103.14030, §3.1):
each stage concatenates 2x2 neighbouring tokens and projects them, so the grid halves and the channels double.

One more forward pass (without attention) on request; the result is kept in the column's state for the photo.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ...pipeline import ClassifierRun, StagePCA
from ..common import MODEL, fresh
from .panel_views import stage_strip
from .views import ClassifyState, ColumnView, kept_view


def stages_caption(stages: list[StagePCA]) -> str:
    """How to read the strip, with this model's grids and the variance the three components hold."""
    grids = " → ".join(f"{s.grid[0]}x{s.grid[1]} ({s.channels} ch)" for s in stages)
    held = ", ".join(f"{sum(s.explained):.0%}" for s in stages)
    return (
        f"Each stage's tokens coloured by their first three principal components (red, green, blue; PCA over this "
        f"photo's tokens). Between stages, *patch merging* joins each 2x2 group of neighbouring tokens into one "
        f"and projects it: the grid halves and the channels double ({grids}), so Swin gives multi-scale feature "
        f"maps like a CNN's, which detection and segmentation heads use. Similar colours = tokens the stage "
        f"represents alike: fine texture and edges in stage 1, larger parts in stage 4. The three components "
        f"hold {held} of each stage's variance."
    )


class StagesPanel:
    """The accordion with the button, the strip and its caption (Swin columns only)."""

    def __init__(self, family: str) -> None:
        self.family = family
        with gr.Accordion("What each stage sees", open=False):
            self.button = gr.Button("Show the four stages", size="sm")
            self.image = gr.Image(
                label="Stage features (first 3 principal components as RGB)",
                interactive=False,
                format="png",
                show_label=False,
                buttons=["download", "fullscreen"],
                elem_id=f"{family}-stages",
                elem_classes="vt-result",
            )
            self.text = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-stages-text")
        self.views = [self.image, self.text]  # what a new photo clears

    def wire(self, column: ColumnView) -> None:
        self.column = column
        self.button.click(
            self.show,
            inputs=[column.state],
            outputs=[self.image, self.text, column.state],
            api_name=f"stages_{self.family}",
            **MODEL,
        )

    @fresh
    def show(self, state: ClassifyState | None) -> dict:
        """The strip for the cached run (computed once per photo)."""

        def make(run: ClassifierRun) -> tuple[Any, str]:
            stages = run.stage_pca()
            crop = run.image.crop(tuple(round(v) for v in run.region))
            return stage_strip(crop, stages), stages_caption(stages)

        return kept_view(self.column, state, "stages", make, self.image, self.text)
