"""The Video tab: a clip in, DETR or RT-DETR on its frames, an annotated video that plays in the browser, the detections of
each processed frame as JSON, and any frame handed to the Detect tab for explanations (as the webcam's Freeze does).

The work is `pipeline.detect_video` (frame by frame, never the whole clip in memory). The tab's own event group runs
one clip at a time; each frame's model call holds a model slot, so other visitors' photos go between the frames.
The detector runs on every k-th frame, k chosen after timing the first frames so that the clip takes about
`config.video_budget_s`; the status says which and why.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from .. import checks, pipeline
from ..errors import VtdemoError
from .common import VIEW, Services, export_dir, message, model_call, safe_stem, status, write_json
from .components import Slider, refusal, safe_video, upload_name

#: The DETR input short side for video frames (the webcam's 4:3 canvas, here with the clip's own aspect ratio);
#: RT-DETR runs at its processor's 640x640 whatever this is.
VIDEO_SIZE = 480


class VideoTab:
    """Clip in, annotated clip and per-frame JSON out; the model is the Detect tab's."""

    def __init__(self, services: Services, detect: Any, tabs: gr.Tabs) -> None:
        self.s = services
        config = services.config
        self.limits = pipeline.VideoLimits(float(config.video_max_seconds), config.video_max_side)
        gr.Markdown(
            f"DETR or RT-DETR on a video clip (mp4, webm or mov; at most {config.video_max_seconds} s, "
            f"{self.limits.max_side}x{self.limits.max_short} px and {config.video_max_mb} MB). Frames go to DETR at "
            f"one fixed size (short side {VIDEO_SIZE} px, the clip's own aspect ratio), to RT-DETR as photos do "
            f"(squashed to 640×640); so that a clip takes about {config.video_budget_s} s here, the detector runs on "
            "every k-th frame and the frames between keep the last boxes: the status says which. The model is the "
            "one picked in the Detect tab. Pick any frame below and **Explain this frame** to see why the detector "
            "found what it found.",
            elem_classes="vt-caption",
            elem_id="video-why",
        )
        with gr.Row(equal_height=False):
            with gr.Column():
                self.clip = safe_video(
                    config.video_max_mb * 2**20, sources=["upload"], label="Video clip", elem_id="video-in"
                )
                self.threshold = Slider(
                    0.0,
                    1.0,
                    value=pipeline.DEFAULT_THRESHOLD,
                    step=0.01,
                    label="Confidence threshold",
                    elem_id="video-threshold",
                )
                run = gr.Button("Detect in the video", variant="primary", elem_id="video-run")
            with gr.Column():
                self.result = gr.Video(label="Annotated video (H.264)", interactive=False, elem_id="video-out")
                self.status = gr.Markdown(elem_classes="vt-count", elem_id="video-status")
                self.json = gr.File(label="Detections per frame (JSON)", interactive=False, elem_id="video-json")
        with gr.Row(equal_height=False):
            self.frame = Slider(0, 1, value=0, step=1, label="Frame", elem_id="video-frame", interactive=False)
            explain = gr.Button("Explain this frame in the Detect tab", elem_id="video-explain", interactive=False)
        self.state = services.state()
        run.click(
            self.run,
            inputs=[self.clip, self.threshold, detect.model, self.state],
            outputs=[self.result, self.status, self.json, self.frame, explain, self.state],
            api_name="detect_video",
            concurrency_id="video",
            concurrency_limit=1,
            show_progress="full",
            show_progress_on=[self.result],
        )
        explain.click(
            self.explain, inputs=[self.state, self.frame], outputs=[detect.image, tabs], api_name="video_frame", **VIEW
        )
        # the threshold is a view once a clip ran: the clip is drawn again from the kept detections (no model call);
        # before a run it is read by the next run
        self.threshold.input(
            self.redraw,
            inputs=[self.state, self.threshold],
            outputs=[self.result, self.status, self.json],
            api_name="redraw_video",
            **{**VIEW, "show_progress": "full", "show_progress_on": [self.result]},
        )

    def run(
        self,
        clip: str | None,
        threshold: float,
        model_id: str,
        previous: dict | None,
        request: gr.Request | None = None,
        progress: Any = gr.Progress(),
    ) -> tuple:
        """The picked detector on the clip; returns (annotated mp4, status, JSON file, frame slider, explain button, state)."""
        if not clip:
            raise refusal("Upload a video clip first.")
        name = upload_name(clip, "the video")
        try:
            with model_call():
                loaded = self.s.load(model_id, "detr", progress, getattr(request, "session_hash", None))
                folder = export_dir()
                out = folder / f"{safe_stem(name)}-detected.mp4"
                result = pipeline.detect_video(
                    clip,
                    loaded,
                    out,
                    float(threshold),
                    VIDEO_SIZE,
                    self.limits,
                    budget_s=float(self.s.config.video_budget_s),
                    progress=lambda fraction, text: progress(fraction, desc=text),
                    per_frame=lambda: pipeline.models_in_use(slot=True),
                    name=name,
                )
        except Exception as exc:  # noqa: BLE001 - one line for the visitor
            text = message(exc)
            return None, status(text, "warn"), None, gr.update(), gr.update(), previous
        data = {"clip": name, "model": loaded.id, "threshold": float(threshold), **result.to_dict()}
        json_path = write_json(folder / f"{safe_stem(name)}-detections.json", data)
        info = result.info
        line = (
            f"{name}: {result.frames} frames of {info.width}x{info.height} at {info.fps:.0f} frames/s · {result.detector} on "
            f"{pipeline.every(result.stride)} ({result.processed} frames) in {result.seconds:.0f} s · "
            f"{pipeline.describe(loaded)}"
        )
        state = {"clip": clip, "name": name, "frames": result.frames, "kept": result.kept, "line": line, "data": data}
        last = max(result.frames - 1, 0)
        return (
            str(out),
            status(line),
            str(json_path),
            gr.update(maximum=max(last, 1), value=0, interactive=last > 0),
            gr.update(interactive=True),
            state,
        )

    def redraw(self, state: dict | None, threshold: float, progress: Any = gr.Progress()) -> tuple:
        """A new threshold after a run: the annotated clip and its JSON again from the kept detections (the model is
        not run). Returns (annotated mp4, status, JSON file); before any run, nothing changes."""
        if not state or "kept" not in state:
            return gr.skip(), gr.skip(), gr.skip()
        name = state["name"]
        try:
            value = checks.number(threshold, "the threshold", 0.0, 1.0)
            started = time.perf_counter()
            folder = export_dir()  # a fresh folder: the browser never shows a stale copy
            out = folder / f"{safe_stem(name)}-detected.mp4"
            per_frame = pipeline.redraw_video(
                state["clip"],
                state["kept"],
                value,
                out,
                self.limits,
                progress=lambda fraction, text: progress(fraction, desc=text),
                name=name,
            )
        except Exception as exc:  # noqa: BLE001 - one line for the visitor
            return gr.skip(), status(message(exc), "warn"), gr.skip()
        data = {**state["data"], "threshold": value, "frames": per_frame}
        json_path = write_json(folder / f"{safe_stem(name)}-detections.json", data)
        line = (
            f"{state['line']} · threshold {value:.2f}: drawn again from the kept detections in "
            f"{time.perf_counter() - started:.1f} s (the model did not run again)"
        )
        return str(out), status(line), str(json_path)

    def explain(self, state: dict | None, frame: float) -> tuple:
        """Hand the chosen frame (full resolution) to the Detect tab and switch to it."""
        if not state:
            raise refusal("Run the detector on a clip first, then pick a frame.")
        index = int(min(max(frame, 0), state["frames"] - 1))
        try:
            rgb = pipeline.video_frame(state["clip"], index, self.limits, state["name"])
        except VtdemoError as exc:
            raise refusal(message(exc)) from None
        path = export_dir() / f"{safe_stem(state['name'])}-frame-{index}.png"
        Image.fromarray(np.ascontiguousarray(rgb)).save(path)
        return str(path), gr.Tabs(selected="detect")
