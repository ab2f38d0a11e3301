"""Pre-processing equals each checkpoint's own reference: timm's eval transform, transformers' image processors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vtdemo import preprocess

TIMM_CFGS = [
    dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.9, crop_mode="center",
         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),  # vit_base_patch16_224.augreg2_in21k_ft_in1k
    dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.875, crop_mode="center",
         mean=preprocess.IMAGENET_MEAN, std=preprocess.IMAGENET_STD),  # deit_*.fb_in1k
    dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.9, crop_mode="center",
         mean=preprocess.IMAGENET_MEAN, std=preprocess.IMAGENET_STD),  # swin_tiny_patch4_window7_224.ms_in1k
    dict(input_size=(3, 384, 384), interpolation="bicubic", crop_pct=1.0, crop_mode="squash",
         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),  # vit_*_384 uploads
    dict(input_size=(3, 224, 224), interpolation="bilinear", crop_pct=0.95, crop_mode="center",
         mean=preprocess.IMAGENET_MEAN, std=preprocess.IMAGENET_STD),
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
    ("ViTImageProcessor", dict(size={"height": 224, "width": 224}, resample=2, image_mean=[0.5] * 3,
                               image_std=[0.5] * 3)),  # google/vit-base-patch16-224
    ("ViTImageProcessor", dict(size=224, resample=2)),  # the old int form of "size"
    ("DeiTImageProcessor", dict(size={"height": 256, "width": 256}, do_center_crop=True,
                                crop_size={"height": 224, "width": 224}, resample=3,
                                image_mean=list(preprocess.IMAGENET_MEAN),
                                image_std=list(preprocess.IMAGENET_STD))),  # facebook/deit-base-patch16-224
    ("ViTImageProcessor", dict(size={"height": 224, "width": 224}, resample=3,
                               image_mean=list(preprocess.IMAGENET_MEAN),
                               image_std=list(preprocess.IMAGENET_STD))),  # microsoft/swin-tiny-patch4-window7-224
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
    pp = {"size": 800, "max_size": 1333} if size_form == "old" else {
        "size": {"shortest_edge": 800, "longest_edge": 1333}}
    pp.update(resample=2, image_mean=list(preprocess.IMAGENET_MEAN), image_std=list(preprocess.IMAGENET_STD))
    ours = preprocess.config_from_hf(pp, detr=True)
    wide = photos["rocket"].resize((1500, 400))  # long side limits the size: 1333 * 400 / 1500
    images = [photos["chelsea"], wide]
    expected = processor(images, return_tensors="pt")
    values, mask = preprocess.detr_inputs(images, ours)
    assert values.shape == expected["pixel_values"].shape
    torch.testing.assert_close(values, expected["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(mask, expected["pixel_mask"].bool())


@pytest.mark.parametrize("h,w,expected", [
    (480, 640, (800, 1066)),   # short side to 800
    (400, 1500, (355, 1333)),  # 1500/400*800 > 1333: short = round(1333*400/1500) = 355
    (800, 800, (800, 800)),
    (1333, 100, (1333, 100)),  # long side already at the limit
])
def test_detr_size_rule_by_hand(h, w, expected):
    assert preprocess.detr_size(h, w, 800, 1333) == expected


def test_grayscale_and_tiny_images_make_valid_inputs():
    cfg = preprocess.config_from_timm(TIMM_CFGS[0])
    for image in (Image.new("RGB", (1, 1), (10, 20, 30)), Image.new("RGB", (3, 2000)), Image.new("RGB", (2000, 3))):
        x = preprocess.classifier_input(image, cfg)
        assert x.shape == (1, 3, 224, 224) and torch.isfinite(x).all()
