"""DETR through the real huggingface_hub path (offline, temporary cache), both backbone namings (`main` and the
`no_timm` revision) and both preprocessor_config forms; the whole detect pipeline against transformers'
`DetrImageProcessor` + `DetrForObjectDetection` + `post_process_object_detection` on a photo."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import clip_boxes_to_image

import vtdemo
from tests.support.hubcache import write_transformers_repo
from tests.support.tiny_models import DETR_ARGS
from tests.support.weights import randomise_detr
from vtdemo import loader
from vtdemo.labels import coco

transformers = pytest.importorskip("transformers")

OLD_FORM = {
    "do_resize": True,
    "size": 320,
    "max_size": 533,
    "do_normalize": True,
    "resample": 2,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "feature_extractor_type": "DetrFeatureExtractor",
}
NEW_FORM = dict(OLD_FORM, size={"shortest_edge": 320, "longest_edge": 533}, image_processor_type="DetrImageProcessor")
del NEW_FORM["max_size"], NEW_FORM["feature_extractor_type"]


@pytest.fixture(scope="module")
def detr_pair(tmp_path_factory):
    """One random tiny DETR (transformers), in both namings; returns (timm-naming model, no_timm model)."""
    config = transformers.DetrConfig(
        use_timm_backbone=True, use_pretrained_backbone=False, id2label=dict(enumerate(coco())), **DETR_ARGS
    )
    with_timm = randomise_detr(transformers.DetrForObjectDetection(config), 11)
    no_timm_config = transformers.DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config={
            "model_type": "resnet",
            "depths": [3, 4, 6, 3],
            "layer_type": "bottleneck",
            "out_features": ["stage4"],
        },
        id2label=dict(enumerate(coco())),
        **DETR_ARGS,
    )
    no_timm = randomise_detr(transformers.DetrForObjectDetection(no_timm_config), 12)
    return with_timm, no_timm


def reference_detections(model, processor, image, threshold):
    inputs = processor(image, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
    res = processor.post_process_object_detection(out, threshold=threshold, target_sizes=[(image.height, image.width)])[
        0
    ]
    boxes = clip_boxes_to_image(res["boxes"], (image.height, image.width))
    order = res["scores"].argsort(descending=True, stable=True)
    return res["scores"][order], res["labels"][order], boxes[order]


@pytest.mark.slow
@pytest.mark.parametrize("naming", ["main", "no_timm"])
@pytest.mark.parametrize("form", ["old", "new"])
def test_detect_equals_transformers(naming, form, detr_pair, hf_cache, tmp_path, photos):
    model = detr_pair[0] if naming == "main" else detr_pair[1]
    pp = OLD_FORM if form == "old" else NEW_FORM
    write_transformers_repo(hf_cache, "facebook/detr-test", model, tmp_path, pp, revision=naming)
    model_id = "facebook/detr-test" if naming == "main" else "facebook/detr-test@no_timm"
    processor = transformers.DetrImageProcessor(**{k: v for k, v in pp.items() if not k.endswith("_type")})
    image = photos["rocket"]
    result = vtdemo.detect(image, model=model_id, threshold=0.0)
    scores, labels, boxes = reference_detections(model, processor, image, threshold=0.0)
    assert len(result.detections) == 100 == len(scores)  # threshold 0: every query
    got_scores = torch.tensor([d.score for d in result.detections])
    torch.testing.assert_close(got_scores, scores, atol=1e-4, rtol=0)
    confident = scores > 0.05  # ties between near-zero scores may order differently
    n = int(confident.sum())
    # queries whose scores agree to 1e-4 may come in either order (threads sum in different orders): compare the
    # (score, label) pairs with the scores rounded, as multisets
    got = sorted((round(d.score, 4), d.label_id) for d in result.detections[:n])
    want = sorted((round(float(s), 4), int(c)) for s, c in zip(scores[confident], labels[confident], strict=False))
    assert [c for _, c in got] == [c for _, c in want] or got == want
    got_boxes = torch.tensor([d.box for d in result.detections])
    tolerance = 1e-3 * max(image.size) + 0.01  # 1e-3 of the image size, plus our 0.01 px rounding
    torch.testing.assert_close(got_boxes[confident], boxes[confident], atol=tolerance, rtol=0)
    assert result.size == [image.width, image.height]
    assert all(d.label == coco()[d.label_id] for d in result.detections)


@pytest.mark.slow
def test_thresholds_filter_like_the_reference(detr_pair, hf_cache, tmp_path, photos):
    model = detr_pair[0]
    write_transformers_repo(hf_cache, "facebook/detr-test", model, tmp_path, NEW_FORM)
    processor = transformers.DetrImageProcessor(**{k: v for k, v in NEW_FORM.items() if not k.endswith("_type")})
    full = vtdemo.detect(photos["astronaut"], model="facebook/detr-test", threshold=0.0)
    all_scores = sorted((d.score for d in full.detections), reverse=True)
    for threshold in (all_scores[2] - 1e-6, all_scores[10] - 1e-6):  # cuts that keep 3 and 11 queries
        result = vtdemo.detect(photos["astronaut"], model="facebook/detr-test", threshold=threshold)
        scores, _, _ = reference_detections(model, processor, photos["astronaut"], threshold)
        assert len(result.detections) == len(scores)
        assert all(d.score >= threshold for d in result.detections)
        assert [d.score for d in result.detections] == sorted((d.score for d in result.detections), reverse=True)


def test_no_timm_file_really_uses_the_other_names(detr_pair, hf_cache, tmp_path):
    from safetensors.torch import load_file

    snap = write_transformers_repo(hf_cache, "facebook/detr-test", detr_pair[1], tmp_path, NEW_FORM, revision="no_timm")
    keys = load_file(str(snap / "model.safetensors")).keys()
    assert any(".embedder.embedder.convolution." in k for k in keys)
    assert not any("conv_encoder.model.conv1" in k for k in keys)
    assert loader.load("facebook/detr-test@no_timm").family == "detr"
