"""DINO's 60 % mass rule and DINOv2's PCA background rule on hand-worked cases (`vtdemo.explain.dino`)."""

from __future__ import annotations

import torch

from vtdemo.explain.dino import feature_colours, head_maps, mass_mask


def test_mass_mask_keeps_the_largest_values_up_to_sixty_percent_of_the_mass():
    # head 0: 0.5 alone is 50 % < 60 %, so 0.3 joins (80 %): sorted ascending 0.1 0.1 0.3 0.5, cumsum .1 .2 .5 1.0,
    # kept where > 0.4 -> the 0.3 and the 0.5. head 1: 0.7 alone is 70 % >= 60 %: only it.
    # head 2 (not normalised: total 4): 2 / 4 = 50 %, then 1 -> 75 %: the 2 and one 1 (ties keep the later-sorted).
    maps = torch.tensor([[0.5, 0.1, 0.3, 0.1], [0.1, 0.7, 0.1, 0.1], [1.0, 2.0, 0.5, 0.5]])
    kept = mass_mask(maps)
    assert kept[0].tolist() == [True, False, True, False]
    assert kept[1].tolist() == [False, True, False, False]
    assert kept[2].tolist()[1] is True and sum(kept[2].tolist()) == 2 and kept[2].tolist()[2:] == [False, False]
    assert mass_mask(maps, keep=1.0).all()  # all of the mass: every patch
    assert mass_mask(maps.view(3, 2, 2)).shape == (3, 2, 2)


def test_head_maps_read_the_cls_row_of_each_head_over_the_patches():
    attn = torch.zeros(2, 1 + 4 + 6, 1 + 4 + 6)  # CLS + 4 registers + a 2x3 grid
    attn[0, 0, 5:] = torch.arange(6.0)
    attn[1, 0, 5:] = 1.0
    attn[1, 1, 5:] = 9.0  # a register's row: not read
    maps = head_maps(attn, num_prefix=5, grid=(2, 3))
    assert maps.shape == (2, 2, 3)
    assert maps[0].tolist() == [[0, 1, 2], [3, 4, 5]] and (maps[1] == 1).all()


def _photo(object_value: float, background_value: float, parts: list[float], g: torch.Generator) -> torch.Tensor:
    """A 4x4 grid of 8-dim features: the 2x2 centre is the object (dim 0 = object_value, its four patches differ
    along dims 1-2 by `parts`), the 12 border patches background (dim 0 = background_value) with tiny noise."""
    F = torch.randn(4, 4, 8, generator=g) * 0.01
    F[..., 0] += background_value
    centre = [(1, 1), (1, 2), (2, 1), (2, 2)]
    for (r, c), p in zip(centre, parts, strict=True):
        F[r, c, 0] = object_value
        F[r, c, 1] += p
        F[r, c, 2] += 0.3 * p * p  # a second, smaller direction, uncorrelated with the first
    return F.reshape(16, 8)


CENTRE = torch.zeros(4, 4, dtype=torch.bool)
CENTRE[1:3, 1:3] = True


def test_foreground_is_the_side_of_the_first_component_away_from_the_border_whatever_its_sign():
    g = torch.Generator().manual_seed(0)
    for obj, bg in ((10.0, 0.0), (0.0, 10.0), (-5.0, 5.0)):  # the object high, low, or negative on dimension 0
        (colours,) = feature_colours([_photo(obj, bg, [1.0, 2.0, -1.0, -2.0], g)], [(4, 4)])
        assert torch.equal(colours.foreground, CENTRE)
        assert (colours.rgb[~CENTRE] == 0).all()  # background black
        assert colours.first[CENTRE].min() > 0.5 > colours.first[~CENTRE].max()
        # the second PCA, over the four object patches only: its first component is dimension 1 (the largest
        # spread), sign chosen so that its largest loading is positive -> red follows the parts' values
        red = colours.rgb[..., 0][CENTRE]
        assert torch.allclose(red, torch.tensor([1.0, 2.0, -1.0, -2.0]).add(2).div(4), atol=0.02)


def test_one_pca_on_two_photos_gives_matching_parts_the_same_colour():
    g = torch.Generator().manual_seed(1)
    a = _photo(10.0, 0.0, [1.0, 2.0, -1.0, -2.0], g)
    b = _photo(10.0, 0.0, [-2.0, -1.0, 2.0, 1.0], g)  # the same four parts, in another order
    ca, cb = feature_colours([a, b], [(4, 4), (4, 4)])
    assert torch.equal(ca.foreground, CENTRE) and torch.equal(cb.foreground, CENTRE)
    pa, pb = ca.rgb[CENTRE], cb.rgb[CENTRE]  # [4, 3] each, row-major over the centre
    for i, j in ((0, 3), (1, 2), (2, 1), (3, 0)):  # the parts 1, 2, -1, -2 in a; where each sits in b
        # red and green: the two directions the parts differ along (blue holds only the noise here)
        assert torch.allclose(pa[i, :2], pb[j, :2], atol=0.03)
    # fitted apart, the same part need not get the same colour: each photo's own min-max
    (alone,) = feature_colours([b[:, :]], [(4, 4)])
    assert alone.rgb.shape == (4, 4, 3)
