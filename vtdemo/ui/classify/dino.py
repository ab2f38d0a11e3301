"""What a self-supervised ViT sees, in the ViT column: DINO's heads and masks, DINOv2's patch features as colours
(on this photo, or on two photos with one PCA), and the same model with and without registers
(`vtdemo.explain.dino`; Caron et al. 2021, Oquab et al. 2024, Darcet et al. 2024).

Each view is one button; the result is kept in the column's state for the photo. The views apply to any ViT with a
CLS token; they are what DINO and DINOv2 made famous, and look like their papers' figures only on those models.
"""

from __future__ import annotations

import hashlib
from typing import Any

import gradio as gr

from ... import pipeline
from ...errors import VtdemoError
from ..common import MODEL, Services, fresh, image_limits, runs_models
from ..components import safe_image, upload_name
from .panel_views import feature_strip, heads_grid, registers_pair
from .views import ClassifyState, ColumnView, kept_view

HEADS_CAPTION = (
    "For each attention head: where the CLS token looks in the last layer, and next to it DINO's mask, the "
    "patches that hold {kept:.0%} of that head's attention. Trained without labels, DINO's heads outline objects and "
    "their parts (Caron et al. 2021); a supervised ViT's heads are usually less tidy."
)
FEATURES_CAPTION = (
    "Each patch's features (the last layer's tokens) coloured by their first three principal components, after the "
    "background is removed by a threshold on the first component (DINOv2's recipe, Oquab et al. 2024). Similar "
    "colours = parts the model represents alike.{two}"
)
TWO_PHOTOS = " One PCA is fitted on both photos, so matching parts (a head, a wheel) get the same colours."


def _crop(run: pipeline.ClassifierRun) -> Any:
    return run.image.crop(tuple(round(v) for v in run.region))


def _same_size(run: pipeline.ClassifierRun) -> int | None:
    """The input size to run another photo or model at, so that it matches `run` (None: the trained size)."""
    return None if run.input_size == run.trained_size else int(min(run.x.shape[-2:]))


class DinoPanel:
    """The accordion with the three views (ViT columns only)."""

    def __init__(self, family: str, services: Services) -> None:
        self.family = family
        with gr.Accordion("What a self-supervised ViT sees (DINO, DINOv2, registers)", open=False):
            gr.Markdown(
                "Best with a DINOv2 model in the picker above: `facebook/dinov2-small-imagenet1k-1-layer`, or "
                "`facebook/dinov2-with-registers-small-imagenet1k-1-layer` with registers. For the patch features, "
                "a second photo (optional) gets one PCA fitted on both, so that matching parts share colours.",
                elem_classes="vt-caption",
            )
            with gr.Row():
                self.heads_button = gr.Button("Heads and DINO masks", size="sm")
                self.features_button = gr.Button("Patch features as colours", size="sm")
                self.registers_button = gr.Button("With and without registers", size="sm")
            self.second = safe_image(  # the app's one door for images: uploads (and examples) only
                label="Second photo (optional)",  # one short line: a longer label covers the drop zone
                sources=["upload", "clipboard"],
                height=160,
                elem_id=f"{family}-dino-second",
                **image_limits(services.config),
            )
            self.image = gr.Image(
                label="Self-supervised views",
                interactive=False,
                format="png",
                show_label=False,
                buttons=["download", "fullscreen"],
                elem_id=f"{family}-dino",
                elem_classes="vt-result",
            )
            self.text = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-dino-text")
        self.views = [self.image, self.text]  # what a new photo clears

    def wire(self, column: ColumnView) -> None:
        self.column = column
        outputs = [self.image, self.text, column.state]
        self.heads_button.click(self.heads, [column.state], outputs, api_name=f"dino_heads_{self.family}", **MODEL)
        self.features_button.click(
            self.features, [column.state, self.second], outputs, api_name=f"dino_features_{self.family}", **MODEL
        )
        self.registers_button.click(
            self.registers, [column.state], outputs, api_name=f"dino_registers_{self.family}", **MODEL
        )

    @fresh
    def heads(self, state: ClassifyState | None) -> dict:
        def make(run: pipeline.ClassifierRun) -> tuple[Any, str]:
            maps, masks = run.heads()
            return heads_grid(_crop(run), maps, masks), HEADS_CAPTION.format(kept=pipeline.MASS_KEPT)

        return kept_view(self.column, state, "dino-heads", make, self.image, self.text)

    @fresh
    def features(self, state: ClassifyState | None, second: str | bytes | None) -> dict:
        """One photo's feature colours, or two photos' with one PCA; only the latest pair is kept for the photo."""
        key = "dino-features" + (f"-{hashlib.sha1(str(second).encode()).hexdigest()}" if second else "")
        cached = self.column.s.cached(state)
        for old in [k for k in (cached.panels if cached is not None else {}) if k.startswith("dino-features-")]:
            if old != key:
                del cached.panels[old]

        def make(run: pipeline.ClassifierRun) -> tuple[Any, str]:
            runs = [run]
            if second:
                image = pipeline.load_image(second, upload_name(second))
                runs.append(pipeline.run_classifier(run.loaded, image, _same_size(run)))
            colours = pipeline.feature_colours(runs)
            return feature_strip([_crop(r) for r in runs], colours), FEATURES_CAPTION.format(
                two=TWO_PHOTOS if second else ""
            )

        return kept_view(self.column, state, key, make, self.image, self.text)

    @fresh
    @runs_models  # the partner model stays loaded while this view uses it
    def registers(self, state: ClassifyState | None) -> dict:
        def make(run: pipeline.ClassifierRun) -> tuple[Any, str]:
            partner_id = pipeline.registers_partner(run.loaded.id)
            if partner_id is None:
                raise VtdemoError(
                    f"{run.loaded.id} is not a DINOv2 model: this view runs one with and without registers "
                    "(pick e.g. facebook/dinov2-small-imagenet1k-1-layer)"
                )
            partner = self.column.s.load(partner_id, self.family)
            other = pipeline.run_classifier(partner, run.image, _same_size(run))
            pair = sorted([run, other], key=lambda r: r.loaded.config.reg_tokens)  # without, then with registers
            maps = [r.heads()[0].mean(0) for r in pair]
            counts = [int(r.artefacts()["outliers"].sum()) for r in pair]
            titles = [
                f"{'with' if r.loaded.config.reg_tokens else 'no'} registers: {n} outliers"
                for r, n in zip(pair, counts, strict=True)
            ]
            text = (
                f"The last layer's CLS attention (mean of heads) of {pair[0].loaded.id} and {pair[1].loaded.id} on "
                f"this photo. Without registers, large ViTs reuse a few background patches as scratch space: "
                f"high-norm tokens that grab attention (bright isolated squares); registers give them that room "
                f"(Darcet et al. 2024). High-norm outlier tokens found: {counts[0]} without, {counts[1]} with "
                "registers (the artefact inspector below shows their norms)."
            )
            return registers_pair(_crop(run), maps, titles), text

        return kept_view(self.column, state, "dino-registers", make, self.image, self.text)
