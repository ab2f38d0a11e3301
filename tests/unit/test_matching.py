"""DETR set matching: the matcher equals brute force on small cases; costs and losses equal transformers'
`HungarianMatcher` / `ImageLoss` (the paper's rules) and a direct computation."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchvision.ops import box_convert

from vtdemo.errors import ExplainError
from vtdemo.explain import matching


def random_case(Q=6, M=3, K=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(Q, K + 1, generator=g) * 2
    pred = torch.cat([torch.rand(Q, 2, generator=g) * 0.6 + 0.2, torch.rand(Q, 2, generator=g) * 0.3 + 0.05], 1)
    gt_labels = torch.randint(0, K, (M,), generator=g)
    gt = torch.cat([torch.rand(M, 2, generator=g) * 0.6 + 0.2, torch.rand(M, 2, generator=g) * 0.3 + 0.05], 1)
    return logits, pred, gt_labels, gt


@pytest.mark.parametrize("seed", range(8))
def test_hungarian_equals_brute_force(seed):
    logits, pred, labels, gt = random_case(Q=5, M=3, seed=seed)
    cost = matching.cost_matrix(logits, pred, labels, gt)["total"]
    q, o = matching.hungarian(cost)
    best = min(itertools.permutations(range(5), 3), key=lambda p: sum(float(cost[p[j], j]) for j in range(3)))
    assert float(cost[q, o].sum()) == pytest.approx(sum(float(cost[best[j], j]) for j in range(3)), abs=1e-6)
    assert sorted(o.tolist()) == [0, 1, 2] and len(set(q.tolist())) == 3


def test_cost_by_hand():
    # one query, one object: p(class 0) = softmax([0, 0])[0] = .5; boxes (.5,.5,.2,.2) vs (.5,.5,.2,.4):
    # L1 = .2; IoU = .04 / .08 = .5, enclosing box = union so GIoU = .5. C = -.5 + 5 * .2 - 2 * .5 = -.5
    c = matching.cost_matrix(
        torch.tensor([[0.0, 0.0]]),
        torch.tensor([[0.5, 0.5, 0.2, 0.2]]),
        torch.tensor([0]),
        torch.tensor([[0.5, 0.5, 0.2, 0.4]]),
    )
    assert float(c["class"]) == pytest.approx(-0.5)
    assert float(c["l1"]) == pytest.approx(0.2)
    assert float(c["giou"]) == pytest.approx(-0.5)
    assert float(c["total"]) == pytest.approx(-0.5)


@pytest.mark.parametrize("seed", range(4))
def test_matches_and_losses_equal_transformers(seed):
    loss_mod = pytest.importorskip("transformers.loss.loss_for_object_detection")
    logits, pred, labels, gt = random_case(Q=10, M=4, K=7, seed=seed)
    matcher = loss_mod.HungarianMatcher(class_cost=1, bbox_cost=5, giou_cost=2)
    targets = [{"class_labels": labels, "boxes": gt}]
    outputs = {"logits": logits[None], "pred_boxes": pred[None]}
    ((ref_q, ref_o),) = matcher(outputs, targets)
    q, o = matching.hungarian(matching.cost_matrix(logits, pred, labels, gt)["total"])
    ref = dict(zip(ref_o.tolist(), ref_q.tolist(), strict=True))
    assert {int(b): int(a) for a, b in zip(q, o, strict=True)} == ref
    criterion = loss_mod.ImageLoss(matcher, num_classes=7, eos_coef=0.1, losses=["labels", "boxes"])
    ref_losses = criterion(outputs, targets)
    ours = matching.loss_terms(logits, pred, labels, gt, q, o)
    assert ours["classification"] == pytest.approx(float(ref_losses["loss_ce"]), abs=1e-5)
    assert ours["l1"] == pytest.approx(float(ref_losses["loss_bbox"]), abs=1e-5)
    assert ours["giou"] == pytest.approx(float(ref_losses["loss_giou"]), abs=1e-5)
    assert ours["total"] == pytest.approx(
        float(ref_losses["loss_ce"] + 5 * ref_losses["loss_bbox"] + 2 * ref_losses["loss_giou"]), abs=1e-4
    )


def test_losses_by_direct_computation():
    logits, pred, labels, gt = random_case(Q=4, M=2, K=3, seed=3)
    q, o = torch.tensor([2, 0]), torch.tensor([0, 1])
    got = matching.loss_terms(logits, pred, labels, gt, q, o)
    # cross-entropy written out: weighted negative log-likelihood, divided by the sum of weights
    logp = logits.log_softmax(-1)
    target = [3, 3, 3, 3]
    target[2], target[0] = int(labels[0]), int(labels[1])
    weights = [1.0 if t != 3 else 0.1 for t in target]
    ce = -sum(w * float(logp[i, t]) for i, (t, w) in enumerate(zip(target, weights, strict=True))) / sum(weights)
    assert got["classification"] == pytest.approx(ce, abs=1e-6)
    l1 = (float((pred[2] - gt[0]).abs().sum()) + float((pred[0] - gt[1]).abs().sum())) / 2
    assert got["l1"] == pytest.approx(l1, abs=1e-6)


def test_parse_ground_truth_forms():
    names = ["N/A", "person", "bicycle", "car"]
    simple = matching.parse_ground_truth('[["person", 10, 20, 50, 80], [3, 0, 0, 5, 5]]', names)
    assert simple.labels.tolist() == [1, 3] and simple.boxes[0].tolist() == [10, 20, 50, 80]
    coco = matching.parse_ground_truth({"annotations": [{"bbox": [10, 20, 40, 60], "category_id": 2}]}, names)
    assert coco.labels.tolist() == [2] and coco.boxes[0].tolist() == [10, 20, 50, 80]
    for bad in ('[["unicorn", 0, 0, 5, 5]]', "[[1, 5, 5, 0, 0]]", "[[1, 2]]", "not json", "[]", "[[99, 0, 0, 1, 1]]"):
        with pytest.raises(ExplainError):
            matching.parse_ground_truth(bad, names)


def test_match_end_to_end_in_pixels():
    # two confident queries placed exactly on two objects of a 200x100 image; the rest are "no object"
    Q, K = 5, 4
    logits = torch.full((Q, K + 1), -5.0)
    logits[:, -1] = 5.0
    logits[1, 2], logits[1, -1] = 8.0, -5.0
    logits[3, 0], logits[3, -1] = 8.0, -5.0
    boxes_px = torch.tensor([[20.0, 10.0, 60.0, 50.0], [100.0, 20.0, 180.0, 90.0]])
    pred = torch.rand(Q, 4) * 0.1 + 0.45
    pred[1] = matching.normalised_cxcywh(boxes_px[:1], (200, 100))[0]
    pred[3] = matching.normalised_cxcywh(boxes_px[1:], (200, 100))[0]
    gt = matching.GroundTruth(torch.tensor([2, 0]), boxes_px)
    result = matching.match(logits, pred, gt, (200, 100))
    assert result.queries == [1, 3] and result.objects == [0, 1]
    assert result.losses["l1"] == pytest.approx(0, abs=1e-6) and result.losses["giou"] == pytest.approx(0, abs=1e-6)
    back = box_convert(pred[[1, 3]], "cxcywh", "xyxy") * torch.tensor([200, 100, 200, 100])
    torch.testing.assert_close(back, boxes_px)
