"""DETR panoptic: parity with transformers' DetrForSegmentation on the same weights (class logits, boxes, mask
logits), panoptic post-processing against transformers' `post_process_panoptic_segmentation` on the same outputs,
label fusion by hand, and loading a `save_pretrained` checkpoint through the Hub cache."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import vtdemo
from tests.parity.test_detr import to_tensor
from tests.support.hubcache import write_transformers_repo
from tests.support.weights import randomise_detr_calibrated
from vtdemo import loader, pipeline
from vtdemo.convert.detr_panoptic import from_hf
from vtdemo.explain import registry
from vtdemo.explain.api import explain_run
from vtdemo.explain.registry import ExplainOptions
from vtdemo.models.detr import config_from_hf
from vtdemo.models.detr_panoptic import DetrPanoptic, MHAttentionMap
from vtdemo.postprocess_panoptic import coco_is_thing, panoptic_segments, segments_of_output

transformers = pytest.importorskip("transformers")

TINY_HF = dict(
    d_model=32,
    encoder_attention_heads=8,
    decoder_attention_heads=8,
    encoder_layers=1,
    decoder_layers=1,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    num_queries=12,
    num_labels=6,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, images):
    """(transformers DetrForSegmentation, ours, config.json dict) holding the same random weights."""
    from safetensors.torch import load_file

    tmp = tmp_path_factory.mktemp("panoptic")
    ref = transformers.DetrForSegmentation(
        transformers.DetrConfig(**TINY_HF, use_pretrained_backbone=False, attn_implementation="eager")
    ).eval()
    calibration = to_tensor(images[0], 160, 128)[None]
    randomise_detr_calibrated(ref, 0, lambda: ref.detr.model.backbone(calibration, torch.ones(1, 128, 160)))
    ref.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text())
    ours = DetrPanoptic(config_from_hf(config)).eval()
    ours.load_state_dict(from_hf(load_file(str(tmp / "model.safetensors"))), strict=True)
    return ref, ours, config


@pytest.fixture(scope="module")
def images():
    from PIL import Image

    from tests.conftest import EXAMPLES

    return [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.iterdir()) if p.suffix.lower() in {".jpg", ".png"}]


def test_outputs_match_transformers(pair, images):
    ref, ours, _ = pair
    x = torch.stack([to_tensor(images[1], 160, 128), to_tensor(images[2], 160, 128)])
    with torch.inference_mode():
        expected = ref(pixel_values=x)
        got = ours(x)
    assert got.pred_masks.shape == expected.pred_masks.shape == (2, 12, 32, 40)  # stride 4
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.boxes, expected.pred_boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.pred_masks, expected.pred_masks, atol=1e-3, rtol=1e-4)
    assert float(expected.pred_masks.std()) > 0.1  # the masks are not trivially flat


def test_padded_cells_get_no_attention_weight():
    """The joint softmax over heads and cells ignores padded cells (-inf): equal to the softmax over real cells."""
    attn = MHAttentionMap(16, 4).eval()
    hs, memory = torch.randn(1, 3, 16), torch.randn(1, 16, 4, 5)
    mask = torch.ones(1, 4, 5, dtype=torch.bool)
    mask[:, :, 3:] = False
    with torch.no_grad():
        full = attn(hs, memory, mask)
        cut = attn(hs, memory[..., :3], None)
    assert (full[..., 3:] == 0).all()
    torch.testing.assert_close(full[..., :3], cut)
    torch.testing.assert_close(full.flatten(2).sum(-1), torch.ones(1, 3))


def _reference_panoptic(logits, masks, **kw):
    processor = transformers.DetrImageProcessor()
    outputs = SimpleNamespace(logits=logits[None], pred_masks=masks[None])
    return processor.post_process_panoptic_segmentation(outputs, **kw)[0]


def _blobs(seed: int, queries: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Random class logits [Q, 8] (7 classes + "no object") and mask logits [Q, 32, 40] shaped like a trained head's:
    one round blob per query (positive inside, negative outside) plus noise, overlapping at their borders."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(queries, 8, generator=g) * 4
    cy, cx = torch.rand(queries, 1, 1, generator=g) * 32, torch.rand(queries, 1, 1, generator=g) * 40
    radius = 3 + torch.rand(queries, 1, 1, generator=g) * 6
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(40.0), indexing="ij")
    masks = 8 * (1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2) + torch.randn(queries, 32, 40, generator=g)
    return logits, masks


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("target", [None, (250, 333)])
def test_post_processing_matches_transformers(seed, target):
    logits, masks = _blobs(seed)
    expected = _reference_panoptic(logits, masks.clone(), target_sizes=[target] if target else None)
    got = panoptic_segments(logits, masks, target_size=target)  # transformers' defaults: 0.5, 0.5, 0.8
    assert len(got.segments) >= 5
    assert torch.equal(got.segmentation, expected["segmentation"].to(torch.int32))
    assert [(s.id, s.label_id, s.score, s.was_fused) for s in got.segments] == [
        (s["id"], s["label_id"], s["score"], s["was_fused"]) for s in expected["segments_info"]
    ]
    for s in got.segments:
        assert s.area == int((got.segmentation == s.id).sum()) > 0


def _hand_case():
    """4 queries over a 4 x 6 image: class 1 (a thing) left, class 95 (stuff) in two pieces, class 2 bottom right."""
    logits = torch.full((4, 97), -10.0)
    for q, label in enumerate([95, 1, 95, 2]):
        logits[q, label] = 10.0  # score ~1 for its class
    masks = torch.full((4, 4, 6), -10.0)
    masks[0, :2, 2:4] = 10.0  # stuff, top middle
    masks[1, :, :2] = 10.0  # thing, left columns
    masks[2, :2, 4:] = 10.0  # the same stuff, top right
    masks[3, 2:, 2:] = 10.0  # another thing, bottom right
    return logits, masks


def test_fusing_stuff_by_hand():
    logits, masks = _hand_case()
    result = panoptic_segments(logits, masks, fuse={95})
    assert [(s.id, s.label_id, s.queries, s.area, s.was_fused, s.isthing) for s in result.segments] == [
        (1, 95, [0, 2], 8, True, False),
        (2, 1, [1], 8, False, True),
        (3, 2, [3], 8, False, True),
    ]
    expected = torch.tensor([[2, 2, 1, 1, 1, 1], [2, 2, 1, 1, 1, 1], [2, 2, 3, 3, 3, 3], [2, 2, 3, 3, 3, 3]])
    assert torch.equal(result.segmentation, expected.to(torch.int32))
    unfused = panoptic_segments(logits, masks)
    assert [(s.id, s.label_id) for s in unfused.segments] == [(1, 95), (2, 1), (3, 95), (4, 2)]
    # transformers gives the same map without fusion; with it, its id counter restarts from the fused id (1), so
    # the last thing gets id 2 too, merged with the first thing: we give it the next unused id (3).
    ref = _reference_panoptic(logits, masks.clone())
    assert torch.equal(unfused.segmentation, ref["segmentation"].to(torch.int32))
    ref_fused = _reference_panoptic(logits, masks.clone(), label_ids_to_fuse={95})
    assert int(ref_fused["segmentation"].max()) == 2


def test_nothing_above_the_threshold():
    logits, masks = _hand_case()
    result = panoptic_segments(logits, masks, threshold=1.0)
    assert result.segments == [] and not result.segmentation.any()


def test_coco_things_and_stuff():
    assert coco_is_thing(1) and coco_is_thing(90) and not coco_is_thing(92) and not coco_is_thing(200)


def test_hub_loads_a_panoptic_checkpoint(pair, hf_cache, tmp_path, images):
    ref, _, _ = pair
    processor = transformers.DetrImageProcessor(size={"shortest_edge": 128, "longest_edge": 200})
    write_transformers_repo(hf_cache, "facebook/detr-tiny-panoptic", ref, tmp_path, processor.to_dict())
    loaded = loader.load("facebook/detr-tiny-panoptic")
    assert loaded.family == "detr" and isinstance(loaded.model, DetrPanoptic)
    image = images[1]
    inputs = processor(image, return_tensors="pt")
    with torch.inference_mode():
        expected = ref(pixel_values=inputs["pixel_values"])
        got = loaded.model(inputs["pixel_values"])
    torch.testing.assert_close(got.pred_masks, expected.pred_masks, atol=1e-3, rtol=1e-4)
    run = pipeline.run_detr(loaded, image)
    assert run.output.pred_masks.shape[1] == 12
    threshold = float(run.output.logits[0].softmax(-1).max(-1).values.median()) - 1e-3
    result = segments_of_output(run.output, image.size, threshold=threshold)
    reference = processor.post_process_panoptic_segmentation(
        expected, threshold=threshold, target_sizes=[(image.height, image.width)]
    )[0]
    assert result.segmentation.shape == (image.height, image.width)
    # Our preprocessing and transformers' differ by float rounding, so compare segments by label and overlap.
    ref_segments = {s["id"]: s["label_id"] for s in reference["segments_info"]}
    assert len(result.segments) == len(ref_segments) > 0
    for seg in result.segments:
        ref_id = next(
            i
            for i, label in ref_segments.items()
            if label == seg.label_id and _iou(result.mask(seg.id), reference["segmentation"] == i) >= 0.99
        )
        ref_segments.pop(ref_id)
    assert vtdemo.detect(image, model=loaded, threshold=0.0).detections  # boxes still work
    options = ExplainOptions(query=result.segments[0].queries[0], point=(40.0, 30.0))
    for method in registry.names_for("detr"):  # a segment's query has the same maps as a detection
        m = explain_run(run, method, options).map
        assert torch.isfinite(m).all() and float(m.max()) > 0


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


@pytest.mark.slow
def test_full_size_matches_transformers(images):
    """detr-resnet-50-panoptic's architecture (d_model 256, 6 + 6 layers, 100 queries, 250 classes), random weights."""
    from safetensors.torch import load_file

    ref = transformers.DetrForSegmentation(
        transformers.DetrConfig(num_labels=250, use_pretrained_backbone=False, attn_implementation="eager")
    ).eval()
    calibration = to_tensor(images[0], 256, 192)[None]
    randomise_detr_calibrated(ref, 1, lambda: ref.detr.model.backbone(calibration, torch.ones(1, 192, 256)))
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        config = json.loads((Path(d) / "config.json").read_text())
        ours = DetrPanoptic(config_from_hf(config)).eval()
        ours.load_state_dict(from_hf(load_file(str(Path(d) / "model.safetensors"))), strict=True)
    x = to_tensor(images[2], 256, 192)[None]
    with torch.inference_mode():
        expected = ref(pixel_values=x)
        got = ours(x)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.boxes, expected.pred_boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.pred_masks, expected.pred_masks, atol=1e-3, rtol=1e-3)
    assert got.pred_masks.shape == (1, 100, 48, 64)
