"""RT-DETR explanations (`vtdemo.explain.rtdetr` through the method registry): the sampling-point geometry and AIFI's
attention against transformers on the same tiny weights and photo, Grad-CAM on the encoder and the splatting on
hand-worked cases, and the registry's entries on a run."""

from __future__ import annotations

import pytest
import torch

from tests.parity.test_rtdetr import (
    BASIC,
    BOTTLENECK,
    capture_sampling,
    hf_model,
    processor,
    selection_pairs,
    write_repo,
)
from vtdemo import pipeline
from vtdemo.errors import ExplainError
from vtdemo.explain import rtdetr

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("model_type, backbone", [("rt_detr", BASIC), ("rt_detr_v2", BOTTLENECK)])
def test_sampling_points_and_aifi_match_transformers(model_type, backbone, hf_cache, tmp_path, photos):
    """A detection's sampling points (every layer, head, level) in photo pixels equal transformers' sampling
    locations times the photo size; the weights equal its cross-attention weights; AIFI at a point equals its
    encoder attention row and column."""
    ref_model = hf_model(model_type, backbone, "default", seed=21)
    repo = f"test/tiny-views-{model_type}"
    write_repo(hf_cache, tmp_path, repo, ref_model)
    image = photos["astronaut"]
    run = pipeline.run_rtdetr(pipeline.load_model(repo), image)
    pixel_values = processor(320)(images=image, return_tensors="pt")["pixel_values"]
    seen, restore = capture_sampling(ref_model)
    try:
        with torch.no_grad():
            ref = ref_model(pixel_values=pixel_values, output_attentions=True)
    finally:
        restore()
    Q = run.output.logits.shape[1]
    ours_q, ref_q, swapped = selection_pairs(run.output.query_index[0], ref.enc_outputs_class[0].max(-1).values, Q)
    assert swapped == 0
    pair = dict(zip(ours_q, ref_q, strict=True))
    det = run.detections(run.select(0.0))[0]  # the best detection
    w, h = image.size
    for layer in range(run.decoder_layers):
        points = run.sampling_points(det.query, layer)
        xy, box = points.in_pixels(w, h)  # [nh, L, P, 2] px
        expected = seen[layer][0, pair[det.query]].reshape(points.locations.shape) * torch.tensor([w, h])
        assert float((xy - expected).abs().max()) < 1e-3  # pixels
        weights = ref.cross_attentions[layer][0, pair[det.query]].reshape(points.weights.shape)
        assert float((points.weights - weights).abs().max()) < 1e-5
        assert torch.allclose(points.weights.sum(dim=(1, 2)), torch.ones(points.weights.shape[0]), atol=1e-5)
        assert box[2] > box[0] and box[3] > box[1]
    assert points.layer == run.decoder_layers - 1 and run.sampling_points(det.query).layer == points.layer

    th, tw = run.output.shapes[-1]
    r, c = 3, 5
    point = ((c + 0.5) / tw * w, (r + 0.5) / th * h)  # the centre of top-level cell (3, 5), photo pixels
    attn = ref.encoder_attentions[0][0]  # [nh, N, N]
    row = run.explain("rtdetr-aifi", pipeline.ExplainOptions(point=point)).map
    expected_row = attn[:, r * tw + c].mean(0).view(th, tw)
    assert torch.allclose(row, expected_row / expected_row.max(), atol=1e-4)
    col = run.explain("rtdetr-aifi", pipeline.ExplainOptions(point=point, direction="column", head=1)).map
    expected_col = attn[1, :, r * tw + c].view(th, tw)
    assert torch.allclose(col, expected_col / expected_col.max(), atol=1e-4)


def test_the_registry_offers_three_views_and_each_answers_on_a_run(hf_cache, tmp_path, photos):
    write_repo(hf_cache, tmp_path, "test/tiny-views-reg", hf_model("rt_detr", BASIC, "default", seed=22))
    run = pipeline.run_rtdetr(pipeline.load_model("test/tiny-views-reg"), photos["coffee"])
    assert [m.name for m in run.methods()] == ["rtdetr-sampling", "rtdetr-aifi", "rtdetr-gradcam"]
    assert pipeline.view_method("rtdetr", "detection").name == "rtdetr-sampling"
    assert pipeline.view_method("rtdetr", "point").name == "rtdetr-aifi"
    assert pipeline.view_method("rtdetr", "detection", needs_gradients=True).name == "rtdetr-gradcam"
    det = run.detections(run.select(0.0))[1]
    sampled = run.explain("rtdetr-sampling", pipeline.ExplainOptions(query=det.query))
    assert tuple(sampled.map.shape) == run.feature_size == (40, 40) and float(sampled.map.max()) == 1.0
    assert sampled.target["query"] == det.query and sampled.target["label_id"] == det.label_id
    assert sampled.target["score"] == pytest.approx(det.score, abs=1e-6)
    assert sampled.target["box"] == pytest.approx(det.box, abs=0.02)
    relevance = run.explain("rtdetr-gradcam", pipeline.ExplainOptions(query=det.query, target_kind="class"))
    assert tuple(relevance.map.shape) == (40, 40) and float(relevance.map.max()) == pytest.approx(1.0)
    edges = run.explain("rtdetr-gradcam", pipeline.ExplainOptions(query=det.query, target_kind="box"))
    assert edges.maps is not None and list(edges.maps) == ["x0", "y0", "x1", "y1"]
    for bad, text in (
        (pipeline.ExplainOptions(query=999), "out of range"),
        (pipeline.ExplainOptions(query=0, layer=7), "out of range"),
        (pipeline.ExplainOptions(query=0, head=9), "out of range"),
    ):
        with pytest.raises(ExplainError, match=text):
            run.explain("rtdetr-sampling", bad)
    with pytest.raises(ExplainError, match="needs a point"):
        run.explain("rtdetr-aifi", pipeline.ExplainOptions())


def test_encoder_gradients_are_those_of_the_detection(hf_cache, tmp_path, photos):
    """Grad-CAM's channel weights come from d(class logit) / d(encoder maps). Recomputed here with the maps as leaves
    (the model's `encode` replaced by them): the top level's gradient is the same (no other map is built from it);
    a finer level's differs by what reaches the output through the coarser maps built from it (a total derivative)."""
    write_repo(hf_cache, tmp_path, "test/tiny-views-grad", hf_model("rt_detr_v2", BASIC, "default", seed=23))
    loaded = pipeline.load_model("test/tiny-views-grad")
    run = pipeline.run_rtdetr(loaded, photos["rocket"])
    det = run.detections(run.select(0.0))[0]
    model = loaded.model
    with torch.no_grad():
        maps, _ = model.encode(run.x)
    leaves = [m.clone().requires_grad_(True) for m in maps]
    original = model.encode
    model.encode = lambda _x, _attn=False: (list(leaves), [])
    try:
        with torch.enable_grad():
            model(run.x).logits[0, det.query, det.label_id].backward()
    finally:
        model.encode = original
    got_maps, grads = rtdetr.encoder_gradients(model, run.x, det.query, det.label_id, ("class",))
    assert all(torch.equal(a, b[0]) for a, b in zip(got_maps, maps, strict=True))
    assert torch.allclose(grads["class"][-1], leaves[-1].grad[0], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(grads["class"][0], leaves[0].grad[0], rtol=1e-4, atol=1e-7)
    size = tuple(maps[0].shape[-2:])
    expected = rtdetr.gradcam_levels(got_maps, grads["class"], size)
    assert torch.equal(rtdetr.encoder_gradcam(model, run.x, det.query, det.label_id)["class"], expected)


def test_gradcam_levels_on_a_hand_worked_case():
    """Two levels: a 2x2 level with channels [1, 2] weighted by mean gradients [1, -1], and a 1x1 level upsampled."""
    a0 = torch.tensor([[[1.0, 0.0], [2.0, 3.0]], [[0.0, 1.0], [0.0, 1.0]]])  # [2, 2, 2]
    g0 = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[-2.0, 0.0], [0.0, -2.0]]])  # means [1, -1]
    # level 0: relu(1 * a0[0] - 1 * a0[1]) = relu([[1, -1], [2, 2]]) = [[1, 0], [2, 2]]
    a1 = torch.tensor([[[2.0]]])  # [1, 1, 1]
    g1 = torch.tensor([[[0.5]]])  # cam = relu(0.5 * 2) = 1, upsampled to 2x2: all ones
    cam = rtdetr.gradcam_levels([a0, a1], [g0, g1], (2, 2))
    assert torch.equal(cam, torch.tensor([[2.0, 1.0], [3.0, 3.0]]))


def test_splatting_on_hand_worked_cases():
    """A point at a cell centre puts its weight in that cell; one halfway between two cells splits it; one outside
    the photo adds nothing."""
    shapes = [(4, 4)]
    locations = torch.tensor([[[[0.375, 0.125], [0.5, 0.625], [1.5, 0.5]]]])  # [nh=1, L=1, P=3, 2]
    weights = torch.tensor([[[0.5, 0.25, 0.25]]])
    points = rtdetr.SamplingPoints(locations, weights, torch.tensor([0.5, 0.5, 0.2, 0.2]), 0, shapes)
    grid = rtdetr.sampling_splat(points, (4, 4))
    expected = torch.zeros(4, 4)
    expected[0, 1] = 0.5  # (0.375, 0.125) is the centre of row 0, column 1
    expected[2, 1] = expected[2, 2] = 0.125  # (0.5, 0.625): row 2, between columns 1 and 2
    assert torch.allclose(grid, expected)
    xy, box = points.in_pixels(200, 100)
    assert xy[0, 0, 0].tolist() == [75.0, 12.5] and box.tolist() == pytest.approx([80.0, 40.0, 120.0, 60.0])
