"""The one way in: load a model, run it on a photo, and ask the run for everything else.

    from vtdemo import pipeline
    loaded = pipeline.load_model("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k")   # cached (vtdemo.loader)
    run = pipeline.run_classifier(loaded, pipeline.load_image("cat.jpg"))            # one forward pass, kept
    run.predictions(5); run.methods(); run.explain("grad-rollout").map               # a map on the patch grid
    pipeline.classify("cat.jpg").to_dict()                                           # image in, JSON out (the CLI)

The app (`vtdemo.ui`), the CLI, `evaluate` and the benchmarks use this package; the app imports nothing else of
vtdemo's inner modules (a test reads the import graph). What it offers, by kind:

- models: `load_model`, `is_loaded`, `is_available` (loaded, or on this machine: no download), `preconvert`,
  `LoadedModel`, the family registry (`FAMILIES`, the defaults),
  the model memory budget and a visitor's limits (`set_model_memory`, `model_memory`, `models_in_use`,
  `on_model_evicted`, `ModelLimits`, `MB`), the disk budget of visitors' downloads (`DownloadBudget`), the model
  slots and the downloads beside them (`set_model_slots`, `set_download_slots`, `downloads_under_way`),
  engines and precisions (`PRECISIONS`, `describe`, `exact_model`, `precision_summary`, `prepare`, `release_weights`,
  `runtime_info`), `pick_device`, `looks_like_path`;
- photos: `load_image` (the one door for images);
- runs (`runs.py`): `run_classifier` (at any input size the model allows: `SizeChoice`, `parse_size`, ...;
  `run_classifier_at` falls back to the trained size and says why),
  `run_detr`, `run_rtdetr` (RT-DETR / RT-DETRv2; `run_detector` picks by family); the records' methods give
  predictions / detections, methods, maps, sanity checks, comparisons;
- explanations: `ExplainOptions`, `Method`, `methods_for`, `get_method`, `default_method`, `view_method` (the
  method behind a detector tab's fixed view), and the pieces a view
  draws (`Comparison`, `StagePCA`, `RandomisationCurve`, the artefact inspector's rule, a Swin window's box);
- one image in, one result out (`results.py`): `classify`, `detect`, `match`, `explain`, `compare_image`, with
  the records `ClassifyResult`, `DetectResult`, `Prediction`, `Detection`, `Explanation`;
- the webcam (DETR or RT-DETR): `detect_frame`, `detect_frame_map` (with where the best detection looked), `canvas`,
  `live_input_size` (what the model sees); video files:
  `detect_video` (an annotated H.264 mp4 and the detections of each processed frame), `redraw_video` (the same clip
  at another threshold, from the kept detections), `probe_video`, `video_frame`,
  `VideoLimits`, `VIDEO_SUFFIXES`, `every`.
"""

from __future__ import annotations

from ..device import pick_device
from ..downloads import DownloadBudget
from ..engine import describe, exact_model, precision_summary, prepare, release_weights, set_guard
from ..evaluate.randomisation import RandomisationCurve
from ..evaluate.randomisation import chart as randomisation_chart
from ..explain.api import (
    Explanation,
    MapResult,
    classifier_map,
    classifier_methods,
    deletion_check,
    explain_run,
    methods_for_model,
)
from ..explain.artefacts import CAPTION as ARTEFACTS_CAPTION
from ..explain.artefacts import find_outliers
from ..explain.compare import GRID_STEPS, Comparison, MethodScore
from ..explain.dino import FOREGROUND_THRESHOLD, MASS_KEPT, FeatureColours
from ..explain.matching import parse_ground_truth
from ..explain.registry import METHODS, ExplainOptions, Method, methods_for
from ..explain.registry import default_for as default_method
from ..explain.registry import for_view as view_method
from ..explain.registry import get as get_method
from ..explain.runs import MAX_PATCHES
from ..explain.stages import StagePCA
from ..explain.swin import window_box
from ..explain.vit import FUSIONS
from ..families import (
    DEFAULT_DETR,
    DEFAULT_RTDETR,
    DEFAULT_SWIN,
    DEFAULT_THRESHOLD,
    DEFAULT_VIT,
    FAMILIES,
    PANOPTIC_DETR,
)
from ..fetching import set_download_slots
from ..fetching import under_way as downloads_under_way
from ..hub import LoadedModel, looks_like_path
from ..images import ImageSource, load_image
from ..input_size import TRAINED, SizeChoice, offered_sizes, size_note, trained_side
from ..input_size import parse as parse_size
from ..live import canvas, detect_frame, detect_frame_map
from ..live import input_size as live_input_size
from ..loader import Limits as ModelLimits
from ..loader import in_use as models_in_use
from ..loader import is_available, is_loaded, preconvert, set_model_slots
from ..loader import load as load_model
from ..loader import memory_budget as model_memory
from ..loader import on_evict as on_model_evicted
from ..loader import set_memory_budget as set_model_memory
from ..memory import MB
from ..models.dinov2 import registers_partner
from ..postprocess_panoptic import PanopticResult, Segment
from ..records import ClassifyResult, Detection, DetectResult, Prediction, detections, no_head_note, predictions
from ..settings import PRECISIONS
from ..video import SUFFIXES as VIDEO_SUFFIXES
from ..video import VideoError, VideoLimits, VideoResult, detect_video, every, redraw_video
from ..video import frame_at as video_frame
from ..video import probe as probe_video
from .fidelity import bf16_verdict
from .results import (
    classify,
    compare_image,
    detect,
    explain,
    forward_classifier,
    forward_detr,
    forward_rtdetr,
    match,
    match_output,
    runtime_info,
)
from .runs import (
    ClassifierRun,
    DetrRun,
    RtDetrRun,
    feature_colours,
    run_classifier,
    run_classifier_at,
    run_detector,
    run_detr,
    run_rtdetr,
)

set_guard(bf16_verdict)  # the engine's run-time fidelity check runs models through this package

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoError",
    "VideoLimits",
    "VideoResult",
    "detect_video",
    "redraw_video",
    "every",
    "probe_video",
    "video_frame",
    "FOREGROUND_THRESHOLD",
    "FeatureColours",
    "MASS_KEPT",
    "feature_colours",
    "no_head_note",
    "registers_partner",
    "ARTEFACTS_CAPTION",
    "DEFAULT_DETR",
    "DEFAULT_RTDETR",
    "DEFAULT_SWIN",
    "DEFAULT_THRESHOLD",
    "DEFAULT_VIT",
    "FAMILIES",
    "FUSIONS",
    "GRID_STEPS",
    "MAX_PATCHES",
    "MB",
    "METHODS",
    "PANOPTIC_DETR",
    "PRECISIONS",
    "TRAINED",
    "ClassifierRun",
    "ClassifyResult",
    "Comparison",
    "DetectResult",
    "Detection",
    "DetrRun",
    "RtDetrRun",
    "DownloadBudget",
    "ExplainOptions",
    "Explanation",
    "ImageSource",
    "LoadedModel",
    "MapResult",
    "Method",
    "MethodScore",
    "ModelLimits",
    "PanopticResult",
    "Prediction",
    "RandomisationCurve",
    "Segment",
    "SizeChoice",
    "StagePCA",
    "canvas",
    "classifier_map",
    "classifier_methods",
    "classify",
    "compare_image",
    "default_method",
    "deletion_check",
    "describe",
    "detect",
    "detect_frame",
    "detect_frame_map",
    "detections",
    "downloads_under_way",
    "exact_model",
    "explain",
    "explain_run",
    "find_outliers",
    "forward_classifier",
    "forward_detr",
    "forward_rtdetr",
    "get_method",
    "is_available",
    "is_loaded",
    "load_image",
    "live_input_size",
    "load_model",
    "looks_like_path",
    "match",
    "match_output",
    "methods_for",
    "methods_for_model",
    "model_memory",
    "models_in_use",
    "offered_sizes",
    "on_model_evicted",
    "parse_ground_truth",
    "parse_size",
    "pick_device",
    "precision_summary",
    "preconvert",
    "predictions",
    "prepare",
    "randomisation_chart",
    "release_weights",
    "run_classifier",
    "run_classifier_at",
    "run_detector",
    "run_detr",
    "run_rtdetr",
    "runtime_info",
    "set_download_slots",
    "set_model_memory",
    "set_model_slots",
    "size_note",
    "trained_side",
    "view_method",
    "window_box",
]
