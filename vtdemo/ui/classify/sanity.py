"""The sanity checks of a Classify column, for the map on screen:

- deletion and insertion curves (`vtdemo.explain.api.deletion_check`; Petsiuk et al. 2018, RISE, §4.1): delete the
  patches the map marks first (or insert them first into a blank image) and follow the class probability, against
  a random order. `/deletion_<family>` shows the deletion chart and the caption; the chained `/insertion_<family>`
  shows the insertion chart from the same check (no new forward pass).
- cascading parameter randomisation (Adebayo et al., NeurIPS 2018, arXiv 1810.03292, §3.1;
  `vtdemo.evaluate.randomisation.map_randomisation`): the Spearman correlation of the map with its original as the
  model's blocks are randomised from the top down, and the verdict (`/randomisation_<family>`).

Both are kept in the column's state for the map they checked (a new map, a new check).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr

from ... import pipeline
from ..common import MODEL, fresh, message, status
from .sanity_views import deletion_caption, deletion_plot, insertion_plot, randomisation_caption, randomisation_plot
from .views import ClassifyState, ColumnView


def _shown(state: ClassifyState | None) -> bool:
    return state is not None and state.run is not None and state.relevance is not None and state.target is not None


class SanityPanel:
    """The "Sanity check" accordion of one column: deletion and insertion charts, the randomisation chart."""

    def __init__(self, family: str) -> None:
        self.family = family
        with gr.Accordion("Sanity check: is the map faithful?", open=False):
            gr.Markdown(
                "Delete the patches the map marks as most relevant first and watch the class "
                "probability; a faithful map makes it fall faster than deleting patches at random (and, inserted "
                "first into a blank image, makes it rise faster).",
                elem_classes="vt-caption",
            )
            self.check = gr.Button("Run the deletion test", size="sm")
            with gr.Row():
                self.check_plot = gr.Image(
                    label="Deletion curve",
                    show_label=False,
                    interactive=False,
                    height=200,
                    min_width=300,  # side by side where the column is wide enough, one above the other where not
                    buttons=["download"],
                    elem_id=f"{family}-deletion",
                    elem_classes="vt-result",
                )
                self.insertion_plot = gr.Image(
                    label="Insertion curve",
                    show_label=False,
                    interactive=False,
                    height=200,
                    min_width=300,
                    buttons=["download"],
                    elem_id=f"{family}-insertion",
                    elem_classes="vt-result",
                )
            self.check_text = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-sanity-text")
            gr.Markdown(
                "Does the map depend on what the model learned? Randomise the weights block by block, from the top "
                "down, and see whether the map changes (one model run per block, so it takes a while; gradient "
                "methods take about three times as long).",
                elem_classes="vt-caption",
            )
            self.randomise = gr.Button("Run the randomisation test", size="sm")
            self.random_plot = gr.Image(
                label="Spearman with the original map, blocks randomised top-down",
                show_label=False,
                interactive=False,
                height=240,
                buttons=["download"],
                elem_id=f"{family}-randomisation",
                elem_classes="vt-result",
            )
            self.random_text = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-randomisation-text")
        #: what a new photo clears
        self.views = [self.check_plot, self.insertion_plot, self.check_text, self.random_plot, self.random_text]

    def wire(self, column: ColumnView) -> None:
        self.column = column
        f = self.family
        self.check.click(
            self.deletion,
            inputs=[column.state],
            outputs=[self.check_plot, self.check_text],
            api_name=f"deletion_{f}",
            **MODEL,
        ).then(
            self.insertion,
            inputs=[column.state],
            outputs=[self.insertion_plot],
            api_name=f"insertion_{f}",
            **MODEL,
        )
        self.randomise.click(
            self.randomisation,
            inputs=[column.state],
            outputs=[self.random_plot, self.random_text],
            api_name=f"randomisation_{f}",
            show_progress="full",
            **MODEL,
        )

    def _check(self, state: ClassifyState) -> dict[str, Any]:
        """The deletion / insertion check of the map on screen (kept in the state for that map)."""
        kept = state.panels.get("deletion")
        if kept is not None and kept[0] is state.relevance:
            return kept[1]
        assert state.run is not None and state.relevance is not None and state.target is not None
        check = state.run.deletion_check(state.relevance, state.target.get("index", -1))
        state.panels["deletion"] = (state.relevance, check)
        return check

    @fresh
    def deletion(self, state: ClassifyState | None) -> dict:
        """The deletion curves of the map on screen: a few batched forward passes."""
        state = self.column.s.cached(state)
        if state is None or not _shown(state):
            return {self.check_plot: None, self.check_text: status("Upload a photo first.", "info")}
        try:
            check = self._check(state)
        except Exception as exc:  # noqa: BLE001
            return {self.check_plot: None, self.check_text: status(message(exc), "warn")}
        assert state.target is not None
        return {self.check_plot: deletion_plot(check), self.check_text: deletion_caption(check, state.target)}

    @fresh
    def insertion(self, state: ClassifyState | None) -> dict:
        """The insertion curves of the same check (no forward pass when the deletion test ran)."""
        state = self.column.s.cached(state)
        if state is None or not _shown(state):
            return {self.insertion_plot: None}
        try:
            return {self.insertion_plot: insertion_plot(self._check(state))}
        except Exception as exc:  # noqa: BLE001
            gr.Warning(message(exc))
            return {self.insertion_plot: None}

    @fresh
    def randomisation(self, state: ClassifyState | None) -> dict:
        """The cascading randomisation curve of the map on screen, with its verdict."""
        state = self.column.s.cached(state)
        if state is None or not _shown(state):
            return {self.random_plot: None, self.random_text: status("Upload a photo first.", "info")}
        assert state.run is not None and state.target is not None
        kept = state.panels.get("randomisation")
        try:
            if kept is None or kept[0] is not state.relevance:
                method = pipeline.get_method(state.method, state.run.family)
                options = dataclasses.replace(state.options, class_index=state.target.get("index"))  # same class
                curve = state.run.randomisation(method, options)
                kept = state.panels["randomisation"] = (state.relevance, curve)
        except Exception as exc:  # noqa: BLE001
            return {self.random_plot: None, self.random_text: status(message(exc), "warn")}
        curve = kept[1]
        return {
            self.random_plot: randomisation_plot(curve),
            self.random_text: randomisation_caption(curve, state.target["label"]),
        }
