"""The Masks view of the Detect tab: DETR's panoptic segmentation of the photo, and what each segment's query looked at.

DETR extends to segmentation with a small mask head on the same queries (Carion et al. 2020, arXiv 2005.12872,
section 4.4; `vtdemo.models.detr_panoptic`): each query that predicts an object also predicts its mask, and every
pixel goes to the query whose mask is strongest there. A panoptic checkpoint's run keeps its mask logits
(`vtdemo.explain.runs.PanopticMasks`); the segments are the post-processing of `vtdemo.postprocess_panoptic` at the
tab's confidence threshold, recomputed from that cache when the threshold changes (no model call). The legend sorts
the segments into "things" (countable objects, numbered per class) and "stuff" (amorphous regions: sky, grass,
road...), the COCO panoptic split (Kirillov et al., "Panoptic Segmentation", CVPR 2019). A click on a segment (or
a pick in the segment list) shows its query's decoder cross-attention in the tab's attention view, through the
tab's `AttentionView.detection_picked`, so the relevance button and the head / layer pickers work for it as for a box.
A plain DETR has no mask head: the view says so in one line.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ... import render
from ...pipeline import PANOPTIC_DETR, DetrRun, PanopticResult, Segment
from ..common import VIEW, Services, click_point, fresh, message, status
from ..components import Click
from .views import DetectState

NEEDS_PANOPTIC = (
    f"Masks need a panoptic model: pick {PANOPTIC_DETR} in the model picker on the left (it is in its list). "
    "This model predicts boxes only."
)
SPLIT_NOTE = (
    "Things vs stuff: the COCO panoptic split (category ids 1-90 are things, 92-200 stuff). Only the confidence "
    "threshold applies to masks (the class filter, max detections and NMS are for boxes)."
)


def segment_names(segments: list[Segment], labels: Any) -> dict[int, str]:
    """Segment id -> its legend name: things numbered per class in segment order ("person 1", "person 2"),
    stuff by its class alone ("sky-other-merged")."""
    seen: dict[int, int] = {}
    names = {}
    for seg in segments:
        name = labels[seg.label_id] if 0 <= seg.label_id < len(labels) else f"class {seg.label_id}"
        if seg.isthing:
            seen[seg.label_id] = seen.get(seg.label_id, 0) + 1
            name = f"{name} {seen[seg.label_id]}"
        names[seg.id] = name
    return names


def legend_rows(result: PanopticResult, labels: Any) -> list[dict[str, Any]]:
    """One record per segment: id, name, kind ("thing" / "stuff"), score, area % of the photo, queries, colour."""
    total = max(int(result.segmentation.numel()), 1)
    names = segment_names(result.segments, labels)
    return [
        {
            "id": seg.id,
            "name": names[seg.id],
            "kind": "thing" if seg.isthing else "stuff",
            "score": seg.score,
            "area": 100.0 * seg.area / total,
            "queries": list(seg.queries),
            "color": render.color_for(seg.label_id),
        }
        for seg in result.segments
    ]


def legend_html(rows: list[dict[str, Any]], threshold: float) -> str:
    """The legend: a "Things" and a "Stuff" list, each entry a colour swatch, name, score and area %."""
    if not rows:
        return (
            f"<p><b>No segment at confidence ≥ {threshold:.2f}</b>: lower the threshold to see what the mask head "
            "found.</p>"
        )
    covered = sum(r["area"] for r in rows)
    parts = [f"<p><b>{len(rows)} segments</b> cover {covered:.1f}% of the photo (confidence &gt; {threshold:.2f})</p>"]
    for kind, title in (("thing", "Things (countable objects)"), ("stuff", "Stuff (amorphous regions)")):
        mine = [r for r in rows if r["kind"] == kind]
        items = "".join(
            "<li style='list-style:none;margin:2px 0'>"
            f"<span style='display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:middle;"
            f"background:#{r['color'][0]:02x}{r['color'][1]:02x}{r['color'][2]:02x}'></span>"
            f"{html.escape(r['name'])} · {r['score']:.2f} · {r['area']:.1f}%"
            f"{' · queries ' + ', '.join(map(str, r['queries'])) if len(r['queries']) > 1 else ''}</li>"
            for r in mine
        )
        parts.append(
            f"<p style='margin:6px 0 0'><b>{title}</b>: {len(mine)}</p>"
            f"<ul class='vt-legend-{kind}' style='margin:0;padding:0'>{items or '<li style=list-style:none>none</li>'}"
            "</ul>"
        )
    parts.append(f"<p style='font-size:0.85em;opacity:0.8'>{html.escape(SPLIT_NOTE)}</p>")
    return "".join(parts)


def masks_image(run: DetrRun, result: PanopticResult, highlight: int | None = None) -> Image.Image:
    """The display-sized photo with each segment in its class colour, its name written inside it."""
    shown, scale = render.fit(run.image)
    seg = result.segmentation.numpy()  # [H, W] at the original size
    rows = np.minimum((np.arange(shown.height) / scale).astype(int), seg.shape[0] - 1)
    cols = np.minimum((np.arange(shown.width) / scale).astype(int), seg.shape[1] - 1)
    small = seg[rows[:, None], cols[None, :]]  # [h, w] nearest
    names = segment_names(result.segments, run.loaded.labels)
    colors = {s.id: render.color_for(s.label_id) for s in result.segments}
    return render.draw_segments(shown, small, colors, names, highlight=highlight)


def segment_at(state: DetectState, point: tuple[float, float]) -> Segment | None:
    """The segment under a click (display pixels of the Masks image), or None."""
    result: PanopticResult | None = state.panoptic
    if result is None or state.canvas is None:
        return None
    h, w = result.segmentation.shape
    x, y = (int(v / state.canvas.scale) for v in point)
    if not (0 <= x < w and 0 <= y < h):
        return None
    sid = int(result.segmentation[y, x])
    return next((s for s in result.segments if s.id == sid), None)


class MasksPanel:
    """The Masks tab beside the box view; reads (and writes the chosen query into) the Detect tab's state."""

    def __init__(self, services: Services, detect: Any) -> None:
        self.s, self.detect = services, detect
        self.image = gr.Image(
            label="Panoptic segments (click one for its query's attention)",
            interactive=False,
            format="jpeg",
            elem_id="detect-masks",
        )
        with gr.Row(equal_height=False):
            self.legend = gr.HTML(NEEDS_PANOPTIC, elem_id="detect-masks-legend", scale=3)
            self.pick = gr.Dropdown(
                choices=[],
                label="Segment",
                info="Decoder cross-attention of its query (shown below)",
                scale=1,
                min_width=200,
                elem_id="detect-masks-pick",
            )

    def wire(self, detected: Any) -> None:
        """Events; `detected` is the Detect tab's /detect event (the masks follow each new photo)."""
        d = self.detect
        outputs = [self.image, self.legend, self.pick, d.state]
        detected.then(
            self.render,
            inputs=[d.state, d.threshold],
            outputs=outputs,
            api_name="masks_detect",
            api_visibility="private",
            **VIEW,
        )
        # once per threshold change (at the mouse's release, not at every step of a drag: the boxes follow the drag)
        # and whenever the view is opened
        gr.on(
            [d.threshold.release, d.masks_tab.select],
            self.render,
            inputs=[d.state, d.threshold],
            outputs=outputs,
            api_name="masks",
            **VIEW,
        )
        shown = [d.attn, d.caption, d.state, self.image, self.pick, d.pick]
        self.image.select(
            self.segment_clicked,
            inputs=[d.state, *d.view],
            outputs=shown,
            api_name="segment_click",
            api_visibility="undocumented",
            **VIEW,
        )
        self.pick.input(
            self.segment_picked, inputs=[d.state, self.pick, *d.view], outputs=shown, api_name="segment_map", **VIEW
        )

    # --------------------------------------------------------------------------------------------- handlers

    @fresh
    def render(self, state: DetectState | None, threshold: float) -> dict:
        """The segments at this threshold, from the run's cached mask logits (no model call)."""
        state = self.s.cached(state)
        empty = {self.image: None, self.pick: gr.Dropdown(choices=[], value=None)}
        if state is None or state.run is None:
            return {**empty, self.legend: ""}
        if state.run.masks is None:
            state.panoptic = None
            return {**empty, self.legend: NEEDS_PANOPTIC, self.detect.state: state}
        try:
            result = state.run.masks.segments(state.run.image.size, float(threshold))
            state.panoptic = result
            rows = legend_rows(result, state.run.loaded.labels)
            highlight = self._highlight(state)
            image = masks_image(state.run, result, highlight)
        except Exception as exc:  # noqa: BLE001
            return {**empty, self.legend: status(message(exc), "warn"), self.detect.state: state}
        picks = [(f"{r['name']} ({r['kind']})", r["queries"][0]) for r in rows]
        value = state.segment if any(q == state.segment for _, q in picks) else None
        return {
            self.image: image,
            self.legend: legend_html(rows, float(threshold)),
            self.pick: gr.Dropdown(choices=picks, value=value),
            self.detect.state: state,
        }

    @staticmethod
    def _highlight(state: DetectState) -> int | None:
        """The id of the segment whose query was clicked (it changes with the threshold), if it is still there."""
        result: PanopticResult | None = state.panoptic
        if result is None or state.segment is None:
            return None
        return next((s.id for s in result.segments if state.segment in s.queries), None)

    def _show(self, state: DetectState, seg: Segment, view: tuple) -> dict:
        """A segment chosen: its (first) query's cross-attention through the tab's `AttentionView.detection_picked`."""
        assert state.run is not None and state.panoptic is not None
        query = seg.queries[0]
        state.segment = query
        out = self.detect.attention.detection_picked(state, query, *view)
        name = segment_names(state.panoptic.segments, state.run.loaded.labels)[seg.id]
        kind = "thing" if seg.isthing else f"stuff, fused from queries {', '.join(map(str, seg.queries))}"
        if len(seg.queries) == 1:
            kind = "thing" if seg.isthing else "stuff"
        out[self.detect.caption] = f"Segment **{html.escape(name)}** ({kind}). " + str(out.get(self.detect.caption, ""))
        shown = any(det.query == query for det in state.dets)  # the detection picker shows it, or nothing
        return {
            **out,
            self.image: masks_image(state.run, state.panoptic, seg.id),
            self.pick: gr.Dropdown(value=query),
            self.detect.pick: gr.Dropdown(value=query if shown else None),
        }

    @fresh
    def segment_clicked(
        self,
        state: DetectState | None,
        head: str | None,
        layer: str | None,
        direction: str | None,
        opacity: float,
        evt: Click,
    ) -> dict:
        """A click on the Masks image -> the segment there -> its query's attention."""
        state = self.s.cached(state)
        point = click_point(evt)
        if state is None or state.run is None or point is None:  # an API call without click data, or no photo yet
            return {
                self.detect.caption: status("Click a segment on the Masks image (or pick one from the list).", "info")
            }
        seg = segment_at(state, point)
        if seg is None:
            return {self.detect.caption: status("No segment there: click a coloured region.", "info")}
        return self._show(state, seg, (head, layer, direction, opacity))

    @fresh
    def segment_picked(
        self,
        state: DetectState | None,
        query: int | None,
        head: str | None,
        layer: str | None,
        direction: str | None,
        opacity: float,
    ) -> dict:
        """The segment list (also the API way: the value is the segment's query index, as listed)."""
        state = self.s.cached(state)
        if state is None or state.run is None:
            return {self.detect.attn: None, self.detect.caption: "Detect objects first.", self.detect.state: None}
        result: PanopticResult | None = state.panoptic
        seg = (
            None
            if result is None or query in (None, "")
            else next(
                (s for s in result.segments if int(query) in s.queries),
                None,  # type: ignore[arg-type]
            )
        )
        if seg is None:
            text = NEEDS_PANOPTIC if state.run.masks is None else "Pick a segment from the list (or click one)."
            return {self.detect.caption: status(text, "info"), self.detect.state: state}
        return self._show(state, seg, (head, layer, direction, opacity))
