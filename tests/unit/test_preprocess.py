"""Pre-processing equals each checkpoint's own reference: timm's eval transform, transformers' image processors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vtdemo import preprocess

TIMM_CFGS = [
    dict(
        input_size=(3, 224, 224),
        interpolation="bicubic",
        crop_pct=0.9,
        crop_mode="center",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),  # vit_base_patch16_224.augreg2_in21k_ft_in1k
    dict(
        input_size=(3, 224, 224),
        interpolation="bicubic",
        crop_pct=0.875,
        crop_mode="center",
        mean=preprocess.IMAGENET_MEAN,
        std=preprocess.IMAGENET_STD,
    ),  # deit_*.fb_in1k
    dict(
        input_size=(3, 224, 224),
        interpolation="bicubic",
        crop_pct=0.9,
        crop_mode="center",
        mean=preprocess.IMAGENET_MEAN,
        std=preprocess.IMAGENET_STD,
    ),  # swin_tiny_patch4_window7_224.ms_in1k
    dict(
        input_size=(3, 384, 384),
        interpolation="bicubic",
        crop_pct=1.0,
        crop_mode="squash",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),  # vit_*_384 uploads
    dict(
        input_size=(3, 224, 224),
        interpolation="bilinear",
        crop_pct=0.95,
        crop_mode="center",
        mean=preprocess.IMAGENET_MEAN,
        std=preprocess.IMAGENET_STD,
    ),
]


@pytest.mark.parametrize("cfg", TIMM_CFGS, ids=lambda c: f"{c['crop_mode']}-{c['crop_pct']}-{c['interpolation']}")
def test_timm_eval_transform(cfg, photos):
    timm = pytest.importorskip("timm")
    transform = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=cfg))
    ours = preprocess.config_from_timm(cfg)
    for name in ("chelsea", "rocket"):
        expected = transform(photos[name]).unsqueeze(0)
        got = preprocess.classifier_input(photos[name], ours)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


HF_PROCESSORS = [
    (
        "ViTImageProcessor",
        dict(size={"height": 224, "width": 224}, resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3),
    ),  # google/vit-base-patch16-224
    ("ViTImageProcessor", dict(size=224, resample=2)),  # the old int form of "size"
    (
        "DeiTImageProcessor",
        dict(
            size={"height": 256, "width": 256},
            do_center_crop=True,
            crop_size={"height": 224, "width": 224},
            resample=3,
            image_mean=list(preprocess.IMAGENET_MEAN),
            image_std=list(preprocess.IMAGENET_STD),
        ),
    ),  # facebook/deit-base-patch16-224
    (
        "ViTImageProcessor",
        dict(
            size={"height": 224, "width": 224},
            resample=3,
            image_mean=list(preprocess.IMAGENET_MEAN),
            image_std=list(preprocess.IMAGENET_STD),
        ),
    ),  # microsoft/swin-tiny-patch4-window7-224
]


@pytest.mark.parametrize("cls,kwargs", HF_PROCESSORS, ids=lambda v: v if isinstance(v, str) else str(v.get("size")))
def test_transformers_image_processors(cls, kwargs, photos):
    transformers = pytest.importorskip("transformers")
    processor = getattr(transformers, cls)(**kwargs)
    ours = preprocess.config_from_hf(processor.to_dict())
    for name in ("coffee", "astronaut"):
        expected = processor(photos[name], return_tensors="pt")["pixel_values"]
        got = preprocess.classifier_input(photos[name], ours)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size_form", ["old", "new"])
def test_detr_image_processor_batch_and_mask(size_form, photos):
    transformers = pytest.importorskip("transformers")
    processor = transformers.DetrImageProcessor()
    pp = (
        {"size": 800, "max_size": 1333}
        if size_form == "old"
        else {"size": {"shortest_edge": 800, "longest_edge": 1333}}
    )
    pp.update(resample=2, image_mean=list(preprocess.IMAGENET_MEAN), image_std=list(preprocess.IMAGENET_STD))
    ours = preprocess.config_from_hf(pp, detr=True)
    wide = photos["rocket"].resize((1500, 400))  # long side limits the size: 1333 * 400 / 1500
    images = [photos["chelsea"], wide]
    expected = processor(images, return_tensors="pt")
    values, mask = preprocess.detr_inputs(images, ours)
    assert values.shape == expected["pixel_values"].shape
    torch.testing.assert_close(values, expected["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(mask, expected["pixel_mask"].bool())


@pytest.mark.parametrize(
    "h,w,expected",
    [
        (480, 640, (800, 1066)),  # short side to 800
        (400, 1500, (355, 1333)),  # 1500/400*800 > 1333: short = round(1333*400/1500) = 355
        (800, 800, (800, 800)),
        (1333, 100, (1333, 100)),  # long side already at the limit
    ],
)
def test_detr_size_rule_by_hand(h, w, expected):
    assert preprocess.detr_size(h, w, 800, 1333) == expected


def test_grayscale_and_tiny_images_make_valid_inputs():
    cfg = preprocess.config_from_timm(TIMM_CFGS[0])
    for image in (Image.new("RGB", (1, 1), (10, 20, 30)), Image.new("RGB", (3, 2000)), Image.new("RGB", (2000, 3))):
        x = preprocess.classifier_input(image, cfg)
        assert x.shape == (1, 3, 224, 224) and torch.isfinite(x).all()


# ------------------------------------------------------------------------------------------------- odd aspect ratios


def _grey_levels(a: torch.Tensor, b: torch.Tensor, std) -> float:
    """Largest difference of two normalised inputs, in 8-bit grey levels."""
    return float(((a - b).abs() * torch.tensor(std).view(1, 3, 1, 1) * 255).max())


@pytest.mark.parametrize("size", [(30, 900), (900, 30), (40, 700)])
def test_elongated_images_match_timm_through_the_crop_box(size):
    """Past the aspect ratio where resizing first would build a huge image, we resample only the crop's box; the
    result stays within one grey level of timm's own transform (which still fits in memory at these sizes)."""
    timm = pytest.importorskip("timm")
    import numpy as np

    cfg = TIMM_CFGS[0]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    ours_cfg = preprocess.config_from_timm(cfg)
    w, h = size
    short = int(224 / 0.9)
    assert max(w, h) * short / min(w, h) * short > preprocess.MAX_RESIZE_FACTOR * 224 * 224  # the box path runs
    expected = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=cfg))(image).unsqueeze(0)
    got = preprocess.classifier_input(image, ours_cfg)
    assert got.shape == expected.shape
    assert _grey_levels(got, expected, cfg["std"]) <= 1.0 + 1e-3


def test_elongated_images_match_transformers_shortest_edge_processor(photos):
    transformers = pytest.importorskip("transformers")
    image = photos["rocket"].resize((40, 900))
    pp = dict(
        size={"shortest_edge": 256},
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    ref = transformers.DeiTImageProcessor(**pp)(image, return_tensors="pt")["pixel_values"]
    got = preprocess.classifier_input(image, preprocess.config_from_hf(pp))
    assert got.shape == ref.shape
    assert _grey_levels(got, ref, pp["image_std"]) <= 3.0  # PIL's bicubic vs torchvision's: a grey level or two


THIN = """
import resource, sys, time
from PIL import Image
from vtdemo import preprocess as pp
cfgs = [pp.config_from_timm({"input_size": [3, 224, 224], "crop_pct": 0.9, "interpolation": "bicubic"}),
        pp.config_from_hf({"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": 224, "resample": 3}),
        pp.config_from_hf({"size": {"height": 224, "width": 224}, "resample": 2})]
detr = pp.config_from_hf({"size": {"shortest_edge": 800, "longest_edge": 1333}}, detr=True)
pp.classifier_input(Image.new("RGB", (640, 480)), cfgs[0]); pp.detr_inputs([Image.new("RGB", (64, 48))], detr)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
worst = 0.0
for size in [(1, 20000), (20000, 1), (2, 40000), (40000, 2), (1, 10000), (10000, 1)]:
    image = Image.new("RGB", size, (10, 200, 30))
    for cfg in cfgs:
        t = time.perf_counter(); x = pp.classifier_input(image, cfg); worst = max(worst, time.perf_counter() - t)
        assert tuple(x.shape) == (1, 3, 224, 224), (size, x.shape)
    t = time.perf_counter(); x, m = pp.detr_inputs([image], detr); worst = max(worst, time.perf_counter() - t)
    assert max(x.shape[-2:]) <= 1333 and min(x.shape[-2:]) >= 1, (size, x.shape)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, worst)
"""


@pytest.mark.slow
def test_thin_images_cost_megabytes_and_milliseconds():
    """1xN, Nx1 and 2x40000 images on every preprocessing path (timm, transformers crop and squash, DETR): peak
    memory grows by a few MB and each takes well under a second (before: 1x20000 took 58 s and +12 GB). Measured in
    a fresh process, so that the peak RSS is this work's alone."""
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run(
        [sys.executable, "-c", THIN],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    grown_mb, worst_s = (float(v) for v in out.stdout.split())
    assert grown_mb < 64, f"peak memory grew by {grown_mb:.0f} MB"
    assert worst_s < 0.5, f"slowest thin image took {worst_s:.2f} s"
