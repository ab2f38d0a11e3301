"""The Webcam tab: live DETR or RT-DETR on the browser camera, one frame in, one annotated frame out, with honest
speed figures.

Gradio's `.stream` keeps only the newest frame that arrives while one is being processed (the browser posts each
frame to the running event, which overwrites the previous one), so frames are dropped, never queued: the picture is
at most one processing time behind the camera. `LiveSession` measures what that gives: processed frames per second
over the last few seconds, and the time spent on the last frame. Frames come through the same `SafeImage` door as
photos (the pixel limit applies before decoding); DETR sees them at a reduced input size in a fixed canvas
(`pipeline.canvas`), RT-DETR at its processor's fixed 640x640, as in the Detect tab (`pipeline.live_input_size`).

The model is the Detect tab's picker; left at its first entry (or empty), the webcam runs its default: whichever of
the configured DETR and RT-DETR is faster on this machine, measured on the first frame that needs it
(`webcam_default.WebcamDefault`) and said under the picture. The live map (the map switch) is, for DETR, the most
confident detection's decoder cross-attention; for RT-DETR, which has no full attention map, that detection's
sampling points splatted on the stride-8 grid, the Detect tab's "where the detection looked" (free: RT-DETR returns
its sampling points with every call).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from .. import pipeline, render
from .common import VIEW, Services, export_dir, message, model_call, session_of, status
from .components import Checkbox, Slider, refusal, safe_image
from .config import LIVE_SIZES, live_default
from .detect.tab import DetectTab, draw_detections
from .webcam_default import Verdict, WebcamDefault

WINDOW_S = 3.0  # FPS is measured over this many seconds
FRAME_MAX = 640  # frames are shrunk to this long side first (the fake camera of the browser tests sends 1920x1440)
MAP_OPACITY = 0.45  # the live map over the frame


@dataclass
class LiveSession:
    """Per-browser-session webcam state: recent completion times, the last frame (for "freeze") and its size."""

    done: deque = field(default_factory=lambda: deque(maxlen=64))
    frames: int = 0
    latency_ms: float = 0.0
    last_frame: np.ndarray | None = None
    input_size: tuple[int, int] | None = None  # (width, height) the model saw: DETR's canvas, RT-DETR's 640x640
    detector: str = "DETR"  # "DETR" or "RT-DETR": which kind ran the last frame
    default: str = ""  # the default's verdict (`Verdict.text`) when the webcam runs it, else ""
    engine: str = ""  # what ran DETR, e.g. "OpenVINO 2026.4.1 f32 on cpu (fast)"
    detections: int = 0
    released: bool = False

    def release(self) -> None:
        """The session ended (or the memory budget needs the room): drop the last frame."""
        self.last_frame, self.released = None, True

    def record(self, started: float, finished: float) -> None:
        self.done.append(finished)
        self.frames += 1
        self.latency_ms = (finished - started) * 1000

    def fps(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        recent = [t for t in self.done if now - t <= WINDOW_S]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def text(self) -> str:
        size = f"{self.input_size[0]}×{self.input_size[1]}" if self.input_size else "?"
        boxes = f"{self.detections} box{'es' if self.detections != 1 else ''}"
        return (
            f"**{self.fps():.1f} frames/s processed** · {self.latency_ms:.0f} ms per frame · "
            f"{self.detector} input {size} ({'fixed' if self.detector == 'DETR' else 'fixed, squashed'}) · {boxes} · "
            f"frame {self.frames} · {self.engine}" + (f"  \n{self.default}" if self.default else "")
        )


def shrink_frame(frame: np.ndarray, max_side: int = FRAME_MAX) -> np.ndarray:
    """A webcam frame [H, W, 3] uint8 scaled so that its long side is at most `max_side`."""
    import cv2

    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return frame
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def process_frame(
    session: LiveSession,
    loaded: pipeline.LoadedModel,
    frame: np.ndarray,
    threshold: float,
    short_side: int,
    max_side: int = FRAME_MAX,
    show_map: bool = False,
) -> np.ndarray:
    """Detect on one frame (RGB uint8 [H, W, 3]) at the fixed input (DETR: `pipeline.canvas(short_side)`; RT-DETR:
    its processor's size) and return it with boxes drawn, at most `max_side` px wide/high; show_map: under the
    boxes, where the most confident detection looked (DETR: its decoder cross-attention; RT-DETR: its sampling
    points; from the same call)."""
    started = time.perf_counter()
    small = shrink_frame(np.ascontiguousarray(frame[..., :3]), max_side)
    shown = Image.fromarray(small)
    if show_map:
        dets, attention = pipeline.detect_frame_map(loaded, small, short_side, threshold)
        if attention is not None:
            shown = render.overlay(shown, attention.numpy(), opacity=MAP_OPACITY)
    else:
        dets = pipeline.detect_frame(loaded, small, short_side, threshold)
    drawn = np.asarray(draw_detections(shown, dets))
    session.last_frame = frame
    session.detections = len(dets)
    session.input_size = pipeline.live_input_size(loaded, short_side)
    session.detector = "RT-DETR" if loaded.family == "rtdetr" else "DETR"
    session.engine = pipeline.describe(loaded)
    session.record(started, time.perf_counter())
    return drawn


class WebcamTab:
    """Camera in, annotated frames out; the model is the Detect tab's; Freeze hands the frame to that tab."""

    def __init__(self, services: Services, detect: DetectTab, tabs: gr.Tabs, image_limits: dict[str, Any]) -> None:
        self.s = services
        size = services.config.live_size
        h, w = pipeline.canvas(size)
        default, _ = live_default(services.config.precision)  # the measurements behind it: docs/performance.md
        why = (
            " Why this size: it is the largest that keeps the picture close to live (about 5 frames/s) on this "
            "server's processor."
            if size == default
            else " (Set by whoever runs the app.)"
        )
        config = services.config
        detr, rtdetr = config.detr_model, config.rtdetr_model
        self.default = WebcamDefault(
            [detr, rtdetr], lambda m: pipeline.is_available(m, services.device, config.precision)
        )
        gr.Markdown(
            f"Live DETR or RT-DETR on your camera. Frames go to DETR at one fixed size, **{w}×{h} px** (short side "
            f"{size}; photos use 800), so the engine sees one input shape.{why} Change it below. RT-DETR sees them "
            "as it sees photos, squashed to its processor's fixed size (640×640 for the PekingU models). A frame "
            "that arrives while another is being processed is dropped, so the picture never falls behind. "
            "**Freeze** sends the current frame to the Detect "
            "tab, at full resolution, for explanations. The model is the one picked in the Detect tab; left at "
            f"its first entry, the webcam runs whichever of {detr} and {rtdetr} is faster on this machine, timed on "
            "the first frame that needs it (only models already on this server are compared: nothing is downloaded "
            "to measure) and said under the picture.",
            elem_classes="vt-caption",
            elem_id="webcam-why",
        )
        with gr.Row(equal_height=False):
            cam = safe_image(
                sources=["webcam"],
                streaming=True,
                label="Camera",
                elem_id="webcam-in",
                webcam_options=gr.WebcamOptions(
                    mirror=False, constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}}
                ),
                **image_limits,
            )
            out = gr.Image(
                label="Live detections", streaming=True, interactive=False, format="jpeg", elem_id="webcam-out"
            )
        with gr.Row(equal_height=False):
            threshold = Slider(
                0.0,
                1.0,
                value=pipeline.DEFAULT_THRESHOLD,
                step=0.01,
                label="Confidence threshold",
                elem_id="webcam-threshold",
            )
            live_size = gr.Dropdown(
                choices=sorted({*LIVE_SIZES, size}),
                value=size,
                label="DETR input short side (px; RT-DETR keeps its processor's size)",
            )
            show_map = Checkbox(
                value=False,
                label="Show where the best detection looks (DETR: its decoder attention; RT-DETR: its sampling "
                "points; on every frame)",
                elem_id="webcam-map",
            )
            freeze = gr.Button("Freeze: explain this frame", variant="secondary")
        stats = gr.Markdown(
            "Click the camera, allow access, then press **Record**.", elem_classes="vt-count", elem_id="webcam-stats"
        )
        session = services.state()
        cam.stream(
            self.live,
            inputs=[cam, threshold, live_size, detect.model, show_map, session],
            outputs=[out, stats, session],
            stream_every=0.1,  # a frame every 100 ms at most: 10 frames/s possible, ~0.5 MB/s of uplink
            time_limit=config.webcam_limit,
            concurrency_limit=config.webcam_sessions,
            concurrency_id="webcam",
            api_name="webcam",
            show_progress="hidden",
        )
        freeze.click(self.freeze, inputs=[session], outputs=[detect.image, tabs], api_name="freeze", **VIEW)

    def live(
        self,
        frame: str | bytes | None,
        threshold: float,
        live_size: Any,
        model_id: str,
        show_map: bool,
        session: LiveSession | None,
        request: gr.Request | None = None,
    ) -> tuple:
        """One webcam frame -> the same frame with boxes, and the speed line. Returns (frame, stats, session)."""
        if session is None or session.released:
            session = LiveSession()
        if frame is None:
            return gr.skip(), gr.skip(), session
        try:
            pixels = np.asarray(
                pipeline.load_image(frame, "the camera frame")
            )  # the pixel limit applies before decoding, as for photos
            size = int(live_size or self.s.config.live_size)
            who = getattr(request, "session_hash", None)
            with model_call():  # never evicted under this frame
                verdict = self.default_choice(model_id, pixels, size, who)
                loaded = self.s.load(verdict.chosen if verdict else model_id, "detr", session=who)
                drawn = process_frame(session, loaded, pixels, float(threshold), size, show_map=bool(show_map))
            session.default = verdict.text() if verdict else ""
        except Exception as exc:  # noqa: BLE001
            return gr.skip(), status(message(exc), "warn"), session
        last = session.last_frame
        self.s.runs.hold(session_of(request), "webcam", session, nbytes=last.nbytes if last is not None else 0)
        return drawn, session.text(), session

    def default_choice(self, model_id: Any, pixels: np.ndarray, size: int, who: str | None) -> Verdict | None:
        """The webcam's default (`WebcamDefault.choose`, timed on this frame as the webcam shrinks it) when the
        Detect picker is empty or at its first entry, the configured DETR; None when the visitor picked a model."""
        if model_id is not None and not isinstance(model_id, str):
            return None  # not a model id: `Services.load` refuses it in one line
        picked = (model_id or "").strip()
        if picked and picked != self.s.config.detr_model:
            return None
        small = shrink_frame(np.ascontiguousarray(pixels[..., :3]))
        return self.default.choose(lambda m: self.s.load(m, "detr", session=who), small, size)

    def freeze(self, session: LiveSession | None) -> tuple:
        """Hand the last webcam frame to the Detect tab (full resolution there). Returns (image, tabs)."""
        if session is None or session.last_frame is None:
            raise refusal("No webcam frame yet: start the camera and press Record first.")
        path = export_dir() / f"webcam-{time.strftime('%H%M%S')}.png"
        Image.fromarray(np.ascontiguousarray(session.last_frame[..., :3])).save(path)
        return str(path), gr.Tabs(selected="detect")
