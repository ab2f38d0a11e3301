"""RT-DETR's pure pieces by hand: deformable sampling (bilinear and discrete), sampling locations, the focal
post-processing, the sine positions and anchors (against transformers' own functions), the processor recipe, and
the one-line refusals of what is not supported."""

from __future__ import annotations

import pytest
import torch

from vtdemo import families, postprocess, preprocess
from vtdemo.errors import UnsupportedModelError
from vtdemo.models.deformable import deformable_sample, sampling_locations
from vtdemo.models.rtdetr import RTDETR, anchors_for, sine_positions_2d
from vtdemo.models.rtdetr_config import PRESETS, config_from_hf

# ----------------------------------------------------------------------------------------- deformable sampling

# One level of 2 rows x 3 columns, one head, one channel: cell (i, j) holds 10 * i + j.
GRID = torch.tensor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])
SHAPES = [(2, 3)]


def sample(points: list[tuple[float, float]], weights: list[float], method: str = "default") -> float:
    """The weighted sample of GRID at normalised (x, y) points."""
    value = GRID.reshape(1, 1, 1, 6)  # [B, nh, hd, N], row-major
    locations = torch.tensor(points).view(1, 1, 1, 1, len(points), 2)  # [B, Q, nh, L, P, 2]
    w = torch.tensor(weights).view(1, 1, 1, 1, len(points))  # [B, Q, nh, L, P]
    return float(deformable_sample(value, SHAPES, locations, w, method)[0, 0, 0])


def centre(i: int, j: int) -> tuple[float, float]:
    """The normalised (x, y) of cell (row i, column j)'s centre: ((j + 0.5) / w, (i + 0.5) / h)."""
    return ((j + 0.5) / 3, (i + 0.5) / 2)


def test_a_cell_centre_reads_the_cell_and_weights_sum_the_points():
    assert sample([centre(1, 2)], [1.0]) == pytest.approx(12.0)
    assert sample([centre(0, 1), centre(1, 0)], [0.25, 0.75]) == pytest.approx(0.25 * 1 + 0.75 * 10)


def test_bilinear_between_cells_and_zero_padding_outside():
    # Halfway between the centres of (0, 0) and (0, 1): x = 1 / 3, y = 1 / 4 -> (0 + 1) / 2.
    assert sample([(1 / 3, 0.25)], [1.0]) == pytest.approx(0.5)
    # The middle of four centres (0,0), (0,1), (1,0), (1,1): their mean.
    assert sample([(1 / 3, 0.5)], [1.0]) == pytest.approx((0 + 1 + 10 + 11) / 4)
    # On the left edge of the map at row 0's centre: half of cell (0, 0) and half of the zero padding.
    assert sample([(0.0, 0.25)], [1.0]) == pytest.approx(0.0)
    assert sample([(1.0, 0.25)], [1.0]) == pytest.approx(2.0 / 2)
    assert sample([(2.0, 2.0)], [1.0]) == 0.0  # far outside: zeros


def test_discrete_takes_cell_round_x_w_and_clamps_into_the_map():
    """RT-DETRv2's discrete method reads cell (floor(y h + 0.5), floor(x w + 0.5)): cell j sits at x = j / w there,
    half a cell left of its bilinear centre (j + 0.5) / w, so a bilinear cell centre reads the next cell."""
    assert sample([(1 / 3, 0.5)], [1.0], "discrete") == 11.0  # 1.5 -> column 1, 1.5 -> row 1
    assert sample([(0.3, 0.2)], [1.0], "discrete") == 1.0  # 1.4 -> column 1, 0.9 -> row 0
    assert sample([(0.1, 0.1)], [1.0], "discrete") == 0.0  # 0.8 -> column 0, 0.7 -> row 0
    assert sample([centre(0, 1)], [1.0], "discrete") == 12.0  # (0.5, 0.25): 2.0 -> column 2, 1.0 -> row 1
    assert sample([(-3.0, -3.0)], [1.0], "discrete") == 0.0  # clamped to cell (0, 0)
    assert sample([(3.0, 3.0)], [1.0], "discrete") == 12.0  # clamped to cell (1, 2)


def test_deformable_sample_equals_a_loop_over_points_and_levels():
    """Two levels, two heads, random points: the same as summing bilinear reads point by point."""
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (2, 2)]
    B, Q, nh, hd, P = 2, 3, 2, 5, 3
    value = torch.randn(B, nh, hd, 16, generator=g)  # channels first
    locations = torch.rand(B, Q, nh, 2, P, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(B, Q, nh, 2, P, generator=g)
    out = deformable_sample(value, shapes, locations, weights)  # [B, Q, nh*hd]

    def bilinear(grid: torch.Tensor, x: float, y: float) -> torch.Tensor:  # grid [h, w, hd]; x, y normalised
        h, w = grid.shape[:2]
        px, py = x * w - 0.5, y * h - 0.5  # pixel coordinates of cell centres (align_corners=False)
        x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
        total = torch.zeros(grid.shape[-1])
        for yy in (y0, y0 + 1):
            for xx in (x0, x0 + 1):
                if 0 <= yy < h and 0 <= xx < w:
                    total += (1 - abs(px - xx)) * (1 - abs(py - yy)) * grid[yy, xx]
        return total

    starts = [0, 12]
    for b in range(B):
        for q in range(Q):
            for head in range(nh):
                expected = torch.zeros(hd)
                for level, (h, w) in enumerate(shapes):
                    grid = value[b, head, :, starts[level] : starts[level] + h * w].T.reshape(h, w, hd)
                    for p in range(P):
                        x, y = locations[b, q, head, level, p].tolist()
                        expected += weights[b, q, head, level, p] * bilinear(grid, x, y)
                assert torch.allclose(out[b, q, head * hd : (head + 1) * hd], expected, atol=1e-5)


def test_sampling_locations_place_offsets_in_units_of_the_box():
    reference = torch.tensor([[[0.5, 0.4, 0.2, 0.1]]])  # [B, Q, 4] cxcywh
    offsets = torch.zeros(1, 1, 1, 1, 4, 2)  # [B, Q, nh, L, P=4, 2]
    offsets[..., 0, :] = torch.tensor([4.0, 0.0])  # +P in x: the box's right edge at offset scale 0.5
    offsets[..., 1, :] = torch.tensor([0.0, -2.0])  # -P/2 in y: a quarter of the height up
    loc = sampling_locations(reference, offsets, 0.5)[0, 0, 0, 0]  # [P, 2]
    assert loc[0].tolist() == pytest.approx([0.6, 0.4])
    assert loc[1].tolist() == pytest.approx([0.5, 0.375])
    assert loc[2].tolist() == pytest.approx([0.5, 0.4])


# --------------------------------------------------------------------------------------------- post-processing


def test_rtdetr_scores_by_hand():
    """Two queries x three classes; the top Q = 2 pairs over all six: query 1 class 2, then query 0 class 2."""
    logits = torch.tensor([[0.0, -1.0, 2.0], [-3.0, 1.0, 3.0]])
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.25, 0.5, 0.5, 1.0]])  # cxcywh
    s = postprocess.rtdetr_scores(logits, boxes, (200, 100))  # (width, height)
    assert s.labels.tolist() == [2, 2] and s.queries.tolist() == [1, 0]
    assert s.scores.tolist() == pytest.approx([torch.tensor(3.0).sigmoid().item(), torch.tensor(2.0).sigmoid().item()])
    assert s.boxes.tolist() == [[0.0, 0.0, 100.0, 100.0], [50.0, 25.0, 150.0, 75.0]]
    assert s.query_of(0) == 1


def test_rtdetr_scores_equal_the_processors_post_processing_and_are_not_clipped():
    transformers = pytest.importorskip("transformers")
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 20, 6, generator=g) * 2
    boxes = torch.rand(1, 20, 4, generator=g)  # some boxes reach past the image: no clipping in either
    expected = transformers.RTDetrImageProcessor().post_process_object_detection(
        SimpleNamespace(logits=logits, pred_boxes=boxes), threshold=0.3, target_sizes=[(480, 640)]
    )[0]
    s = postprocess.rtdetr_scores(logits[0], boxes[0], (640, 480))
    keep = postprocess.select(s, 0.3)
    assert torch.allclose(s.scores[keep], expected["scores"]) and torch.equal(s.labels[keep], expected["labels"])
    assert torch.allclose(s.boxes[keep], expected["boxes"], atol=1e-4)
    assert float(s.boxes.min()) < 0 or float(s.boxes[:, 2].max()) > 640  # unclipped


# ------------------------------------------------------------------------------------ positions and anchors


def test_sine_positions_and_anchors_equal_transformers():
    pytest.importorskip("transformers")
    from transformers.models.rt_detr.modeling_rt_detr import RTDetrModel, build_2d_sinusoidal_position_embedding

    ours = sine_positions_2d(3, 5, 16, 10000.0)
    theirs = build_2d_sinusoidal_position_embedding(3, 5, 16, 10000.0)
    assert torch.allclose(ours, theirs, atol=1e-6)
    shapes = [(80, 80), (40, 40), (20, 20)]  # a 640x640 input
    anchors, valid = anchors_for(shapes, torch.float32, torch.device("cpu"))
    ref_anchors, ref_valid = RTDetrModel._cached_generate_anchors(tuple(shapes), 0.05, "cpu", torch.float32)
    assert torch.equal(valid, ref_valid) and torch.equal(anchors, ref_anchors)
    assert int((~valid).sum()) == 4 * 80 - 4  # level 0's border cells: centres within 0.01 of an edge


# ------------------------------------------------------------------------------------------- configs, refusals


def test_processor_recipe_and_its_refusals():
    cfg = preprocess.config_from_rtdetr(None)
    assert cfg.resize == (640, 640) and not cfg.resize_short and cfg.crop is None
    assert cfg.mean == (0.0, 0.0, 0.0) and cfg.std == (1.0, 1.0, 1.0) and cfg.interpolation == "bilinear"
    normalised = preprocess.config_from_rtdetr({"do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.2] * 3})
    assert normalised.mean == (0.5, 0.5, 0.5) and normalised.std == (0.2, 0.2, 0.2)
    for bad in (
        {"rescale_factor": 1.0},
        {"do_pad": True},
        {"size": {"shortest_edge": 640}},
        {"size": {"height": 650, "width": 640}},
    ):
        with pytest.raises(UnsupportedModelError):
            preprocess.config_from_rtdetr(bad)


def test_refusals_are_one_line_naming_what_is_supported():
    for config, words in (
        ({"model_type": "d_fine"}, "D-FINE"),
        ({"model_type": "rt_detr", "backbone_config": {"model_type": "hgnet_v2"}}, "hgnet_v2"),
        ({"model_type": "rt_detr", "decoder_activation_function": "tanh"}, "tanh"),
        ({"model_type": "rt_detr", "num_feature_levels": 4}, "num_feature_levels=4"),
        ({"model_type": "rt_detr_v2", "decoder_method": "cubic"}, "cubic"),
        ({"model_type": "rt_detr", "use_timm_backbone": True, "backbone": "resnet50"}, "timm"),
    ):
        with pytest.raises(UnsupportedModelError) as exc:
            config_from_hf(config)
        assert words in str(exc.value) and "\n" not in str(exc.value)
    for model_type in ("deformable_detr", "dino_detr"):
        with pytest.raises(UnsupportedModelError) as exc:
            families.architecture_of({"model_type": model_type}, "someone/model")
        assert model_type in str(exc.value) and "RT-DETR" in str(exc.value)
    fmt, arch = families.architecture_of({"model_type": "rt_detr_v2"}, "x")
    assert (fmt, arch.family) == ("transformers", "rtdetr")


def test_config_bounds_reach_the_backbone():
    from dataclasses import replace

    from vtdemo.checkpoint import check_config_bounds

    cfg = PRESETS["rtdetr_r50vd"]
    check_config_bounds(cfg, "ok")
    huge = replace(cfg, backbone=replace(cfg.backbone, depths=(3, 4, 600, 3)))
    with pytest.raises(UnsupportedModelError, match="depths"):
        check_config_bounds(huge, "someone/huge")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_on_the_meta_device(name):
    with torch.device("meta"):
        model = RTDETR(PRESETS[name])
    assert len(model.decoder) == PRESETS[name].decoder_layers
