"""Benchmarks of our models at precision exact: our forward passes against timm / transformers, same weights.

Each pair is built once (the reference with random weights, ours loaded from the reference's state dict through
our converters), then both run alternately on the same input: a few warm-up runs, then `runs` timed runs each.
Medians and the ratio ours / reference are printed (lower is better; 1.0 = as fast). The references are test-only
dependencies (`pip install -r requirements-dev.txt`); the app never imports them.

Targets on the 2-core CPU: ViT-B/16 and Swin-T at most 1.0x timm, DETR-R50 at 800x1066 at most 0.85x
transformers. Machines are noisy: compare ratios from the same run, not absolute times across runs.
`swin-explain` is ours against ourselves: forward with attention + window-aware rollout against the plain
forward, target at most 2.0x. `vit-relevance` and `detr-relevance` (not in the default set: run them with `--only`)
time the gradient maps, every ViT method's map, and DETR relevance at 800 px against a plain forward of the same
model, and print the peak memory of one DETR relevance map (RSS above the loaded model). `evaluate` times one
image of each `vtdemo evaluate` protocol (run it with `--threads 1` for images/s per core).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from .harness import Timing, median_ms, peak_rss_delta, saved_state_dict


def bench_vit(runs: int) -> list[Timing]:
    import timm

    from ..convert import vit as conv
    from ..models import vit

    ref = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    ours = vit.VisionTransformer(vit.config_from_timm("vit_base_patch16_224", 1000)).eval()
    ours.load_state_dict(conv.from_timm(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 224, 224)
    o, r = median_ms([lambda: ours(x), lambda: ref(x)], runs)
    return [Timing("ViT-B/16 224", o, r, "timm")]


def bench_swin(runs: int) -> list[Timing]:
    import timm

    from ..convert import swin as conv
    from ..models import swin

    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    ours = swin.SwinTransformer(swin.config_from_timm("swin_tiny_patch4_window7_224", 1000)).eval()
    ours.load_state_dict(conv.from_timm(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 224, 224)
    o, r = median_ms([lambda: ours(x), lambda: ref(x)], runs)
    return [Timing("Swin-T 224", o, r, "timm")]


def bench_detr(runs: int) -> list[Timing]:
    import transformers

    from ..convert import detr as conv
    from ..models import detr

    legacy: dict[str, Any] = dict(use_timm_backbone=True, use_pretrained_backbone=False, backbone="resnet50")
    ref = transformers.DetrForObjectDetection(transformers.DetrConfig(**legacy)).eval()
    ours = detr.DETR(detr.config_from_hf(ref.config.to_dict())).eval()
    ours.load_state_dict(conv.from_hf(saved_state_dict(ref)), strict=True)
    x = torch.randn(1, 3, 800, 1066)
    mask = torch.ones(1, 800, 1066, dtype=torch.bool)
    o, r = median_ms(
        [lambda: ours(x, mask), lambda: ref(pixel_values=x, pixel_mask=mask.long())], max(3, runs // 2), warmup=1
    )
    return [Timing("DETR-R50 800x1066", o, r, "transformers")]


#: DINOv2 sizes the benchmark times (issue 24): (timm name, transformers size, input side).
DINOV2_CASES = (("vit_small_patch14_dinov2", (384, 12, 6), 224), ("vit_base_patch14_dinov2", (768, 12, 12), 448))


def bench_dinov2(runs: int) -> list[Timing]:
    """DINOv2 ViT-S/14 at 224 and ViT-B/14 at 448 (518-px positions resampled to the input, as every reference does
    at another size): our forward against transformers' `Dinov2Model` and timm's (`dynamic_img_size`), all three
    with the same weights (transformers' random ones, converted to ours, which are timm's names)."""
    import timm
    import transformers

    from ..convert import dinov2 as conv
    from ..models import dinov2, vit

    rows = []
    for name, (width, depth, heads), side in DINOV2_CASES:
        hf_config = transformers.Dinov2Config(
            hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, image_size=518, patch_size=14
        )
        hf = transformers.Dinov2Model(hf_config).eval()
        ours = vit.VisionTransformer(dinov2.config_from_hf(hf_config.to_dict())).eval()
        ours.load_state_dict(conv.from_hf(saved_state_dict(hf)), strict=True)
        ref = timm.create_model(name, pretrained=False, dynamic_img_size=True).eval()
        ref.load_state_dict(ours.state_dict(), strict=True)
        x = torch.randn(1, 3, side, side)
        o, h, r = median_ms([partial(ours, x), partial(hf, pixel_values=x), partial(ref, x)], runs)
        label = f"DINOv2 {'S' if width == 384 else 'B'}/14 {side}"
        rows += [Timing(label, o, h, "transformers"), Timing(label, o, r, "timm")]
    return rows


def bench_rtdetr(runs: int) -> list[Timing]:
    """RT-DETR R18vd (RT-DETRv2's sizes, as `PekingU/rtdetr_v2_r18vd`) and RT-DETR R50vd at 640x640: our forward
    against transformers' (issue 23: exact <= 1.0x), same weights (transformers' random ones converted to ours), and
    the R18's frames/s at that input (the webcam question)."""
    import transformers

    from ..convert import rtdetr as conv
    from ..models import rtdetr, rtdetr_config

    T: Any = transformers  # num_labels is PretrainedConfig's: the configs' stubs do not list it

    r18 = dict(model_type="rt_detr_resnet", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic")
    cases: list[tuple[str, Any]] = [
        (
            "RT-DETRv2 R18vd 640",
            T.RTDetrV2ForObjectDetection(
                T.RTDetrV2Config(
                    backbone_config={**r18, "out_indices": [2, 3, 4]},
                    encoder_in_channels=[128, 256, 512],
                    hidden_expansion=0.5,
                    decoder_layers=3,
                    num_labels=80,
                )
            ),
        ),
        ("RT-DETR R50vd 640", T.RTDetrForObjectDetection(T.RTDetrConfig(num_labels=80))),
    ]
    rows = []
    for label, ref in cases:
        ref = ref.eval()
        ours = rtdetr.RTDETR(rtdetr_config.config_from_hf(ref.config.to_dict())).eval()
        ours.load_state_dict(conv.from_hf(saved_state_dict(ref)), strict=True)
        x = torch.rand(1, 3, 640, 640)
        o, r = median_ms([partial(ours, x), partial(ref, pixel_values=x)], max(3, runs // 2), warmup=1)
        rows.append(Timing(f"{label} ({1000 / o:.1f} f/s)", o, r, "transformers"))
    return rows


def bench_swin_explain(runs: int) -> list[Timing]:
    from ..explain import swin as ex_swin
    from ..models import swin

    model = swin.SwinTransformer(swin.config_from_timm("swin_tiny_patch4_window7_224", 1000)).eval()
    x = torch.randn(1, 3, 224, 224)

    def explained() -> torch.Tensor:
        return ex_swin.rollout(model(x, return_attn=True).attentions)

    o, r = median_ms([explained, lambda: model(x)], runs)
    return [Timing("Swin-T rollout (+forward)", o, r, "our forward")]


def bench_vit_explain(runs: int) -> list[Timing]:
    """Classification + attention rollout against classification alone (target: at most 1.15x)."""
    from ..explain import vit as ex_vit
    from ..models import vit

    model = vit.VisionTransformer(vit.config_from_timm("vit_base_patch16_224", 1000)).eval()
    x = torch.randn(1, 3, 224, 224)

    def explained() -> torch.Tensor:
        out = model(x, return_attn=True)
        return ex_vit.rollout([a[0] for a in out.attentions])

    o, r = median_ms([explained, lambda: model(x)], runs)
    return [Timing("ViT-B/16 rollout (+forward)", o, r, "our forward")]


def bench_vit_relevance(runs: int) -> list[Timing]:
    """Gradient methods and the maps of every ViT method against a plain forward (issue targets: a relevance map
    at most 2.5x a forward, all maps of the comparison at most 10x). Ours against ourselves, random weights."""
    from types import SimpleNamespace

    from ..explain import gradcam
    from ..explain import vit as ex_vit
    from ..explain.api import explain_run
    from ..explain.compare import GRID_STEPS, compare, compare_maps
    from ..explain.registry import ExplainOptions, names_for
    from ..explain.runs import ClassifierRun
    from ..models import vit

    cfg = vit.config_from_timm("vit_base_patch16_224", 1000)
    model = vit.VisionTransformer(cfg).eval().requires_grad_(False)  # frozen, as the hub loads it
    x = torch.randn(1, 3, 224, 224)
    loaded = SimpleNamespace(
        family="vit",
        model=model,
        config=cfg,
        labels=[str(i) for i in range(1000)],
        id="vit-b16-random",
        device=torch.device("cpu"),
    )

    def grad_rollout() -> torch.Tensor:
        _, attns, grads = ex_vit.class_gradients(model, x, 3)
        return ex_vit.grad_rollout(attns, grads)  # type: ignore[arg-type]

    def cached_run() -> ClassifierRun:  # the photo's forward pass with attention, as the app caches it
        out = model(x, return_attn=True)
        stand_in: Any = dict(loaded=loaded, image=None)  # a namespace for the model, no photo: enough for maps
        return ClassifierRun(**stand_in, x=x, logits=out.logits[0], attentions=[a[0] for a in out.attentions])

    def all_maps() -> None:  # one forward with attention, then every registered ViT method's map
        run = cached_run()
        for name in names_for("vit"):
            explain_run(run, name, ExplainOptions(class_index=3))

    def grid_maps() -> None:  # what the app's comparison shows first: every map + the Spearman matrix
        compare_maps(cached_run(), ExplainOptions(class_index=3))

    def grid() -> None:  # the whole comparison grid as the app computes it: + deletion / insertion, 5-point curves
        compare(cached_run(), ExplainOptions(class_index=3), steps=GRID_STEPS)

    o1, o2, o3, o4, o5, r = median_ms(
        [grad_rollout, lambda: gradcam.vit_gradcam(model, x, 3), all_maps, grid_maps, grid, lambda: model(x)], runs
    )
    return [
        Timing("ViT-B/16 grad-rollout", o1, r, "our forward"),
        Timing("ViT-B/16 Grad-CAM", o2, r, "our forward"),
        Timing(f"ViT-B/16 all {len(names_for('vit'))} maps", o3, r, "our forward"),
        Timing("ViT-B/16 grid: maps+matrix", o4, r, "our forward"),
        Timing(f"ViT-B/16 grid: + AUCs ({GRID_STEPS + 1} pt)", o5, r, "our forward"),
    ]


def bench_detr_relevance(runs: int) -> list[Timing]:
    """DETR-R50 relevance for one detection at 800 x 1066 against a plain forward (issue target: at most 3x), and
    the peak memory of one relevance map above the loaded model (target: under 2 GB)."""
    from ..explain import detr_relevance
    from ..models import detr

    model = detr.DETR(detr.DetrConfig()).eval().requires_grad_(False)
    x = torch.randn(1, 3, 800, 1066)
    mask = torch.ones(1, 800, 1066, dtype=torch.bool)
    with torch.inference_mode():
        model(x, mask)  # warm up before measuring memory
    peak = peak_rss_delta(lambda: detr_relevance.relevance_maps(model, x, mask, 0, "class"))
    print(f"{'DETR-R50 800 relevance peak':<28} {peak / 2**20:9.0f} MiB above the loaded model (RSS)")
    boxes = peak_rss_delta(lambda: detr_relevance.relevance_maps(model, x, mask, 0, "box"))
    print(f"{'DETR-R50 800 box-edge peak':<28} {boxes / 2**20:9.0f} MiB above the loaded model (RSS)")
    o, r = median_ms(
        [lambda: detr_relevance.relevance_maps(model, x, mask, 0, "class"), lambda: model(x, mask)],
        max(2, runs // 2),
        warmup=1,
    )
    return [Timing("DETR-R50 800x1066 relevance", o, r, "our forward")]


def bench_evaluate(runs: int) -> list[Timing]:
    """Seconds per image of each `vtdemo evaluate` protocol at full size (random ViT-B/16 and DETR-R50, a 640x480
    photo), against one plain forward of the same model; with `--threads 1`, 1000 / ms is images/s per core.
    faithfulness: rollout + grad-rollout + random, both tests; randomisation: rollout + grad-rollout, every block;
    coco: one DETR forward and its 100 detections. Medians of max(1, runs // 5) images (each is many passes)."""
    import numpy as np
    from PIL import Image

    from .. import hub, labels, preprocess
    from ..evaluate import work
    from ..models import detr, vit

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))  # [H, W, 3] uint8
    cfg = vit.config_from_timm("vit_base_patch16_224", 1000)
    cpu = torch.device("cpu")
    classifier = hub.LoadedModel(
        "vit-b16-random", "vit", "timm", vit.VisionTransformer(cfg).eval().requires_grad_(False), cfg,
        labels.imagenet(), preprocess.config_from_timm({"mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.9}), cpu,
    )  # fmt: skip
    dcfg = detr.DetrConfig()
    detector = hub.LoadedModel(
        "detr-r50-random", "detr", "transformers", detr.DETR(dcfg).eval().requires_grad_(False), dcfg,
        labels.coco(), preprocess.config_from_hf({}, detr=True), cpu,
    )  # fmt: skip
    methods = ["rollout", "grad-rollout"]
    faithful = work.faithfulness(classifier, dict(methods=methods, batch_size=16, seed=0, labels={}))
    randomised = work.randomisation(classifier, dict(seed=0, threshold=0.5))
    coco = work.coco(detector, dict(ids={"photo": 1}))
    x = torch.randn(1, 3, 224, 224)
    xd, mask = torch.randn(1, 3, 800, 1066), torch.ones(1, 800, 1066, dtype=torch.bool)
    n = max(1, runs // 5)

    def forward() -> object:
        return classifier.model(x)

    # each protocol alternates with its own reference forward; the evaluators take the gradients they need
    f, rf = median_ms([lambda: faithful([("photo", photo, [*methods, "random"])]), forward], n, 0, inference=False)
    g, rg = median_ms([lambda: randomised([("photo", photo, methods)]), forward], n, 0, inference=False)
    c, rd = median_ms([lambda: coco([("photo", photo, ["detections"])]), lambda: detector.model(xd, mask)], n, 1)
    return [
        Timing("evaluate faithfulness ViT-B", f, rf, "our forward"),
        Timing("evaluate randomisation ViT-B", g, rg, "our forward"),
        Timing("evaluate coco DETR-R50", c, rd, "our forward"),
    ]
