"""DETR and RT-DETR on live frames at one fixed input shape: the webcam's and the video files' model call, and what
its benchmark times.

A photo goes to DETR at its own aspect ratio (short side 800), so every photo is a new input shape. Live frames go
into a fixed canvas instead: `canvas(short_side)` = short_side x 4/3 short_side (height x width, a 4:3 webcam frame
filled exactly), each frame resized to fit inside it with its aspect ratio kept and padded at the bottom and right,
with `pixel_mask` marking the padding (DETR's own batching pads the same way, Carion et al. 2020, and its attention
ignores padded positions). The runtime then sees one shape for the whole stream: OpenVINO's dynamic-shape graph
compiles its kernels for that shape once instead of per frame size. DETR's boxes are relative to the unpadded image
(as in facebookresearch/detr's `PostProcess`), so they map back onto the frame directly.

RT-DETR needs no canvas: its processor squashes every image to one size (640x640, aspect not kept, no padding, no
normalisation: `preprocess.config_from_rtdetr`), so a frame goes in exactly as a photo does in the Detect tab and the
input shape is fixed already; `short_side` and `aspect` do not apply to it (`input_size` says what the model saw).
Its live map is the Detect tab's "where the detection looked" (`rtdetr-sampling`): the most confident detection's
last-layer sampling points, every head and level, their weights splatted on the stride-8 grid. RT-DETR returns its
sampling locations and weights on every call, so the map costs one splat of nh x L x P points (96 for R18), not
another forward pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import hub, postprocess, preprocess
from .device import inference
from .records import Detection, detections

ASPECT = 4 / 3  # width / height of the canvas: webcams deliver 4:3 (640x480) unless asked otherwise


#: The canvas's long side at most (DETR's own `longest_edge`): a 3840x2 clip must not make a 480 x 921600 input.
LONGEST = 1333


def canvas(short_side: int, aspect: float = ASPECT) -> tuple[int, int]:
    """(height, width) of the fixed DETR input for a short side, e.g. 384 -> (384, 512); aspect: width / height (a
    video file's own; a portrait clip's short side is its width). The long side stays within `LONGEST` (a thinner
    frame is fitted inside with padding, `fit`)."""
    short = int(short_side)
    long = min(LONGEST, round(short * max(aspect, 1 / aspect)))
    return (short, long) if aspect >= 1 else (long, short)


def fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an image of `size` (w, h) scaled to fit inside `box` (h, w) with its aspect ratio kept."""
    (w, h), (bh, bw) = size, box
    scale = min(bh / h, bw / w)
    return max(1, min(bw, round(w * scale))), max(1, min(bh, round(h * scale)))


def inputs(
    image: Image.Image, cfg: preprocess.PreprocessConfig, short_side: int, aspect: float = ASPECT
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """A frame -> (pixel_values [1, 3, H, W], pixel_mask [1, H, W] bool True = frame, (w, h) of the frame inside);
    H x W = `canvas(short_side, aspect)` whatever the frame's size."""
    H, W = canvas(short_side, aspect)
    w, h = fit(image.size, (H, W))
    resized = image.resize((w, h), Image.Resampling.BILINEAR) if (w, h) != image.size else image
    # DETR's normalisation, no further resize: at this short side and no long-side limit the rule keeps (h, w)
    same = dataclasses.replace(cfg, shortest_edge=min(w, h), longest_edge=None)
    values, _ = preprocess.detr_inputs([resized], same)  # [1, 3, h, w]
    pixel_values = torch.zeros(1, 3, H, W)
    pixel_mask = torch.zeros(1, H, W, dtype=torch.bool)
    pixel_values[:, :, :h, :w] = values
    pixel_mask[:, :h, :w] = True
    return pixel_values, pixel_mask, (w, h)


def input_size(loaded: hub.LoadedModel, short_side: int, aspect: float = ASPECT) -> tuple[int, int]:
    """(width, height) of the input the model sees for live frames: DETR's canvas (`canvas`), RT-DETR's processor
    size whatever the short side and aspect (the frame is squashed into it)."""
    if loaded.family == "rtdetr":
        h, w = preprocess.trained_input_size(loaded.preprocess)
        return w, h
    h, w = canvas(short_side, aspect)
    return w, h


def _rtdetr(loaded: hub.LoadedModel, image: Image.Image) -> tuple[Any, postprocess.DetrScores]:
    """RT-DETR on a frame as on a photo (squashed to its processor's size): (raw output, per-pair scores with boxes
    in the frame's pixels). The sampling locations and weights come with every call."""
    x = preprocess.classifier_input(image, loaded.preprocess)  # [1, 3, 640, 640], squashed
    with inference(loaded.device):
        out = loaded.model(x.to(loaded.device), return_attn=False)
    return out, postprocess.rtdetr_scores(out.logits[0].float().cpu(), out.boxes[0].float().cpu(), image.size)


def detect_frame(
    loaded: hub.LoadedModel, frame: np.ndarray, short_side: int, threshold: float, aspect: float = ASPECT
) -> list[Detection]:
    """Detections (score >= threshold) on an RGB frame [h, w, 3] uint8, boxes in the frame's pixels; the canvas
    has the webcam's 4:3 `aspect` unless told (a video file gives its own). An RT-DETR model runs at its
    processor's fixed size (`short_side` and `aspect` do not apply)."""
    image = Image.fromarray(frame)
    if loaded.family == "rtdetr":
        _, scored = _rtdetr(loaded, image)
        return detections(loaded, scored, postprocess.select(scored, threshold))
    pixel_values, pixel_mask, _ = inputs(image, loaded.preprocess, short_side, aspect)
    with inference(loaded.device):
        out = loaded.model(pixel_values.to(loaded.device), pixel_mask.to(loaded.device), return_attn=False)
    scored = postprocess.detr_scores(out.logits[0].float().cpu(), out.boxes[0].float().cpu(), image.size)
    return detections(loaded, scored, postprocess.select(scored, threshold))


def detect_frame_map(
    loaded: hub.LoadedModel, frame: np.ndarray, short_side: int, threshold: float, aspect: float = ASPECT
) -> tuple[list[Detection], torch.Tensor | None]:
    """`detect_frame`, plus where the most confident detection looked: its last-layer decoder cross-attention
    (heads averaged) over the frame's part of the canvas, [h', w'] feature cells (None when nothing is kept). The
    fast engine's graph with attention outputs gives the map in the same call (what the webcam's map switch uses).
    RT-DETR: the map is its most confident detection's last-layer sampling points splatted on the stride-8 grid
    ([h', w'] over the whole frame, which it squashes: `explain.rtdetr.sampling_splat`)."""
    from .explain.detr import decoder_attention

    image = Image.fromarray(frame)
    if loaded.family == "rtdetr":
        from .explain.rtdetr import sampling_points, sampling_splat

        raw, scored = _rtdetr(loaded, image)
        picked = postprocess.select(scored, threshold)  # best first
        found = detections(loaded, scored, picked)
        if not found:
            return found, None
        points = sampling_points(raw, found[0].query)  # the last decoder layer
        return found, sampling_splat(points, tuple(raw.shapes[0]))  # [h', w'] over the frame
    pixel_values, pixel_mask, _ = inputs(image, loaded.preprocess, short_side, aspect)
    with inference(loaded.device):
        out = loaded.model(pixel_values.to(loaded.device), pixel_mask.to(loaded.device), return_attn=True)
    scored = postprocess.detr_scores(out.logits[0].float().cpu(), out.boxes[0].float().cpu(), image.size)
    kept = postprocess.select(scored, threshold)  # best first
    dets = detections(loaded, scored, kept)
    if not len(kept):
        return dets, None
    attention = decoder_attention(out, int(kept[0])).float().cpu()  # [h, w] over the whole canvas
    mask = out.feature_mask[0]  # [h, w] True = frame (not padding)
    rows, cols = int(mask[:, 0].sum()), int(mask[0, :].sum())
    return dets, attention[:rows, :cols]  # [rows, cols]: the frame's cells only
