"""The perturbation protocol of Chefer et al. (CVPR 2021) on cases whose answer is known.

- A hand-built classifier that looks only at two patches: the map that marks them must win both tests, a map that
  marks the other patches must lose them, and the random baseline must sit in between.
- Areas by hand for short curves, and against scipy's trapezoid rule.
- The removal step against a transcription of the reference code (`torch.topk` on the map, `scatter_` 0 into the
  [0, 1] image, then normalise) on a map without ties.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.integrate import trapezoid

from vtdemo.evaluate import perturbation as pt

SIZE, PATCH = 32, 8
GRID = (SIZE // PATCH, SIZE // PATCH)
IMPORTANT = ((1, 1), (2, 2))  # the only patches the model reads
MEAN = STD = (0.5, 0.5, 0.5)


def two_patch_model(batch: torch.Tensor) -> torch.Tensor:
    """[B, 3, 32, 32] normalised -> logits [B, 2]: class 0 = mean of the two important patches, class 1 = 0.

    On a white image class 0 scores 1; removing (blackening, -1 after normalising) a fraction r of the important
    pixels gives 1 - 2r, so the prediction flips to class 1 once more than half of them are gone.
    """
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    for r, c in IMPORTANT:
        mask[r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH] = True
    score = batch.mean(1)[:, mask].mean(-1)  # [B]
    return torch.stack([score, torch.zeros_like(score)], -1)  # [B, 2]


def predict(batch: torch.Tensor) -> torch.Tensor:
    return two_patch_model(batch).argmax(-1)


def grid_map(high: bool) -> torch.Tensor:
    """1 on the important patches and 0 elsewhere (high=True), or the opposite."""
    m = torch.zeros(GRID) if high else torch.ones(GRID)
    for r, c in IMPORTANT:
        m[r, c] = 1.0 if high else 0.0
    return m


def test_the_right_map_beats_random_and_random_beats_the_wrong_map():
    x = torch.ones(1, 3, SIZE, SIZE)  # white, normalised
    blank = pt.blank_value(MEAN, STD)
    assert torch.equal(blank, torch.full((3,), -1.0))
    assert int(predict(x)) == 0
    maps = {"right": grid_map(True), "wrong": grid_map(False)}
    maps.update({f"random{s}": pt.random_map(GRID, s) for s in range(16)})
    hits = pt.perturbation_hits(predict, x, maps, target=0, blank=blank, unperturbed_hit=True, batch_size=7)
    auc = {m: {t: pt.area(h[t]) for t in pt.TESTS} for m, h in hits.items()}
    random = {t: sum(auc[f"random{s}"][t] for s in range(16)) / 16 for t in pt.TESTS}
    # Worked out by hand: the right map's first 10 % (102 px) all fall inside the 128 important pixels -> the
    # prediction flips at once in the positive test and never in the negative one (at 90 % 103 important pixels
    # remain, r = 0.2); the wrong map is the mirror image.
    assert hits["right"]["positive"] == [1] + [0] * 9 and auc["right"]["positive"] == pytest.approx(5.0)
    assert hits["right"]["negative"] == [1] * 10 and auc["right"]["negative"] == pytest.approx(90.0)
    assert hits["wrong"]["negative"] == [1] + [0] * 9 and auc["wrong"]["negative"] == pytest.approx(5.0)
    assert hits["wrong"]["positive"] == [1] * 10
    assert auc["right"]["negative"] > random["negative"] + 10 > auc["wrong"]["negative"] + 20
    assert auc["right"]["positive"] + 20 < random["positive"] + 10 < auc["wrong"]["positive"]


def test_areas_by_hand():
    assert pt.area([1, 1, 0], steps=(0.1, 0.2)) == pytest.approx(15.0)  # 100 * (0.1 * 1 + 0.1 * 0.5)
    assert pt.area([1, 0, 0], steps=(0.1, 0.2)) == pytest.approx(5.0)
    assert pt.area([0.8, 0.6, 0.2], steps=(0.5, 1.0)) == pytest.approx(100 * (0.5 * 0.7 + 0.5 * 0.4))
    assert pt.area([1] * 10) == pytest.approx(90.0)  # the x axis ends at 0.9
    hits = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    assert pt.area(hits) == pytest.approx(100 * trapezoid(hits, [0.0, *pt.STEPS]))
    with pytest.raises(ValueError):
        pt.area([1, 1])


def reference_perturbed(data: torch.Tensor, vis: torch.Tensor, step: float, negative: bool) -> torch.Tensor:
    """Transcribed from hila-chefer/Transformer-Explainability `pertubation_eval_from_hdf5.py` (one image):
    data [1, 3, H, W] in [0, 1], vis [1, 1, H, W]; returns the normalised perturbed input."""
    org_shape = data.shape
    vis = (-vis if negative else vis).reshape(org_shape[0], -1)
    _, idx = torch.topk(vis, int(org_shape[2] * org_shape[3] * step), dim=-1)
    idx = idx.unsqueeze(1).repeat(1, org_shape[1], 1)
    _data = data.clone().reshape(org_shape[0], org_shape[1], -1).scatter_(-1, idx, 0).reshape(*org_shape)
    mean = torch.tensor(MEAN)[None, :, None, None]
    std = torch.tensor(STD)[None, :, None, None]
    return (_data - mean) / std


@pytest.mark.parametrize("test", pt.TESTS)
def test_removal_matches_the_reference_code_on_a_map_without_ties(test):
    g = torch.Generator().manual_seed(0)
    data = torch.rand(1, 3, 24, 24, generator=g)
    vis = torch.rand(24, 24, generator=g)  # full resolution: upsampling to the same size is the identity
    x = (data - 0.5) / 0.5
    pixel_map = pt.upsample(vis, (24, 24))
    assert torch.allclose(pixel_map, vis)
    order = pt.removal_order(pixel_map, test)
    for step, count in zip(pt.STEPS, pt.removed_counts(24 * 24), strict=False):
        ours = pt.perturb(x, order, count, pt.blank_value(MEAN, STD))
        theirs = reference_perturbed(data, vis[None, None], step, negative=test == "negative")
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_upsampling_is_the_reference_bilinear_scale_factor_16():
    m = torch.rand(14, 14, generator=torch.Generator().manual_seed(1))
    ref = F.interpolate(m[None, None], scale_factor=16, mode="bilinear")[0, 0]
    assert torch.allclose(pt.upsample(m, (224, 224)), ref)


def test_counts_and_ties():
    assert pt.removed_counts(224 * 224)[:3] == [5017, 10035, 15052]
    flat = torch.tensor([[0.5, 0.9], [0.5, 0.1]])
    assert pt.removal_order(flat, "positive").tolist() == [1, 0, 2, 3]  # equal values: row-major order
    assert pt.removal_order(flat, "negative").tolist() == [3, 0, 2, 1]
    with pytest.raises(ValueError):
        pt.removal_order(flat, "sideways")
