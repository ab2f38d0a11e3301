"""The Classify tab: one photo, its examples and export, and a ViT/DeiT column and a Swin column side by side
(`vtdemo.ui.classify.column`), each running its own model on the same photo."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ... import pipeline, render
from ..common import MODEL, Services, export_dir, not_yet, photo_input, safe_stem, write_json, write_npy
from .column import ClassifierColumn
from .views import ClassifyState

# ------------------------------------------------------------------------------------------------- the tab


def crop_note(vit_keeps_aspect: Any) -> str:
    """What the maps are drawn over: the center crop each model saw, or for ViT the whole photo."""
    if vit_keeps_aspect is True:
        return (
            "ViT sees the whole photo at its aspect ratio; Swin's map is drawn over its center crop (the dimmed "
            "border was cut off)."
        )
    return "Maps are drawn over the part of the photo the model saw (its center crop); the dimmed border was cut off."


class ClassifyTab:
    """The photo, its examples and export, and the two columns."""

    def __init__(self, services: Services, examples: list[str], image_limits: dict[str, Any]) -> None:
        self.s = services
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260, elem_id="classify-photo-col"):
                self.image = photo_input(
                    "classify-photo", 300, examples, image_limits, "Examples (CC0 / public domain)"
                )
                note = gr.Markdown(crop_note(False), elem_classes="vt-caption", elem_id="crop-note")
                with gr.Accordion("Export", open=False):
                    export = gr.Button("Export results", size="sm")
                    self.files = gr.File(
                        label="Downloads: results JSON, overlays (PNG), raw maps (.npy)",
                        file_count="multiple",
                        interactive=False,
                        elem_id="classify-files",
                        elem_classes="vt-result",
                    )
            self.vit = ClassifierColumn(services, "vit", self.image)
            self.swin = ClassifierColumn(services, "swin", self.image)
        if self.vit.sizes.aspect is not None:  # the note follows the ViT column's "keep the photo's aspect ratio"
            self.vit.sizes.aspect.input(
                crop_note, inputs=self.vit.sizes.aspect, outputs=note, api_name="crop_note", api_visibility="private"
            )
        export.click(
            self.export,
            inputs=[self.vit.state, self.swin.state],
            outputs=self.files,
            api_name="export_classify",
            **MODEL,
        )

    def export(self, vit: ClassifyState | None, swin: ClassifyState | None) -> Any:
        """Results JSON (the CLI's `classify --json` schema, one object per model), overlays (PNG, original size)
        and raw maps (.npy, the model's own grid)."""
        states = [s for s in (self.s.cached(vit), self.s.cached(swin)) if s is not None and s.run is not None]
        if not states:
            return not_yet("Nothing to export yet: classify a photo first.")
        folder = export_dir()
        stem = safe_stem(states[0].name)
        files = [
            write_json(
                folder / f"{stem}.classify.json",
                [
                    pipeline.ClassifyResult(
                        s.name,
                        s.run.loaded.id,
                        s.predictions,
                        pipeline.runtime_info(s.run.loaded, s.method, s.run.input_size),
                    ).to_dict()
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
