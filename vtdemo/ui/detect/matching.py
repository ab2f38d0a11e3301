"""The set-matching panel of the Detect tab: how DETR is trained.

The visitor enters (or uploads) ground-truth boxes; the cached 100 predictions of the photo are matched one-to-one to
them with the Hungarian algorithm (`vtdemo.pipeline.match_output`, the same code as the CLI's `match`), and the
assignment is drawn on the photo with the loss terms. No model call: the predictions come from the Detect tab's run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from ... import pipeline, render
from ...errors import ExplainError, VtdemoError
from ...labels import coco
from ..common import VIEW, Services, message, not_yet, status
from ..components import Table, refusal, upload_name
from .tab import DetectState, DetectTab
from .views import clipped

GT_HEADERS = ["label", "x0", "y0", "x1", "y1"]
MATCH_HEADERS = ["object", "query", "predicted", "score", "cost", "class", "L1", "-GIoU"]


def ground_truth_rows(rows: Any) -> list[list[Any]]:
    """Dataframe rows (lists, or a pandas frame's values) -> [[label, x0, y0, x1, y1], ...], blank rows dropped."""
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # pandas DataFrame
        rows = rows.values.tolist()
    out = []
    for row in rows or []:
        cells = ["" if c is None or (isinstance(c, float) and np.isnan(c)) else c for c in list(row)[:5]]
        if all(str(c).strip() == "" for c in cells):
            continue
        out.append(cells)
    return out


def match_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            f"{p['object'] + 1} {p['label']}",
            p["query"],
            p["predicted_label"],
            round(p["predicted_score"], 3),
            round(p["cost"]["total"], 3),
            round(p["cost"]["class"], 3),
            round(p["cost"]["l1"], 3),
            round(p["cost"]["giou"], 3),
        ]
        for p in result["pairs"]
    ]


def match_text(result: dict[str, Any]) -> str:
    losses = result["losses"]
    n, q = len(result["pairs"]), result["num_queries"]
    return (
        f"**{n} object{'s' if n != 1 else ''} matched to {n} of {q} queries**; the other {q - n} are trained "
        f"to say *no object*.  \nLoss = classification {losses['classification']:.3f} "
        f"+ 5 × L1 {losses['l1']:.3f} + 2 × GIoU {losses['giou']:.3f} = **{losses['total']:.3f}**"
    )


def match_image(image: Image.Image, result: dict[str, Any], max_side: int = render.DISPLAY_MAX) -> Image.Image:
    """Ground-truth boxes (white, dashed) and the query matched to each (its class colour), joined by a line."""
    shown, scale = render.fit(image, max_side)
    out = shown.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 320))
    text_font = render.font(max(12, round(max(out.size) / 45)))
    for p in result["pairs"]:
        gx0, gy0, gx1, gy1 = (v * scale for v in p["box"])
        px0, py0, px1, py1 = (v * scale for v in p["predicted_box"])
        color = render.color_for(int(p["predicted_label_id"]))
        draw.rectangle((px0, py0, px1, py1), outline=color, width=width)
        render.dashed_rectangle(draw, (gx0, gy0, gx1, gy1), (255, 255, 255), width)
        draw.line(((gx0 + gx1) / 2, (gy0 + gy1) / 2, (px0 + px1) / 2, (py0 + py1) / 2), fill=color, width=width)
        draw.text(
            (gx0 + 4, gy0 + 3),
            f"{p['object'] + 1} {p['label']} -> query {p['query']}",
            fill=(255, 255, 255),
            stroke_width=2,
            stroke_fill=(0, 0, 0),
            font=text_font,
        )
    return out


class MatchingPanel:
    """The accordion under the Detect tab, reading the tab's cached run."""

    def __init__(self, services: Services, detect: DetectTab) -> None:
        self.s, self.detect = services, detect
        with gr.Accordion("Set matching: how DETR is trained", open=False):
            gr.Markdown(
                "In training, DETR's 100 predictions are matched one-to-one to the real objects with the "
                "Hungarian algorithm (cost = 1 × class + 5 × L1 box distance + 2 × GIoU); unmatched queries "
                "learn *no object*. Enter ground-truth boxes (class name or COCO id, then x0, y0, x1, y1 in "
                "pixels), or upload a JSON list `[[label, x0, y0, x1, y1], ...]` or COCO annotations.",
                elem_classes="vt-caption",
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    self.gt = Table(
                        headers=GT_HEADERS,
                        datatype=["str", "number", "number", "number", "number"],
                        row_count=3,
                        column_count=5,
                        interactive=True,
                        label="Ground-truth boxes",
                    )
                    with gr.Row():
                        fill = gr.Button("Use the detections", size="sm")
                        match = gr.Button("Match", variant="primary", size="sm")
                    gt_file = gr.File(label="…or upload JSON", file_types=[".json"], type="filepath")
                with gr.Column(scale=1):
                    self.image = gr.Image(
                        label="Ground truth (dashed) and the query matched to each",
                        interactive=False,
                        format="jpeg",
                        height=320,
                        elem_classes="vt-result",
                    )
                    self.text = gr.Markdown()
                    self.table = gr.Dataframe(headers=MATCH_HEADERS, interactive=False, label="Matching")
        state = detect.state
        fill.click(self.fill, inputs=[state], outputs=[self.gt], api_name="fill_ground_truth", **VIEW)
        gt_file.upload(self.load, inputs=[gt_file, state], outputs=[self.gt], api_name="load_ground_truth", **VIEW)
        match.click(
            self.match, inputs=[state, self.gt], outputs=[self.image, self.table, self.text], api_name="match", **VIEW
        )

    def fill(self, state: DetectState | None) -> Any:
        """The shown detections as a starting ground truth (edit it to see the matching change): their boxes as the
        detections table shows them, clipped to the photo (a ground-truth box lies inside it)."""
        state = self.s.cached(state)
        if state is None or not state.dets or state.run is None:
            return not_yet("Detect objects first (with at least one box shown).")
        size = state.run.image.size
        return [[d.label, *[round(v) for v in clipped(d.box, size)]] for d in state.dets[:5]]

    def load(self, path: str | None, state: DetectState | None) -> Any:
        """An uploaded JSON ([[label, x0, y0, x1, y1], ...] or COCO annotations) -> table rows."""

        if not path:
            return gr.skip()
        state = self.s.cached(state)
        labels = state.run.loaded.labels if state and state.run else coco()
        try:
            gt = pipeline.parse_ground_truth(Path(path).read_text(encoding="utf-8"), labels)
        except (OSError, UnicodeDecodeError):  # the exception's text names the server's folder: not shown
            raise refusal(f"cannot read {upload_name(path, 'the file')}: upload a UTF-8 JSON text file") from None
        except VtdemoError as exc:
            raise refusal(str(exc)) from None
        return [[labels[int(c)], *[round(float(v), 1) for v in box]] for c, box in zip(gt.labels, gt.boxes)]

    def match(self, state: DetectState | None, rows: Any) -> tuple:
        """Hungarian matching of the cached 100 predictions to the ground truth: (image, table, text)."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return gr.skip(), gr.skip(), not_yet("Detect objects first: the matching uses DETR's predictions.")
        try:
            gt_rows = ground_truth_rows(rows)
            if not gt_rows:
                raise ExplainError(
                    "add at least one ground-truth box (label, x0, y0, x1, y1), or press 'Use the detections'"
                )
            run = state.run
            if run.family != "detr":
                raise ExplainError(
                    f"set matching shows DETR's Hungarian matching (softmax class cost); {run.loaded.id} is "
                    f"{pipeline.FAMILIES[run.family].display}, whose matcher (focal class cost) is not drawn here: "
                    f"pick a DETR model, e.g. {pipeline.DEFAULT_DETR}"
                )
            result = pipeline.match_output(
                run.loaded,
                run.output.logits[0].detach().cpu(),
                run.output.boxes[0].detach().cpu(),
                run.image.size,
                gt_rows,
            )
        except Exception as exc:  # noqa: BLE001
            return None, [], status(message(exc), "warn")
        return match_image(state.run.image, result), match_rows(result), match_text(result)
