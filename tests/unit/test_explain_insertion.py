"""Insertion curve (RISE's causal metric, Petsiuk et al. 2018): its area by hand, and a model built so that only a
few patches matter."""

from __future__ import annotations

import pytest
import torch

from tests.unit.test_explain_vit import PatchSum
from vtdemo.explain import deletion


def test_area_of_a_three_step_curve_by_hand():
    # fraction 0, 0.5, 1 with probabilities 0.2, 0.8, 0.6: trapezoids 0.5 * (0.2 + 0.8) / 2 + 0.5 * (0.8 + 0.6) / 2
    # = 0.25 + 0.35 = 0.6
    frac = torch.tensor([0.0, 0.5, 1.0])
    assert deletion.area_under_curve(frac, torch.tensor([0.2, 0.8, 0.6])) == pytest.approx(0.6)


def test_insertion_on_two_patches_by_hand():
    """A 1 x 2 grid, the model's 'probability' is the mean of the image, x = 1 on the left patch and 3 on the right.
    Order (right, left), 2 steps: nothing (0), right patch (mean 1.5), both (mean 2)."""
    x = torch.ones(1, 3, 4, 8)
    x[..., 4:] = 3.0

    def mean(images):
        return images.mean(dim=(1, 2, 3))

    frac, p = deletion.insertion_curve(mean, x, torch.tensor([1, 0]), (1, 2), steps=2)
    torch.testing.assert_close(frac, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(p, torch.tensor([0.0, 1.5, 2.0]))
    # deletion in the same order: full (2), right removed (0.5), nothing left (0)
    _, d = deletion.deletion_curve(mean, x, torch.tensor([1, 0]), (1, 2), steps=2)
    torch.testing.assert_close(d, torch.tensor([2.0, 0.5, 0.0]))


def test_insertion_curve_rewards_the_right_map():
    important = [0, 5, 10, 15]
    model = PatchSum(important)
    x = torch.ones(1, 3, 32, 32)

    def prob(images):
        return model(images).softmax(-1)[:, 0]

    right = torch.zeros(16)
    right[important] = 1.0
    areas = {}
    for name, relevance in (("right", right), ("wrong", 1.0 - right)):
        frac, p = deletion.insertion_curve(prob, x, deletion.patch_order(relevance.view(4, 4)), (4, 4), steps=16)
        areas[name] = deletion.area_under_curve(frac, p)
        assert p[0] == pytest.approx(0.5)  # the empty image: no evidence
        assert p[-1] == pytest.approx(float(prob(x)[0]))  # the full image
    frac, p = deletion.insertion_curve(
        prob, x, torch.randperm(16, generator=torch.Generator().manual_seed(0)), (4, 4), steps=16
    )
    assert areas["wrong"] < deletion.area_under_curve(frac, p) < areas["right"]
    # the right map puts all the evidence back within the first quarter: full probability for 3/4 of the curve
    assert areas["right"] > 0.9 * float(prob(x)[0])


def test_known_end_points_give_the_same_curves_with_fewer_images():
    """Every curve starts and ends at the full image and the empty one: given once (`end_points`), they are not run
    again, and the curves are the same."""
    important = [0, 5, 10, 15]
    model = PatchSum(important)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) + 0.5
    seen = {"images": 0}

    def prob(images):
        seen["images"] += images.shape[0]
        return model(images).softmax(-1)[:, 0]

    order = torch.randperm(16, generator=torch.Generator().manual_seed(2))
    ends = deletion.end_points(prob, x)
    assert ends == (pytest.approx(float(prob(x)[0])), pytest.approx(float(prob(torch.zeros_like(x))[0])))
    for curve in (deletion.deletion_curve, deletion.insertion_curve):
        seen["images"] = 0
        frac, plain = curve(prob, x, order, (4, 4), steps=8)
        assert seen["images"] == 9
        seen["images"] = 0
        frac2, known = curve(prob, x, order, (4, 4), steps=8, ends=ends)
        assert seen["images"] == 7  # the 7 images between the two ends
        torch.testing.assert_close(frac2, frac)
        torch.testing.assert_close(known, plain)
    _, one_step = deletion.deletion_curve(prob, x, order, (4, 4), steps=1, ends=ends)  # nothing in between
    torch.testing.assert_close(one_step, torch.tensor(ends))


def test_one_stream_gives_each_curve_as_alone_with_each_distinct_image_run_once():
    """`CurveStream` (the comparison grid's batched stream) gives every order's deletion and insertion curves exactly
    as `deletion_curve` / `insertion_curve` alone, while an image that two curves share runs once: the end points,
    and every image of an order given twice (two maps that rank the patches alike)."""
    important = [0, 5, 10, 15]
    model = PatchSum(important)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) + 0.5
    seen = {"images": 0, "calls": 0}

    def prob(images):
        seen["images"] += images.shape[0]
        seen["calls"] += 1
        return model(images).softmax(-1)[:, 0]

    g = torch.Generator().manual_seed(2)
    orders = [torch.randperm(16, generator=g) for _ in range(3)]
    orders.append(orders[1].clone())  # the same order again: nothing new to run
    stream = deletion.CurveStream(prob, x, steps=8, batch_size=5)
    handles = [stream.add(order, (4, 4)) for order in orders]
    curves = [stream.curves(h) for h in handles]
    # 3 distinct orders x 2 curves x 7 interior images, plus the full and the empty image once
    assert seen["images"] == stream.images_run == 3 * 2 * 7 + 2
    assert seen["calls"] == -(-(3 * 2 * 7 + 2) // 5)  # batches of 5 across orders
    for order, (frac, d, ins) in zip(orders, curves, strict=True):
        frac0, d0 = deletion.deletion_curve(prob, x, order, (4, 4), steps=8)
        _, ins0 = deletion.insertion_curve(prob, x, order, (4, 4), steps=8)
        torch.testing.assert_close(frac, frac0)
        torch.testing.assert_close(d, d0, rtol=0, atol=1e-6)
        torch.testing.assert_close(ins, ins0, rtol=0, atol=1e-6)
    # the full image's probability, when known, is not run again; another grid's orders share the end points too
    stream = deletion.CurveStream(prob, x, steps=4, batch_size=8, full=float(prob(x)[0]))
    seen["images"] = 0
    h4, h2 = stream.add(orders[0], (4, 4)), stream.add(torch.tensor([3, 1, 0, 2]), (2, 2))
    frac, d, ins = stream.curves(h2)
    assert seen["images"] == 2 * 2 * 3 + 1  # two grids x two curves x 3 interior images, and the empty image
    frac0, d0 = deletion.deletion_curve(prob, x, torch.tensor([3, 1, 0, 2]), (2, 2), steps=4)
    torch.testing.assert_close(d, d0, rtol=0, atol=1e-6)
    torch.testing.assert_close(stream.curves(h4)[2], deletion.insertion_curve(prob, x, orders[0], (4, 4), steps=4)[1])
