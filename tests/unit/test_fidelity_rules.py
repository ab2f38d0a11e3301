"""The fidelity guard's rules (`vtdemo.pipeline.fidelity`) on hand-made cases: what may differ between the fast and the
exact path, and what may not (issue 22 item 1)."""

from __future__ import annotations

import torch

from vtdemo.pipeline.fidelity import GUARD, kept_sets_agree, top5_agree, within_guard


def test_a_score_that_moves_by_a_hair_across_the_threshold_is_not_a_different_result():
    exact = torch.tensor([0.701, 0.699, 0.95, 0.10])
    fast = torch.tensor([0.699, 0.701, 0.95, 0.10])  # queries 0 and 1 swap sides of 0.7
    assert kept_sets_agree(exact, fast, 0.7)


def test_a_detection_that_appears_or_vanishes_far_from_the_threshold_is():
    exact = torch.tensor([0.75, 0.30])
    assert not kept_sets_agree(exact, torch.tensor([0.69, 0.30]), 0.7)  # exact 0.05 above: lost by fast
    assert not kept_sets_agree(exact, torch.tensor([0.75, 0.71]), 0.7)  # exact 0.40 below: gained by fast
    assert kept_sets_agree(exact, torch.tensor([0.69, 0.30]), 0.7, tol=0.06)  # a looser bar would let it pass


def _detr(**changes: float | bool) -> dict:
    gaps = {"score": 0.0, "box_px": 0.0, "sets_agree": True, "detections": 3, "decoder_map": 0.0, "encoder_map": 0.0}
    return {**gaps, **changes}


def test_within_guard_reads_every_bar_of_the_detr_guard():
    assert within_guard(_detr(score=0.02, box_px=3.0, decoder_map=0.02, encoder_map=0.02))  # on the bar: within
    assert not within_guard(_detr(score=0.021))
    assert not within_guard(_detr(box_px=3.01))
    assert not within_guard(_detr(decoder_map=0.03))
    assert not within_guard(_detr(encoder_map=0.03))
    assert not within_guard(_detr(sets_agree=False))
    assert GUARD["score"] == GUARD["map"] == 0.02 and GUARD["box_px"] == 3.0  # the numbers


def test_within_guard_reads_every_bar_of_the_classifier_guard():
    assert within_guard({"top5_agree": True, "dp": 0.02, "map": 0.02})
    assert not within_guard({"top5_agree": False, "dp": 0.0, "map": 0.0})
    assert not within_guard({"top5_agree": True, "dp": 0.021, "map": 0.0})
    assert not within_guard({"top5_agree": True, "dp": 0.0, "map": 0.021})


def test_two_classes_a_hair_apart_may_swap_places_five_and_six():
    """Seen on a CPU with AMX: bf16 swapped a tiny Swin's fifth and sixth classes, 0.00007 apart in probability."""
    exact = torch.tensor([0.30, 0.20, 0.15, 0.10, 0.0800, 0.0799, 0.01])
    swapped = torch.tensor([0.30, 0.20, 0.15, 0.10, 0.0799, 0.0800, 0.01])
    assert top5_agree(exact, swapped)


def test_a_class_far_from_the_fifth_entering_the_top5_is_a_different_result():
    exact = torch.tensor([0.30, 0.20, 0.15, 0.10, 0.08, 0.02, 0.01])
    risen = torch.tensor([0.30, 0.20, 0.15, 0.10, 0.01, 0.02, 0.09])  # class 6 (exact 0.01, 0.07 below the fifth)
    assert not top5_agree(exact, risen)
    assert top5_agree(exact, risen, tol=0.08)  # a looser bar would let it pass
