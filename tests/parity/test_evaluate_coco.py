"""COCO box AP: hand-computed answers on a tiny synthetic COCO set, equal to pycocotools run directly on the files.

Three objects on two images: A (category 1, 30x30 = small), B (category 2, 40x40 = medium) on image 1, C
(category 1, 60x60 = medium) on image 2. COCO averages precision at 101 recall points and over categories.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vtdemo.errors import VtdemoError
from vtdemo.evaluate import coco as cc

A, B, C = [10, 10, 30, 30], [50, 20, 40, 40], [5, 5, 60, 60]
GT = {
    "images": [
        {"id": 1, "file_name": "one.png", "width": 100, "height": 80},
        {"id": 2, "file_name": "two.png", "width": 120, "height": 100},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": A, "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": B, "area": 1600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": C, "area": 3600, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}


def det(image_id, category, box, score):
    return {"image_id": image_id, "category_id": category, "bbox": box, "score": score}


PERFECT = [det(1, 1, A, 0.9), det(1, 2, B, 0.9), det(2, 1, C, 0.9)]
CASES = {
    # every object found: 1.0 everywhere there is ground truth; no large objects -> -1
    "perfect": (PERFECT, {"AP": 1.0, "AP50": 1.0, "APs": 1.0, "APm": 1.0, "APl": -1.0, "AR100": 1.0}),
    # C missed: category 1 reaches recall 0.5 at precision 1 -> 51 of 101 recall points; category 2 is perfect
    "missed": (PERFECT[:2], {"AP": (51 / 101 + 1) / 2, "AR100": (0.5 + 1) / 2, "APs": 1.0}),
    # a duplicate of A ranked below every true positive costs nothing
    "duplicate below": (PERFECT + [det(1, 1, A, 0.5)], {"AP": 1.0, "AR100": 1.0}),
    # a duplicate ranked first: category 1 goes TP (dup), FP (A, same image first), TP (C): precision 1, 1/2, 2/3
    # -> 51 recall points at 1 and 50 at 2/3 after COCO's interpolation
    "duplicate above": (PERFECT + [det(1, 1, A, 0.95)], {"AP": ((51 + 50 * 2 / 3) / 101 + 1) / 2}),
    # B labelled as category 1: category 2 has no true positive (AP 0); the stray box ranks last in category 1
    "wrong class": ([det(1, 1, A, 0.9), det(1, 1, B, 0.8), det(2, 1, C, 0.9)], {"AP": 0.5, "AR100": 0.5, "APm": 0.5}),
}


def pycocotools_directly(gt_path, dt_path):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(dt_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("case", CASES)
def test_hand_computed_ap_equals_pycocotools_on_the_files(case, tmp_path):
    results, expected = CASES[case]
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(GT))
    dt_path.write_text(json.dumps(results))
    ours = cc.evaluate(cc.read_annotations(gt_path), results, [1, 2])
    assert list(ours) == list(cc.KEYS)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    np.testing.assert_array_equal(np.array([ours[k] for k in cc.KEYS]), pycocotools_directly(gt_path, dt_path))
    assert results == CASES[case][0]  # loadRes adds fields to its input: ours must not touch the caller's list


def test_only_the_evaluated_images_count():
    ours = cc.evaluate(cc.check_annotations(GT), PERFECT[:2], [1])  # image 2 (with C) not evaluated
    assert ours["AP"] == pytest.approx(1.0) and ours["AR100"] == pytest.approx(1.0)


def test_no_detections_is_zero_not_a_crash():
    ours = cc.evaluate(cc.check_annotations(GT), [], [1, 2])
    assert ours["AP"] == 0.0 and ours["APl"] == -1.0


def test_every_query_becomes_a_coco_detection():
    logits = torch.full((3, 4), -5.0)  # 3 queries, classes 0..2 + no-object
    logits[0, 2], logits[1, 3], logits[2, 1] = 5.0, 5.0, 1.0
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.4, 0.4], [1.0, 1.0, 0.5, 0.5]])  # cxcywh, normalised
    out = cc.detections(logits, boxes, (200, 100), image_id=7)
    assert len(out) == 3 and all(d["image_id"] == 7 for d in out)
    probs = logits.softmax(-1)[:, :-1]
    assert [d["category_id"] for d in out] == [2, int(probs[1].argmax()), 1]
    assert out[0]["score"] == pytest.approx(float(probs[0, 2]), abs=1e-6)
    assert out[0]["bbox"] == pytest.approx([80.0, 30.0, 40.0, 40.0])  # (0.4*200, 0.3*100, 0.2*200, 0.4*100)
    assert out[1]["bbox"] == pytest.approx([-20.0, -10.0, 80.0, 40.0])  # not clipped, as DETR
    assert out[2]["bbox"] == pytest.approx([150.0, 75.0, 100.0, 50.0])


@pytest.mark.parametrize(
    "bad, reason",
    [
        ([], "top level"),
        ({"images": []}, "'annotations'"),
        ({**GT, "images": [{"id": "1", "file_name": "x"}]}, "images[0]"),
        ({**GT, "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}]}, "bbox"),
        ({**GT, "annotations": [{"id": 1, "image_id": 9, "category_id": 1, "bbox": A}]}, "image_id"),
    ],
)
def test_not_coco_fails_with_one_line(bad, reason, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(VtdemoError) as err:
        cc.read_annotations(path)
    assert "not a COCO instances file" in str(err.value) and reason in str(err.value)
    assert "\n" not in str(err.value)
    path.write_text("{not json")
    with pytest.raises(VtdemoError, match="not valid JSON"):
        cc.read_annotations(path)


def test_missing_area_and_iscrowd_are_filled():
    loose = {**GT, "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": A}]}
    checked = cc.check_annotations(loose)
    assert checked["annotations"][0]["area"] == 900 and checked["annotations"][0]["iscrowd"] == 0
    assert "area" not in loose["annotations"][0]


def test_images_are_matched_by_file_name():
    images = [{"id": 5, "file_name": "val/one.png"}, {"id": 6, "file_name": "z.png"}]
    ann = cc.check_annotations({**GT, "images": images, "annotations": []})
    assert cc.match_images(ann, ["one.png", "val/one.png", "sub/z.png", "other.png"]) == {
        "one.png": 5,
        "val/one.png": 5,
        "sub/z.png": 6,
    }
