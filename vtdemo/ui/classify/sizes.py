"""The Classify columns' "Input size" choice: run the model at another input size than it was trained at.

A ViT / DeiT runs at any multiple of its patch size: its absolute position embeddings are resampled to the new
patch grid (bicubic, as timm's `resample_abs_pos_embed`), and optionally at the photo's aspect ratio (a
non-square grid; `vtdemo.preprocess.for_input_size`). A Swin runs only at the sizes where every stage keeps the
window its relative-position bias was trained for (`vtdemo.input_size.sizes`; Swin-T: 224, 448, ...): there is
nothing to interpolate, there are more windows. Either way the map follows the real patch grid of the run, and the
caption says plainly at which size the model runs and at which it was trained (`size_note`).

The choice lives in a `gr.State` of the column (no API parameter of `/classify_vit` or `/classify_swin` changes):
a new photo or model runs at the chosen size when the model allows it (else at its trained size, saying so), and
`/resize_vit` / `/resize_swin` re-run the cached photo at a new size.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ... import checks, pipeline
from ...pipeline import TRAINED, SizeChoice
from ..common import MODEL, VIEW, fresh, message, session_of, status
from ..components import Checkbox
from .views import ClassifyState, ColumnView


def choices(loaded: pipeline.LoadedModel | None) -> list[tuple[str, str]]:
    """(label, value) pairs for the dropdown."""
    if loaded is None:
        return [("trained size", TRAINED)]
    return [(f"trained size ({pipeline.trained_side(loaded)} px)", TRAINED)] + [
        (f"{s} px", str(s)) for s in pipeline.offered_sizes(loaded)
    ]


# ------------------------------------------------------------------------------------------------- the control


class SizeControls:
    """The "Input size" dropdown (and, for ViT, "keep the photo's aspect ratio") of one column, and its handlers."""

    def __init__(self, family: str) -> None:
        self.family = family
        with gr.Row():
            self.size = gr.Dropdown(
                choices=choices(None),
                value=TRAINED,
                allow_custom_value=True,  # checked by `parse` against the loaded model, not the build-time list
                label="Input size",
                elem_id=f"{family}-input-size",
                scale=2,
            )
            self.aspect = (
                Checkbox(value=False, label="keep the photo's aspect ratio", elem_id=f"{family}-keep-aspect", scale=1)
                if family == "vit"
                else None
            )
        self.state = gr.State(SizeChoice())

    def controls(self) -> list[Any]:
        return [self.size] + ([self.aspect] if self.aspect is not None else [])

    def wire(self, column: ColumnView, classified: Any) -> None:
        """Hook into the column: refresh the choices after each classify; re-run on a new choice."""
        self.column = column
        classified.then(
            self.refresh,
            inputs=[column.state],
            outputs=[*self.controls(), self.state],
            api_name=f"sizes_{self.family}",
            api_visibility="private",
            **VIEW,
        )
        ins = [column.state, *self.controls(), column.opacity]
        self.resized = gr.on(
            [c.input for c in self.controls()],
            self.resize if self.aspect is not None else self.resize_square,
            inputs=ins,
            outputs=[
                column.label,
                column.overlay,
                column.caption,
                column.status,
                column.state,
                column.method,
                *column.controls,
                self.state,
            ],
            api_name=f"resize_{self.family}",
            show_progress="full",
            show_progress_on=[column.label, column.overlay],
            **MODEL,
        )

    @fresh
    def refresh(self, state: ClassifyState | None) -> dict:
        """After a classify: the sizes of the model now loaded, showing the size it ran at."""
        run = getattr(state, "run", None)
        if run is None:
            return {self.state: gr.skip()}  # no change ({} reads as a missing output)
        choice = run.choice  # the size it ran at: the column's choice, or the trained size where refused
        value = TRAINED if choice.size is None else str(choice.size)
        out: dict = {self.size: gr.Dropdown(choices=choices(run.model_as_loaded), value=value), self.state: choice}
        if self.aspect is not None:
            out[self.aspect] = choice.keep_aspect
        return out

    def resize_square(self, state: ClassifyState | None, size: Any, opacity: Any, request: gr.Request) -> dict:
        """`resize` for a column without the aspect switch (Swin)."""
        return self.resize(state, size, False, opacity, request)

    def resize(  # not `fresh`: it replaces its input run itself (`hold(replacing=...)`)
        self, state: ClassifyState | None, size: Any, keep_aspect: Any, opacity: Any, request: gr.Request
    ) -> dict:
        """Re-run the cached photo at another input size: top 5, map (on the new patch grid), caption with the note."""
        col = self.column
        state = col.s.cached(state)
        if state is None or state.run is None:
            return {col.status: status("Upload a photo first.", "info")}
        try:
            loaded = state.run.model_as_loaded
            choice = pipeline.parse_size(loaded, size, keep_aspect)
            run = pipeline.run_classifier(loaded, state.run.image, choice.size, choice.keep_aspect)
            opacity = checks.number(opacity, "Opacity", 0.0, 1.0)
            new = ClassifyState.of(run, state.name, state.method, state.options, opacity)
            if new.options.mask_outliers and run.family == "vit":
                run.with_block_outputs()
            shown = col.render(new)
        except Exception as exc:  # noqa: BLE001 - one line for the user
            return {col.status: status(message(exc), "warn")}
        if not col.s.runs.hold(session_of(request), self.family, new, replacing=state):
            return {col.state: gr.skip()}  # a newer photo arrived meanwhile: it stays (see `fresh`)
        return {
            **shown,
            **col.result_lines(new),  # after `shown`: its status line wins
            col.state: new,
            col.method: gr.Dropdown(choices=[(m.label, m.name) for m in run.methods()], value=new.method),
            self.state: choice,
            **col.control_updates(new, new.method),
        }
