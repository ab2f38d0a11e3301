"""The ViT column's "Artefacts: high-norm tokens" panel: the register / high-norm artefact inspector.

Darcet, Oquab, Mairal & Bojanowski, ICLR 2024, "Vision Transformers Need Registers" (arXiv 2309.16588): large plain
ViTs recycle a few low-information background patches as global scratch space; those tokens get norms many times
the others and put bright dots in attention maps. The panel shows the L2 norm of every patch token after a chosen
block on the user's photo (`vtdemo.explain.artefacts.inspect`), rings the outliers its rule finds, counts them per
block, and a switch re-draws the column's map as the rollout with them masked out (`ExplainOptions.mask_outliers`,
`vtdemo.explain.artefacts.masked_rollout`).

A run of the fast engine keeps no block outputs (`tokens_wanted` in `vtdemo.explain.runs`): the panel then runs
one exact fp32 pass on the same input for them (`vtdemo.explain.runs.with_block_outputs`), a model call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from ... import checks, pipeline, render
from ...pipeline import ClassifierRun
from ..common import MODEL, VIEW, fresh, message, status
from ..components import Checkbox
from .views import ClassifyState, ColumnView

LAST = "last"
NO_TOKENS = (
    "This run kept no block outputs (the fast engine returns logits and attention only): press "
    "**Show token norms** for one exact pass that computes them."
)


def layer_index(value: Any, blocks: int) -> int:
    """A picker value ("last" or a block number 1..blocks) -> 0-based index; `InputError` otherwise."""
    if value in (None, "", LAST):
        return blocks - 1
    return checks.whole(value, "the block", 1, blocks) - 1


def layer_choices(blocks: int) -> list[tuple[str, str]]:
    return [("last block", LAST)] + [(f"block {i}", str(i)) for i in range(1, blocks + 1)]


# ------------------------------------------------------------------------------------------------- pure views


def norm_view(run: ClassifierRun, norms: np.ndarray, outliers: np.ndarray, max_side: int = 640) -> Image.Image:
    """One block's token norms [gh, gw] as square cells (nearest, not smoothed: one cell per token) over the part
    of the photo the model saw, with a white ring around each outlier cell. The colours run from the smallest to
    the largest ordinary (non-outlier) norm and the outliers get the top colour, so that the ordinary tokens keep
    their contrast next to outliers tens of times larger."""
    import cv2

    shown, scale = render.fit(run.image, max_side)
    x0, y0, x1, y1 = (v * scale for v in run.region)
    w, h = max(1, round(x1 - x0)), max(1, round(y1 - y0))
    ordinary = norms[~outliers] if (~outliers).any() else norms
    lo, hi = float(norms.min()), float(ordinary.max())
    unit = np.clip((norms - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(norms)
    cells = cv2.resize(unit.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)  # [h, w]
    colored = cv2.cvtColor(
        cv2.applyColorMap((cells * 255).round().astype(np.uint8), cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB
    )
    base = np.asarray(shown.convert("RGB"), dtype=np.float32) * 0.45  # outside the model's view: dimmed
    top, left = round(y0), round(x0)
    region = base[top : top + h, left : left + w]
    region[:] = colored[: region.shape[0], : region.shape[1]] * 0.8 + region / 0.45 * 0.2
    out = Image.fromarray(base.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    gh, gw = norms.shape
    cw, ch = w / gw, h / gh
    r = max(3.0, 0.75 * max(cw, ch))
    for row, col in np.argwhere(outliers):
        cx, cy = left + (col + 0.5) * cw, top + (row + 0.5) * ch
        draw.ellipse((cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1), outline=(0, 0, 0), width=4)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(255, 255, 255), width=2)
    return out


def report_text(report: dict[str, Any]) -> str:
    """What the panel found: the chosen block's numbers and outliers, the count per block, the prefix tokens."""
    norms, layer, threshold = report["norms"], report["layer"], report["threshold"]
    here = norms[layer]
    med = float(here.median())
    found = [tuple(int(v) for v in rc) for rc in report["outliers"].nonzero().tolist()]
    text = f"**Block {layer + 1} of {norms.shape[0]}**: median norm {med:.3g}, outlier threshold {threshold:.3g}; "
    if found:
        top = float(here.max())
        where = ", ".join(f"({r}, {c})" for r, c in found[:8]) + (" …" if len(found) > 8 else "")
        text += (
            f"**{len(found)} high-norm outlier token{'s' if len(found) != 1 else ''}** (largest {top:.3g}, "
            f"{top / max(med, 1e-12):.1f}x the median) at patch (row, col) {where}."
        )
    else:
        text += "**no high-norm outlier tokens**."
    per_block = [int(pipeline.find_outliers(norms[i])[0].sum()) for i in range(norms.shape[0])]
    text += " Outliers per block: " + " · ".join(f"{i + 1}: {n}" for i, n in enumerate(per_block)) + "."
    names, prefix = report["prefix_names"], report["prefix_norms"][layer]
    if names:
        text += " Prefix tokens here: " + " · ".join(f"{n} {float(v):.3g}" for n, v in zip(names, prefix)) + "."
    return text


# ------------------------------------------------------------------------------------------------- the panel


class Inspector:
    """The accordion in the ViT column, and its handlers (`wire` hooks it to the column)."""

    def __init__(self, family: str) -> None:
        self.family = family
        with gr.Accordion("Artefacts: high-norm tokens", open=False, elem_id=f"{family}-artefacts"):
            with gr.Row():
                self.layer = gr.Dropdown(
                    choices=layer_choices(1)[:1],
                    value=LAST,
                    allow_custom_value=True,  # checked against the run's depth by `layer_index`
                    label="Block",
                    elem_id=f"{family}-norm-block",
                    scale=2,
                )
                self.show = gr.Button("Show token norms", size="sm", scale=1, elem_id=f"{family}-norm-show")
            self.image = gr.Image(
                label="Token norms (ringed: high-norm outliers)",
                interactive=False,
                format="png",
                height=260,
                buttons=["download"],
                elem_id=f"{family}-norms",
                elem_classes="vt-result",
            )
            self.text = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-norms-text")
            self.mask = Checkbox(
                value=False,
                label="mask outlier tokens out of the rollout",
                info="the outliers of the last block are taken out of every layer's attention",
                elem_id=f"{family}-mask",
            )
            gr.Markdown(pipeline.ARTEFACTS_CAPTION, elem_classes="vt-caption")

    def wire(self, column: ColumnView, classified: Any) -> None:
        self.column = column
        panel = [self.layer, self.image, self.text, self.mask]
        for i, event in enumerate((classified, column.sizes.resized)):
            event.then(
                self.refresh,
                inputs=[column.state],
                outputs=panel,
                api_name=f"artefacts_refresh_{self.family}" + (f"_{i}" if i else ""),
                api_visibility="private",
                **VIEW,
            )
        gr.on(
            [self.show.click, self.layer.input],
            self.inspect,
            inputs=[column.state, self.layer],
            outputs=[self.image, self.text, self.layer],
            api_name=f"artefacts_{self.family}",
            **MODEL,
        )
        self.mask.input(
            self.masked,
            inputs=[column.state, self.mask, column.opacity],
            outputs=[column.overlay, column.caption, column.status, column.state, column.method, *column.controls],
            api_name=f"mask_outliers_{self.family}",
            **MODEL,
        )

    def _show(self, run: ClassifierRun, layer: Any) -> dict:
        blocks = len(run.tokens or run.attentions)
        index = layer_index(layer, blocks)
        report = run.artefacts(index)
        view = norm_view(run, report["norms"][index].numpy(), report["outliers"].numpy())
        value = LAST if layer in (None, "", LAST) else str(index + 1)
        return {
            self.image: view,
            self.text: report_text(report),
            self.layer: gr.Dropdown(choices=layer_choices(blocks), value=value),
        }

    @fresh
    def refresh(self, state: ClassifyState | None) -> dict:
        """After a (re-)run: the last block's norms when the run kept its block outputs (no model call)."""
        run = getattr(state, "run", None)
        if run is None or run.family != "vit":
            return {self.image: None, self.text: "", self.mask: False}
        mask = bool(state.options.mask_outliers) if state is not None else False
        if run.tokens is None:
            return {self.image: None, self.text: status(NO_TOKENS, "info"), self.mask: mask}
        try:
            return {**self._show(run, LAST), self.mask: mask}
        except Exception as exc:  # noqa: BLE001
            return {self.image: None, self.text: status(message(exc), "warn"), self.mask: mask}

    @fresh
    def inspect(self, state: ClassifyState | None, layer: Any) -> dict:
        """The chosen block's token norms (one exact pass first if the run kept no block outputs)."""
        state = self.column.s.cached(state)
        if state is None or state.run is None:
            return {self.image: None, self.text: status("Upload a photo first.", "info")}
        try:
            return self._show(state.run.with_block_outputs(), layer)
        except Exception as exc:  # noqa: BLE001 - one line for the user
            return {self.image: None, self.text: status(message(exc), "warn")}

    @fresh
    def masked(self, state: ClassifyState | None, on: bool, opacity: Any) -> dict:
        """The switch: the column's map as the rollout with the outlier tokens masked out (or not)."""
        col = self.column
        state = col.s.cached(state)
        if state is None or state.run is None:
            return {col.status: status("Upload a photo first.", "info")}
        try:
            opacity = checks.number(opacity, "Opacity", 0.0, 1.0)
            if on:
                state.run.with_block_outputs()
        except Exception as exc:  # noqa: BLE001 - one line for the user
            return {col.status: status(message(exc), "warn")}
        state.options = dataclasses.replace(state.options, mask_outliers=bool(on))
        if on and state.method != "rollout":
            state.method = "rollout"  # masking applies to the attention rollout
        state.opacity = float(opacity)
        return {**col.redraw(state), col.method: gr.Dropdown(value=state.method)}
