"""Benchmarks of the fast path, for `python -m vtdemo bench --only fast,webcam,fast-memory`.

End to end from a decoded photo (an RGB PIL image of `assets/examples`): ours = `pipeline.classify` /
`pipeline.detect` (preprocess, forward, post-process) with precision exact and fast; references = timm fp32 (its
own data transform from `resolve_data_config`, forward, softmax top-5) and transformers fp32 (`DetrImageProcessor`,
forward, `post_process_object_detection`), same random weights, timed alternately in one run. Conversion happens
before timing, into a temporary engine cache (these random models are never reused). The webcam row times the live
path (`forward_detr` + scores + selection on a 640x480 frame at short side 384, the same pipeline calls as
`vtdemo.ui.webcam.process_frame`, without drawing). The memory row is the resident memory that the fast engine's
compiled copies of ViT-B/16, Swin-T and DETR-R50 (both DETR graphs) add to a process that already holds the exact
models.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def _photo(name: str = "chelsea.png") -> Any:
    from PIL import Image

    return Image.open(EXAMPLES / name).convert("RGB")


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
    from ..bench import _saved_state_dict
    from ..convert import detr as conv
    from ..hub import LoadedModel
    from ..models import detr

    config: Any = transformers.DetrConfig(
        use_timm_backbone=True,
        use_pretrained_backbone=False,  # type: ignore
        backbone="resnet50",
    )
    ref = transformers.DetrForObjectDetection(config).eval()
    cfg = detr.config_from_hf(ref.config.to_dict())
    ours = detr.DETR(cfg).eval().requires_grad_(False)
    ours.load_state_dict(conv.from_hf(_saved_state_dict(ref)), strict=True)
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
    from . import make_fast, prepare

    fast = make_fast(loaded)
    prepare(fast, with_attention=False)
    return fast


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
    from ..bench import Timing, _median_ms

    rows = []
    photo = _photo()
    for family, label in (("vit", "ViT-B/16 224 classify"), ("swin", "Swin-T 224 classify")):
        ref, exact = _loaded_classifier(family)
        fast = _fast(exact)
        transform = create_transform(**resolve_data_config({}, model=ref))

        def timm_e2e(ref: Any = ref, transform: Any = transform) -> Any:
            return ref(transform(photo)[None]).softmax(-1).topk(5)

        e, f, r = _median_ms(
            [
                functools.partial(pipeline.classify, photo, exact),
                functools.partial(pipeline.classify, photo, fast),
                timm_e2e,
            ],
            runs,
        )
        rows += [Timing(f"{label} exact", e, r, "timm fp32"), Timing(f"{label} fast", f, r, "timm fp32")]
        del ref, exact, fast
    ref, processor, exact = _loaded_detr()
    fast = _fast(exact)
    street = _photo("astronaut.png")

    def hf_e2e() -> Any:
        inputs = processor(images=street, return_tensors="pt")
        out = ref(**inputs)
        return processor.post_process_object_detection(out, threshold=0.7, target_sizes=[street.size[::-1]])

    n = max(3, runs // 2)
    e, f, r = _median_ms(
        [lambda: pipeline.detect(street, exact), lambda: pipeline.detect(street, fast), hf_e2e], n, warmup=1
    )
    return rows + [
        Timing("DETR-R50 800 detect exact", e, r, "transformers fp32"),
        Timing("DETR-R50 800 detect fast", f, r, "transformers fp32"),
    ]


@_with_engine_cache
def bench_webcam(runs: int) -> list[Any]:
    """The live path at short side 384 on a 640x480 frame: fast against exact (frames/s = 1000 / ms)."""
    import numpy as np
    from PIL import Image

    from .. import pipeline, postprocess
    from ..bench import Timing, _median_ms

    _, _, exact = _loaded_detr()
    exact = dataclasses.replace(
        exact, preprocess=dataclasses.replace(exact.preprocess, shortest_edge=384, longest_edge=round(384 * 1333 / 800))
    )
    fast = _fast(exact)
    frame = Image.fromarray(np.random.default_rng(0).integers(0, 255, size=(480, 640, 3), dtype=np.uint8))

    def live(loaded: Any) -> Any:
        out = pipeline.forward_detr(loaded, [frame])
        scored = postprocess.detr_scores(out.logits[0], out.boxes[0], frame.size)
        return pipeline.detections(loaded, scored, postprocess.select(scored, 0.7))

    def live_fast() -> Any:
        return live(fast)

    def live_exact() -> Any:
        return live(exact)

    f, e = _median_ms([live_fast, live_exact], max(5, runs), warmup=2)
    return [Timing(f"webcam 384 fast ({1000 / f:.1f} f/s)", f, e, f"our exact ({1000 / e:.1f} f/s)")]


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; elsewhere the peak from `resource`)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@_with_engine_cache
def bench_fast_memory(runs: int) -> list[Any]:
    """RSS added by compiling the fast graphs of the three default architectures (exact models already loaded)."""
    import gc

    from ..bench import Timing

    models = [_loaded_classifier("vit")[1], _loaded_classifier("swin")[1], _loaded_detr()[2]]
    gc.collect()
    from . import make_fast, prepare

    fast = [make_fast(m) for m in models]
    # Convert in this process first (conversion itself needs memory that is freed again), then measure compiling.
    for m in fast:
        prepare(m, with_attention=True)
    prepare(fast[2], with_attention=False)
    fresh = [make_fast(m) for m in models]  # new FastModels: compile again from the (now filled) engine cache
    del fast
    gc.collect()
    before = rss_mb()
    for m in fresh:
        prepare(m, with_attention=True)
    prepare(fresh[2], with_attention=False)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        fresh[0].model(x), fresh[1].model(x)  # first inference allocates the runtime's buffers
    added = rss_mb() - before
    return [Timing("fast engine RSS, 3 models", added, 700.0, "MB added vs 700 MB target")]
