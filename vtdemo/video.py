"""DETR or RT-DETR on a video file: every frame (or every k-th, chosen so that it finishes in a stated time), an
annotated H.264 video that plays in browsers, and the detections of each processed frame.

Frames are read one at a time with PyAV (FFmpeg's libraries: any container and codec FFmpeg reads, mp4 / webm / mov
among them) and never held together: memory stays at a few frames whatever the clip's length. Each processed frame
goes to the detector on the webcam's path (`vtdemo.live`: one fixed input shape for the whole clip, for DETR here with
the clip's own aspect ratio, so the fast engine compiles its kernels once; RT-DETR's processor size, 640x640, the
frame squashed as a photo is); the frames in between carry the last detections. The
annotated video is encoded with libx264 (yuv420p, `+faststart`): H.264 in mp4 is what every browser plays (OpenCV's
`mp4v` is not).

Every processed frame keeps all its scored detections (`FrameDetections`, a few arrays), so that another threshold
re-draws the clip from them (`redraw_video`: frames decoded and encoded again, the model not run): the threshold is
a view, as in the Detect tab.

Limits (`VideoLimits`; the app's settings) are checked from the container's header before any frame is decoded, and
again while decoding (a header may lie): duration, resolution, and frames decoded. Every refusal is one line
(`VideoError`): not a video, no video stream (an audio file), no frames, too long, too large.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import live, render
from .errors import ImageError, VtdemoError
from .hub import LoadedModel
from .records import Detection

#: File name endings treated as videos by the CLI (anything FFmpeg reads works; these decide image vs video).
SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
#: Long side of the frames that are processed and written (a 4K clip is drawn at this size).
OUT_MAX = 1280


class VideoError(ImageError):
    """A video that cannot be used: unreadable, no video stream, no frames, past the limits (an input's problem,
    like an unusable image)."""


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may be: at most `max_seconds` long and `max_side` px on its long side (and max_side * 9/16 on its
    short side: 3840 allows 4K UHD, refuses 8K)."""

    max_seconds: float = 60.0
    max_side: int = 3840

    @property
    def max_short(self) -> int:
        return self.max_side * 9 // 16


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frame size, frames per second, frame count (estimated when not stored), seconds."""

    width: int
    height: int
    fps: float
    frames: int
    seconds: float
    codec: str


@dataclass(frozen=True)
class FrameDetections:
    """Every scored detection of one processed frame (score >= 0: DETR's 100 queries, RT-DETR's top pairs), best
    first: `boxes` [n, 4] xyxy in the processed frame's pixels (long side at most OUT_MAX), `scores` [n],
    `label_ids` [n]; `labels` {label_id: name}. A threshold is a view of it (`at`)."""

    index: int
    time_s: float
    boxes: np.ndarray
    scores: np.ndarray
    label_ids: np.ndarray
    labels: dict[int, str]

    @classmethod
    def of(cls, index: int, time_s: float, dets: list[Detection]) -> FrameDetections:
        return cls(
            index,
            time_s,
            np.asarray([d.box for d in dets], dtype=np.float32).reshape(-1, 4),  # [n, 4]
            np.asarray([d.score for d in dets], dtype=np.float32),
            np.asarray([d.label_id for d in dets], dtype=np.int32),
            {d.label_id: d.label for d in dets},
        )

    def at(self, threshold: float) -> list[Detection]:
        """The detections with score >= threshold, best first."""
        return [
            Detection(int(i), self.labels[int(i)], float(s), [float(v) for v in b])
            for b, s, i in zip(self.boxes, self.scores, self.label_ids, strict=True)
            if s >= threshold
        ]

    def to_dict(self, threshold: float, scale: float) -> dict[str, Any]:
        """The JSON of this frame at `threshold`, boxes in the original video's pixels (`scale`: processed / original
        width)."""
        dets = [_detection(d, scale) for d in self.at(threshold)]
        return {"frame": self.index, "time_s": round(self.time_s, 3), "detections": dets}


@dataclass
class VideoResult:
    """The annotated video (`path`), what was read (`info`), every `stride`-th frame processed (`processed` of
    `frames`), how long it took, and the detections per processed frame (`per_frame`: JSON-able)."""

    path: Path
    info: VideoInfo
    stride: int
    frames: int
    processed: int
    seconds: float
    engine: str
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    expected_s: float = 0.0  # the whole clip's time as estimated after frame 1 (0: a stride was given)
    detector: str = "DETR"  # which kind of detector ran: "DETR" or "RT-DETR" (what the status lines name)
    kept: list[FrameDetections] = field(default_factory=list)  # every score of each processed frame (`redraw_video`)

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": {
                "width": self.info.width,
                "height": self.info.height,
                "fps": round(self.info.fps, 3),
                "frames": self.frames,
                "codec": self.info.codec,
            },
            "stride": self.stride,
            "processed_frames": self.processed,
            "seconds": round(self.seconds, 2),
            "runtime": self.engine,
            "frames": self.per_frame,
        }


def clock(seconds: float) -> str:
    """'45 s', '2 min', '2 min 5 s', '3 h 0 min' (whole seconds past a minute)."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 60:
        rest = int(seconds % 60)
        return f"{int(seconds // 60)} min" + (f" {rest} s" if rest else "")
    return f"{seconds:.3g} s"


def _open(path: str | Path, name: str) -> Any:
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:120]
        raise VideoError(f"{name} could not be read as a video ({reason}): use an mp4, webm or mov clip") from None


def probe(path: str | Path, limits: VideoLimits, name: str = "the video") -> VideoInfo:
    """Read the header only (no frame is decoded) and check the limits; one `VideoError` line otherwise."""
    with contextlib.closing(_open(path, name)) as container:
        return _info(container, limits, name)


def _info(container: Any, limits: VideoLimits, name: str) -> VideoInfo:
    form = str(container.format.name)
    if form.endswith("_pipe") or form == "image2":  # FFmpeg's still-image readers: a photo, not a clip
        kind = form.removesuffix("_pipe") if form != "image2" else "image"
        raise VideoError(f"{name} is a photo ({kind}), not a video: open it as a photo")
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams}))
        held = f"it holds {kinds}" if kinds else "it is empty"
        raise VideoError(f"{name} has no video stream ({held}): use a video clip")
    stream = container.streams.video[0]
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise VideoError(f"{name} has a video stream without a frame size: it cannot be decoded")
    if max(width, height) > limits.max_side or min(width, height) > limits.max_short:
        raise VideoError(
            f"{name} is {width}x{height}: this server takes videos up to {limits.max_side}x{limits.max_short}"
        )
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    fps = float(rate) if rate else 25.0
    seconds = 0.0
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000  # microseconds (av.time_base)
    if seconds > limits.max_seconds:
        raise VideoError(f"{name} lasts {clock(seconds)}: this server takes clips up to {clock(limits.max_seconds)}")
    frames = int(stream.frames or 0) or max(1, round(seconds * fps))
    return VideoInfo(width, height, fps, frames, seconds, stream.codec_context.name or "?")


def frames(
    path: str | Path, limits: VideoLimits, name: str = "the video", max_side: int | None = None
) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, time in s, RGB uint8 [h, w, 3]) for each frame, decoded one at a time; stops with a `VideoError`
    past the limits (a header can lie about the duration) or when the stream is damaged part way. max_side: frames
    scaled so that their long side is at most this (and their sides even), in the same pass as the colour
    conversion (FFmpeg's swscale: far cheaper than resizing the full frame afterwards)."""
    import av

    with contextlib.closing(_open(path, name)) as container:
        info = _info(container, limits, name)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        most = math.ceil(limits.max_seconds * max(info.fps, 1.0)) + 1
        size = {} if max_side is None else dict(zip(("width", "height"), scaled(info, max_side), strict=True))
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index >= most:
                    raise VideoError(
                        f"{name} holds more frames than {clock(limits.max_seconds)} at {info.fps:.0f} frames/s "
                        "(its header says less): this server takes clips up to that length"
                    )
                t = (
                    float(frame.pts * stream.time_base)
                    if frame.pts is not None and stream.time_base
                    else index / info.fps
                )
                yield index, t, frame.to_ndarray(format="rgb24", interpolation="AREA", **size)
        except av.error.FFmpegError as exc:
            if index < 0:
                raise VideoError(f"{name} could not be decoded ({str(exc).splitlines()[0][:120]})") from None
            return  # a clip cut short: the frames before the damage were given
        if index < 0:
            raise VideoError(f"{name} has no frames")


def frame_at(path: str | Path, wanted: int, limits: VideoLimits, name: str = "the video") -> np.ndarray:
    """The frame of index `wanted` (decoded from the start: exact for every codec, and clips are short)."""
    for index, _, rgb in frames(path, limits, name):
        if index == wanted:
            return rgb
    raise VideoError(f"{name} has no frame {wanted}")


def stride_for(frames: int, model_s: float, other_s: float, budget_s: float) -> int:
    """The k >= 1 for which running the model on every k-th of `frames` frames (`model_s` each) while every frame
    is decoded, drawn and encoded (`other_s` each) takes at most `budget_s`: frames / k * model_s + frames * other_s
    <= budget_s. When the frames alone take the budget, the model runs on the fewest frames that still follow the
    clip (every `frames`-th: once)."""
    if frames <= 0 or model_s <= 0:
        return 1
    left = budget_s - frames * other_s  # what the model calls may take
    if left <= 0:
        return max(1, frames)
    return max(1, min(frames, math.ceil(frames * model_s / left)))


def scaled(info: VideoInfo, max_side: int = OUT_MAX) -> tuple[int, int]:
    """(width, height) of the frames as processed and written: the long side at most `max_side`, both even (what
    yuv420p needs)."""
    scale = min(1.0, max_side / max(info.width, info.height))
    return max(2, int(info.width * scale) // 2 * 2), max(2, int(info.height * scale) // 2 * 2)


class H264Writer:
    """Frames in (RGB uint8, all of one even size), an mp4 out that browsers play: H.264 (libx264), yuv420p, the
    index at the front (`+faststart`)."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int) -> None:
        import av

        self.container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "23", "preset": "ultrafast"}  # encoding is per frame: half veryfast's time

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():  # flush the encoder
            self.container.mux(packet)
        self.container.close()


def detect_video(
    path: str | Path,
    loaded: LoadedModel,
    out: str | Path,
    threshold: float,
    short_side: int,
    limits: VideoLimits = VideoLimits(),
    budget_s: float = 60.0,
    stride: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    per_frame: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    name: str = "the video",
) -> VideoResult:
    """DETR or RT-DETR on the frames of a clip (module docstring): the annotated H.264 mp4 written to `out`, the
    detections of each processed frame in the result. stride: process every k-th frame (None: chosen after timing
    the first frames so that the whole clip takes about `budget_s`, but at least one frame per second of video: when
    decoding and encoding alone take longer, the clip takes longer, and the progress says how long). per_frame: a
    context for each model call (the app holds a model slot per frame, so other visitors' photos go between them)."""
    from .engine import describe

    if loaded.family not in ("detr", "rtdetr"):
        raise VtdemoError(f"{loaded.id} is not a detector: video clips run DETR or RT-DETR models")
    detector = "RT-DETR" if loaded.family == "rtdetr" else "DETR"  # what the progress line names
    info = probe(path, limits, name)
    started = time.perf_counter()
    aspect = info.width / info.height
    writer: H264Writer | None = None
    shown: list[Detection] = []
    lap = model_s = 0.0
    max_stride = max(1, round(info.fps))
    result = VideoResult(Path(out), info, stride or 1, 0, 0, 0.0, describe(loaded), detector=detector)
    try:
        for index, t, small in frames(path, limits, name, max_side=OUT_MAX):
            if stride is None and index == 2:  # frame 1 was timed whole (frame 0 may compile): set the stride
                now = time.perf_counter()
                rest, other_s = info.frames - 2, now - lap - model_s
                # at least one detection per second of video, even when decoding and encoding alone overrun
                result.stride = min(stride_for(rest, model_s, other_s, budget_s - (now - started)), max_stride)
                result.expected_s = now - started + rest * other_s + math.ceil(rest / result.stride) * model_s
            lap = time.perf_counter()
            if writer is None:
                writer = H264Writer(out, info.fps, small.shape[1], small.shape[0])
            if index % result.stride == 0:
                begun = time.perf_counter()
                with per_frame():
                    scored = FrameDetections.of(index, t, live.detect_frame(loaded, small, short_side, 0.0, aspect))
                model_s = time.perf_counter() - begun
                result.processed += 1
                result.kept.append(scored)
                result.per_frame.append(scored.to_dict(threshold, small.shape[1] / info.width))
                shown = scored.at(threshold)
            writer.write(_annotated(small, shown))
            result.frames = index + 1
            if progress is not None:
                progress(
                    min(result.frames / max(info.frames, 1), 1.0),
                    f"Frame {result.frames} of {info.frames} ({detector} on {every(result.stride)}"
                    + (f"; about {clock(result.expected_s)} in all)" if result.expected_s else ")"),
                )
    finally:
        if writer is not None:
            writer.close()
    result.seconds = time.perf_counter() - started
    return result


def redraw_video(
    path: str | Path,
    kept: list[FrameDetections],
    threshold: float,
    out: str | Path,
    limits: VideoLimits = VideoLimits(),
    progress: Callable[[float, str], None] | None = None,
    name: str = "the video",
) -> list[dict[str, Any]]:
    """The annotated clip again at another threshold, from the detections a `detect_video` run kept (the model is
    not run): frames decoded and drawn as that run drew them (a frame between processed frames carries the last
    processed frame's boxes), written to `out`. Returns the per-frame JSON at the new threshold."""
    info = probe(path, limits, name)
    by_index = {k.index: k for k in kept}
    writer: H264Writer | None = None
    shown: list[Detection] = []
    per_frame = []
    try:
        for index, _, small in frames(path, limits, name, max_side=OUT_MAX):
            if writer is None:
                writer = H264Writer(out, info.fps, small.shape[1], small.shape[0])
            if index in by_index:
                shown = by_index[index].at(threshold)
                per_frame.append(by_index[index].to_dict(threshold, small.shape[1] / info.width))
            writer.write(_annotated(small, shown))
            if progress is not None:
                progress(min((index + 1) / max(info.frames, 1), 1.0), f"Drawing frame {index + 1} of {info.frames}")
    finally:
        if writer is not None:
            writer.close()
    return per_frame


def _annotated(small: np.ndarray, dets: list[Detection]) -> np.ndarray:
    """A frame [h, w, 3] uint8 with its detections drawn (the frame itself when there are none)."""
    if not dets:
        return small
    boxes, labels = [d.box for d in dets], [render.detection_label(d.label, d.score) for d in dets]
    return np.asarray(render.draw_boxes(Image.fromarray(small), boxes, labels, [d.label_id for d in dets]))


def _detection(d: Detection, scale: float) -> dict[str, Any]:
    """A detection in the JSON: its box in the *original* video's pixels (frames are processed at most OUT_MAX)."""
    return {
        "label_id": d.label_id,
        "label": d.label,
        "score": round(float(d.score), 4),
        "box": [round(v / scale, 1) for v in d.box],
    }


def every(k: int) -> str:
    """'every frame', 'every 2nd frame', 'every 3rd frame', 'every 4th frame', ..."""
    if k <= 1:
        return "every frame"
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"every {k}{suffix} frame"
