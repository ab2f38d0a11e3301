"""Live detection on webcam frames: one frame in, one annotated frame out, and honest speed figures. No Gradio.

Gradio's `.stream` keeps only the newest frame that arrives while one is being processed (the browser posts each
frame to the running event, which overwrites the previous one), so frames are dropped, never queued: the picture is
at most one processing time behind the camera. `LiveSession` measures what that gives: processed frames per second
over the last few seconds, and the time spent on the last frame.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .. import pipeline, postprocess
from . import views

WINDOW_S = 3.0  # FPS is measured over this many seconds


@dataclass
class LiveSession:
    """Per-browser-session webcam state: recent completion times, the last frame (for "freeze") and its size."""

    done: deque = field(default_factory=lambda: deque(maxlen=64))
    frames: int = 0
    latency_ms: float = 0.0
    last_frame: np.ndarray | None = None
    input_size: tuple[int, int] | None = None  # (width, height) DETR saw
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
        return (f"**{self.fps():.1f} frames/s processed** · {self.latency_ms:.0f} ms per frame · "
                f"DETR input {size} · {boxes} · frame {self.frames}")


def detr_input_size(width: int, height: int, prep) -> tuple[int, int]:
    """(width, height) DETR's preprocessing gives a frame of this size."""
    from ..preprocess import detr_size

    h, w = detr_size(height, width, prep.shortest_edge, prep.longest_edge)
    return w, h


def process_frame(session: LiveSession, loaded_live, frame: np.ndarray, threshold: float,
                  max_side: int = 640) -> np.ndarray:
    """Detect on one frame (RGB uint8 [H, W, 3]) and return it with boxes drawn, at most `max_side` px wide/high."""
    started = time.perf_counter()
    small = views.shrink_frame(np.ascontiguousarray(frame[..., :3]), max_side)
    image = Image.fromarray(small)
    out = pipeline.forward_detr(loaded_live, [image])
    scored = postprocess.detr_scores(out.logits[0].cpu(), out.boxes[0].cpu(), image.size)
    dets = pipeline.detections(loaded_live, scored, postprocess.select(scored, threshold))
    drawn = np.asarray(views.draw_detections(image, dets))
    session.last_frame = frame
    session.detections = len(dets)
    session.input_size = detr_input_size(image.width, image.height, loaded_live.preprocess)
    session.record(started, time.perf_counter())
    return drawn


def benchmark(sizes: tuple[int, ...] = (320, 384, 480, 800), frames: int = 8, threads: int | None = None) -> None:
    """Processed frames per second of the live path (`process_frame`) for DETR-R50 on 640x480 frames.

    The weights are random (speed does not depend on them), so this runs without any download:
    `python -m vtdemo.ui.webcam [--frames N] [--threads T]`.
    """
    import dataclasses

    import torch

    from ..device import pick_device
    from ..hub import LoadedModel
    from ..labels import coco
    from ..models.detr import DETR, PRESETS
    from ..preprocess import PreprocessConfig

    if threads:
        torch.set_num_threads(threads)
    device = pick_device()
    model = DETR(PRESETS["detr-resnet-50"]).eval().requires_grad_(False).to(device)
    loaded = LoadedModel(id="detr-resnet-50 (random weights)", family="detr", format="transformers", model=model,
                         config=PRESETS["detr-resnet-50"], labels=coco(),
                         preprocess=PreprocessConfig(mode="detr", interpolation="bilinear"), device=device)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    print(f"DETR-R50 live path on {device} ({torch.get_num_threads()} threads), 640x480 frames, {frames} frames each")
    for size in sizes:
        live = dataclasses.replace(loaded, preprocess=dataclasses.replace(
            loaded.preprocess, shortest_edge=size, longest_edge=round(size * 1333 / 800)))
        session = LiveSession()
        process_frame(session, live, frame, 0.7)  # warm-up
        started = time.perf_counter()
        for _ in range(frames):
            process_frame(session, live, frame, 0.7)
        seconds = (time.perf_counter() - started) / frames
        w, h = session.input_size or (0, 0)
        print(f"  short side {size:4d} (input {w}x{h}): {1 / seconds:5.2f} frames/s, {seconds * 1000:6.0f} ms/frame")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Benchmark the webcam path (DETR-R50, random weights).")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    benchmark(frames=args.frames, threads=args.threads)
