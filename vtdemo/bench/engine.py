"""Benchmarks of the fast path, for `python -m vtdemo bench --only fast,rtdetr-fast,webcam,fast-memory`.

End to end from a decoded photo (an RGB PIL image of `assets/examples`): ours = `pipeline.classify` / `pipeline.detect`
(preprocess, forward, post-process) with precision exact and fast; references = timm fp32 (its own data transform from
`resolve_data_config`, forward, softmax top-5) and transformers fp32 (`DetrImageProcessor` / `RTDetrImageProcessor`,
forward, `post_process_object_detection`), same random weights, timed alternately in one run. Conversion happens before
timing, into a temporary engine cache (these random models are never reused). The webcam rows time the live path
(`vtdemo.live.detect_frame`: a 640x480 frame into the fixed canvas, forward, selection; what the webcam tab runs without
drawing) at several short sides, fast as the app holds it against exact. The memory row is the resident memory of
ViT-B/16, Swin-T and DETR-R50 as the app holds them at precision fast (OpenVINO graphs with attention outputs, PyTorch
weights released) against exact (the PyTorch models), each in a fresh process.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
from typing import Any

import torch

from ..assets import examples_dir
from .harness import rss_mb


def _photo(name: str = "chelsea.png") -> Any:
    from PIL import Image

    return Image.open(examples_dir() / name).convert("RGB")


def _loaded_classifier(family: str) -> tuple[Any, Any]:
    """(timm reference, our exact LoadedModel with the same weights)."""
    import timm

    from .. import labels, preprocess
    from ..convert import swin as swin_conv
    from ..convert import vit as vit_conv
    from ..hub import LoadedModel
    from ..models import swin, vit

    conv: Any = vit_conv if family == "vit" else swin_conv
    arch: Any = vit if family == "vit" else swin
    name = "vit_base_patch16_224" if family == "vit" else "swin_tiny_patch4_window7_224"
    ctor = vit.VisionTransformer if family == "vit" else swin.SwinTransformer
    ref: Any = timm.create_model(name, pretrained=False).eval()
    cfg = arch.config_from_timm(name, 1000)
    ours = ctor(cfg).eval().requires_grad_(False)
    ours.load_state_dict(conv.from_timm(ref.state_dict()), strict=True)
    prep = preprocess.config_from_timm(ref.pretrained_cfg)
    loaded = LoadedModel(
        id=f"bench/{name}",
        family=family,
        format="timm",
        model=ours,
        config=cfg,
        labels=labels.for_classes(1000, None),
        preprocess=prep,
        device=torch.device("cpu"),
    )
    return ref, loaded


def _loaded_detr() -> tuple[Any, Any, Any]:
    """(transformers reference, its image processor, our exact LoadedModel with the same weights)."""
    import transformers

    from .. import labels, preprocess
    from ..convert import detr as conv
    from ..hub import LoadedModel
    from ..models import detr
    from .harness import saved_state_dict

    config: Any = transformers.DetrConfig(
        use_timm_backbone=True,
        use_pretrained_backbone=False,  # type: ignore
        backbone="resnet50",
    )
    ref = transformers.DetrForObjectDetection(config).eval()
    cfg = detr.config_from_hf(ref.config.to_dict())
    ours = detr.DETR(cfg).eval().requires_grad_(False)
    ours.load_state_dict(conv.from_hf(saved_state_dict(ref)), strict=True)
    pp: dict[str, Any] = {"size": {"shortest_edge": 800, "longest_edge": 1333}, "resample": 2}
    processor: Any = transformers.DetrImageProcessor(size=pp["size"], resample=2)
    loaded = LoadedModel(
        id="bench/detr-resnet-50",
        family="detr",
        format="transformers",
        model=ours,
        config=cfg,
        labels=labels.for_classes(cfg.num_classes, None, detection=True),
        preprocess=preprocess.config_from_hf(pp, detr=True),
        device=torch.device("cpu"),
    )
    return ref, processor, loaded


def _fast(loaded: Any) -> Any:
    from ..engine import make_fast, prepare

    fast = make_fast(loaded)
    prepare(fast, with_attention=False)
    return fast


def _ran(fast: Any) -> str:
    """What a fast row ran at, for its name: "bf16", or "f32" ("f32 (guard)" where the run-time fidelity check
    found bf16 outside the guard and kept a detector at f32; `VTDEMO_FAST_DTYPE` skips that check)."""
    from ..engine import runtime_info

    dtype = str(runtime_info(fast)["dtype"])
    return f"{dtype} (guard)" if getattr(fast.model, "guard_note", None) else dtype


def _with_engine_cache(fn: Any) -> Any:
    """Run `fn` with a temporary engine cache (bench models are random, never worth keeping)."""

    def wrapped(runs: int) -> Any:
        old = os.environ.get("VTDEMO_ENGINE_CACHE")
        with tempfile.TemporaryDirectory(prefix="vtdemo-bench-engine-") as d:
            os.environ["VTDEMO_ENGINE_CACHE"] = d
            try:
                return fn(runs)
            finally:
                if old is None:
                    os.environ.pop("VTDEMO_ENGINE_CACHE", None)
                else:
                    os.environ["VTDEMO_ENGINE_CACHE"] = old

    return wrapped


@_with_engine_cache
def bench_fast(runs: int) -> list[Any]:
    """Classify (ViT-B/16, Swin-T) and detect (DETR-R50 at 800 px) from a decoded photo: exact, fast, reference."""
    from timm.data import create_transform, resolve_data_config

    from .. import pipeline
    from .harness import Timing, median_ms

    rows = []
    photo = _photo()
    for family, label in (("vit", "ViT-B/16 224 classify"), ("swin", "Swin-T 224 classify")):
        ref, exact = _loaded_classifier(family)
        fast = _fast(exact)
        transform = create_transform(**resolve_data_config({}, model=ref))

        def timm_e2e(ref: Any = ref, transform: Any = transform) -> Any:
            return ref(transform(photo)[None]).softmax(-1).topk(5)

        e, f, r = median_ms(
            [
                functools.partial(pipeline.classify, photo, exact),
                functools.partial(pipeline.classify, photo, fast),
                timm_e2e,
            ],
            runs,
        )
        rows += [Timing(f"{label} exact", e, r, "timm fp32"), Timing(f"{label} fast {_ran(fast)}", f, r, "timm fp32")]
        del ref, exact, fast
    ref, processor, exact = _loaded_detr()
    fast = _fast(exact)
    street = _photo("astronaut.png")

    def hf_e2e() -> Any:
        inputs = processor(images=street, return_tensors="pt")
        out = ref(**inputs)
        return processor.post_process_object_detection(out, threshold=0.7, target_sizes=[street.size[::-1]])

    n = max(3, runs // 2)
    e, f, r = median_ms(
        [lambda: pipeline.detect(street, exact), lambda: pipeline.detect(street, fast), hf_e2e], n, warmup=1
    )
    return rows + [
        Timing("DETR-R50 800 detect exact", e, r, "transformers fp32"),
        Timing(f"DETR-R50 800 detect fast {_ran(fast)}", f, r, "transformers fp32"),
    ]


def _loaded_rtdetr(r50: bool) -> tuple[Any, Any, Any]:
    """(transformers reference, its `RTDetrImageProcessor` at 640x640, our exact LoadedModel with the same weights):
    RT-DETRv2 R18vd (`PekingU/rtdetr_v2_r18vd`'s sizes, as `models.bench_rtdetr`) or RT-DETR R50vd (transformers'
    defaults), random weights."""
    import transformers

    from .. import labels, preprocess
    from ..convert import rtdetr as conv
    from ..hub import LoadedModel
    from ..models import rtdetr, rtdetr_config
    from .harness import saved_state_dict

    T: Any = transformers
    if r50:
        ref = T.RTDetrForObjectDetection(T.RTDetrConfig(num_labels=80)).eval()
    else:
        r18 = dict(model_type="rt_detr_resnet", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512])
        config = T.RTDetrV2Config(
            backbone_config={**r18, "layer_type": "basic", "out_indices": [2, 3, 4]},
            encoder_in_channels=[128, 256, 512],
            hidden_expansion=0.5,
            decoder_layers=3,
            num_labels=80,
        )
        ref = T.RTDetrV2ForObjectDetection(config).eval()
    cfg = rtdetr_config.config_from_hf(ref.config.to_dict())
    ours = rtdetr.RTDETR(cfg).eval().requires_grad_(False)
    ours.load_state_dict(conv.from_hf(saved_state_dict(ref)), strict=True)
    processor: Any = T.RTDetrImageProcessor(size={"height": 640, "width": 640})
    loaded = LoadedModel(
        id=f"bench/rtdetr-{'r50vd' if r50 else 'v2-r18vd'}",
        family="rtdetr",
        format="transformers",
        model=ours,
        config=cfg,
        labels=labels.for_classes(cfg.num_classes, None, detection=True),
        preprocess=preprocess.config_from_rtdetr(processor.to_dict()),
        device=torch.device("cpu"),
    )
    return ref, processor, loaded


@_with_engine_cache
def bench_rtdetr_fast(runs: int) -> list[Any]:
    """Detect with RT-DETRv2 R18vd and RT-DETR R50vd at 640x640 from a decoded photo: `pipeline.detect` at precision
    exact and fast against transformers fp32 (`RTDetrImageProcessor`, forward, `post_process_object_detection`), the
    same threshold (0.5) and random weights; frames/s of each in the row's name."""
    from .. import pipeline
    from .harness import Timing, median_ms

    street = _photo("astronaut.png")
    rows = []
    for r50, label in ((False, "RT-DETRv2 R18vd 640 detect"), (True, "RT-DETR R50vd 640 detect")):
        ref, processor, exact = _loaded_rtdetr(r50)
        fast = _fast(exact)

        def hf_e2e(ref: Any = ref, processor: Any = processor) -> Any:
            inputs = processor(images=street, return_tensors="pt")
            out = ref(**inputs)
            return processor.post_process_object_detection(out, threshold=0.5, target_sizes=[street.size[::-1]])

        e, f, r = median_ms(
            [
                functools.partial(pipeline.detect, street, exact, 0.5),
                functools.partial(pipeline.detect, street, fast, 0.5),
                hf_e2e,
            ],
            runs,
            warmup=1,
        )
        rows += [
            Timing(f"{label} exact ({1000 / e:.1f} f/s)", e, r, "transformers fp32"),
            Timing(f"{label} fast {_ran(fast)} ({1000 / f:.1f} f/s)", f, r, "transformers fp32"),
        ]
        del ref, processor, exact, fast
    return rows


def _loaded_dinov2(width: int, depth: int, heads: int, side: int) -> tuple[Any, Any, Any]:
    """(transformers `Dinov2ForImageClassification` with 1000 classes, its `BitImageProcessor` cropping `side` px,
    our exact LoadedModel with the same weights and preprocessing)."""
    import transformers

    from .. import labels, preprocess
    from ..convert import dinov2 as conv
    from ..hub import LoadedModel
    from ..models import dinov2, vit
    from .harness import saved_state_dict

    config = transformers.Dinov2Config(  # type: ignore[call-arg]  # num_labels and architectures: PretrainedConfig's
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        image_size=518,
        num_labels=1000,
        architectures=["Dinov2ForImageClassification"],
    )
    ref = transformers.Dinov2ForImageClassification(config).eval()
    pp: dict[str, Any] = {
        "size": {"shortest_edge": side * 8 // 7},  # 256 for a 224 crop, as the Hub's files say
        "crop_size": {"height": side, "width": side},
        "do_center_crop": True,
        "resample": 3,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }
    processor: Any = transformers.BitImageProcessor(**pp)
    cfg = dinov2.config_from_hf(config.to_dict())
    ours = vit.VisionTransformer(cfg).eval().requires_grad_(False)
    ours.load_state_dict(conv.from_hf(saved_state_dict(ref)), strict=True)
    loaded = LoadedModel(
        id=f"bench/dinov2-{width}-{side}",
        family="vit",
        format="transformers",
        model=ours,
        config=cfg,
        labels=labels.for_classes(1000, None),
        preprocess=preprocess.config_from_hf(pp),
        device=torch.device("cpu"),
    )
    return ref, processor, loaded


@_with_engine_cache
def bench_dinov2_fast(runs: int) -> list[Any]:
    """DINOv2 ViT-S/14 at 224 and ViT-B/14 at 448 with a linear head (the `*-imagenet1k-1-layer` kind), classify
    from a decoded photo: ours exact and fast against transformers fp32 (`BitImageProcessor`, forward, softmax
    top-5), same weights."""
    from .. import pipeline
    from .harness import Timing, median_ms
    from .models import DINOV2_CASES

    photo = _photo()
    rows = []
    for _, (width, depth, heads), side in DINOV2_CASES:
        ref, processor, exact = _loaded_dinov2(width, depth, heads, side)
        fast = _fast(exact)

        def hf_e2e(ref: Any = ref, processor: Any = processor) -> Any:
            return ref(**processor(images=photo, return_tensors="pt")).logits.softmax(-1).topk(5)

        e, f, r = median_ms(
            [
                functools.partial(pipeline.classify, photo, exact),
                functools.partial(pipeline.classify, photo, fast),
                hf_e2e,
            ],
            runs if side <= 224 else max(3, runs // 2),
            warmup=1,
        )
        label = f"DINOv2 {'S' if width == 384 else 'B'}/14 {side} classify"
        rows += [
            Timing(f"{label} exact", e, r, "transformers fp32"),
            Timing(f"{label} fast {_ran(fast)}", f, r, "transformers fp32"),
        ]
        del ref, exact, fast
    return rows


@_with_engine_cache
def bench_grid_fast(runs: int) -> list[Any]:
    """The Classify tab's comparison grid of ViT-B/16 as the app computes it at precision fast (the run and the
    deletion / insertion curves on the fast engine, batched; gradient methods on the exact model), against one exact
    forward pass (issue 22 targets: the whole grid <= 20x, its first step, maps + agreement matrix, <= 10x)."""
    from .. import pipeline
    from ..explain.compare import GRID_STEPS, compare, compare_maps
    from .harness import Timing, median_ms

    _, exact = _loaded_classifier("vit")
    fast = _app_fast(exact)  # as the app holds it: one graph, with attention outputs, serving the curves too
    photo = _photo()
    x = pipeline.run_classifier(exact, photo).x
    options = pipeline.ExplainOptions(class_index=3)

    def maps() -> Any:
        return compare_maps(pipeline.run_classifier(fast, photo), options)

    def grid() -> Any:
        return compare(pipeline.run_classifier(fast, photo), options, steps=GRID_STEPS)

    m, g, r = median_ms([maps, grid, functools.partial(exact.model, x)], max(3, runs // 2), warmup=1)
    return [
        Timing("ViT-B/16 grid fast: maps+matrix", m, r, "exact forward"),
        Timing(f"ViT-B/16 grid fast: + AUCs ({GRID_STEPS + 1} pt)", g, r, "exact forward"),
    ]


#: Short sides the webcam benchmark times (the app's `vtdemo.ui.config.LIVE_SIZES` up to 640).
WEBCAM_SIZES = (256, 320, 384, 480, 640)


def _app_fast(exact: Any) -> Any:
    """A fast twin as the app holds it: compiled with attention outputs, PyTorch weights released (its own copy of
    the module, so that `exact` keeps working), plain calls served by the attention graph."""
    import copy

    from ..engine import make_fast, prepare, release_weights

    fast = make_fast(dataclasses.replace(exact, model=copy.deepcopy(exact.model)), reload=lambda: exact.model)
    prepare(fast, with_attention=True)
    release_weights(fast)
    return fast


@_with_engine_cache
def bench_webcam(runs: int) -> list[Any]:
    """The live path (`vtdemo.live.detect_frame`: a 640x480 frame into the fixed canvas, forward, selection) at
    each of `WEBCAM_SIZES`, fast (as the app holds it) against exact, alternately in one run."""
    import numpy as np
    from PIL import Image

    from .. import live
    from .harness import Timing, median_ms

    _, _, exact = _loaded_detr()
    fast = _app_fast(exact)
    frame = np.random.default_rng(0).integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    rows = []
    for size in WEBCAM_SIZES:
        f, e = median_ms(
            [
                functools.partial(live.detect_frame, fast, frame, size, 0.7),
                functools.partial(live.detect_frame, exact, frame, size, 0.7),
            ],
            max(3, runs),
            warmup=1,
        )
        h, w = live.canvas(size)
        rows.append(
            Timing(f"webcam {w}x{h} fast {_ran(fast)} ({1000 / f:.1f} f/s)", f, e, f"our exact ({1000 / e:.1f} f/s)")
        )
    # the live map (issue 22 item 4: at most 15 % of the frame rate): the same frame with the best detection's
    # decoder attention from the same call, drawn as the tab draws it
    from .. import render

    def with_map(size: int) -> Any:
        dets, attention = live.detect_frame_map(fast, frame, size, 0.0)
        return (
            render.overlay(Image.fromarray(frame), attention.numpy(), opacity=0.45) if attention is not None else dets
        )

    for size in (256, 320):
        m, f = median_ms(
            [functools.partial(with_map, size), functools.partial(live.detect_frame, fast, frame, size, 0.0)],
            max(3, runs),
            warmup=1,
        )
        h, w = live.canvas(size)
        rows.append(Timing(f"webcam {w}x{h} fast + map", m, f, "fast without the map"))
    return rows


@_with_engine_cache
def bench_fast_memory(runs: int) -> list[Any]:
    """Resident memory of the three default architectures as the app holds them, fast against exact: each
    measured in a fresh process from the same engine cache (conversion happens in a process of its own first)."""
    import subprocess
    import sys

    from .harness import Timing

    code = "from vtdemo.bench.engine import memory_child; memory_child()"
    env = dict(os.environ)
    figures = {}
    for mode in ("convert", "exact", "fast"):
        out = subprocess.run(
            [sys.executable, "-c", code, mode], env=env, capture_output=True, text=True, check=True
        ).stdout
        figures[mode] = json.loads(out.strip().splitlines()[-1])
    exact, fast = figures["exact"]["added_mb"], figures["fast"]["added_mb"]
    return [Timing("3 models' RSS, fast vs exact", fast, exact, f"MB; fast adds {fast - exact:.0f} MB (<= 700)")]


def _no_reload() -> torch.nn.Module:
    raise RuntimeError("the memory benchmark runs no gradient method: it never needs the exact model back")


def memory_child() -> None:
    """`bench_fast_memory`'s measurement in this process (argv[1]: convert | exact | fast); prints JSON.

    exact: the three exact models, one classification / detection each; fast: the same as the app holds them
    (compiled with attention outputs, PyTorch weights released), one call each with and without attention."""
    import sys

    from .. import pipeline
    from ..engine import make_fast, prepare, release_weights

    mode = sys.argv[1]
    photo = _photo()
    before = rss_mb(trim=True)
    models = [_loaded_classifier("vit")[1], _loaded_classifier("swin")[1], _loaded_detr()[2]]
    if mode != "exact":
        models = [make_fast(m, reload=_no_reload) for m in models]
        for m in models:
            prepare(m, with_attention=True)
            release_weights(m)
    for m in models:
        if m.family == "detr":
            pipeline.detect(photo, m)
            pipeline.forward_detr(m, [photo], return_attn=True)
        else:
            pipeline.classify(photo, m)
    print(json.dumps({"mode": mode, "added_mb": round(rss_mb(trim=True) - before, 1)}))
