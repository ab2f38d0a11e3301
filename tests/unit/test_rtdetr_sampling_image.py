"""The Detect tab's drawing of an RT-DETR detection's sampling points (`vtdemo.ui.detect.views.sampling_image`) on a
hand-made run: the strongest point is a large red dot where it should be, a weak one a small blue dot, a point outside
the photo is skipped without error, one head can be shown alone, and a wrong head is one line."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio")

from vtdemo.errors import ExplainError  # noqa: E402
from vtdemo.explain.rtdetr import SamplingPoints  # noqa: E402
from vtdemo.ui.detect.views import sampling_image  # noqa: E402


def _points() -> SamplingPoints:
    locations = torch.tensor(
        [
            [[[0.25, 0.25], [1.5, 0.5]]],  # head 0: strong point at (100, 50), one outside the photo
            [[[0.75, 0.75], [0.5, 0.5]]],  # head 1: weak point at (300, 150), another at the centre
        ]
    )  # [nh=2, L=1, P=2, 2]
    weights = torch.tensor([[[0.9, 0.1]], [[0.05, 0.95]]])  # [2, 1, 2]
    return SamplingPoints(locations, weights, torch.tensor([0.5, 0.5, 0.2, 0.2]), 1, [(8, 8)])


def test_dots_sit_where_the_points_are_sized_and_coloured_by_weight():
    run = SimpleNamespace(image=Image.new("RGB", (400, 200), (128, 128, 128)))
    picture = np.asarray(sampling_image(run, _points(), None, [90.0, 40.0, 500.0, 190.0], opacity=0.0))
    assert picture.shape == (200, 400, 3)
    r, g, b = picture[50, 100].astype(int)  # the strong point (0.9 of the top weight 0.95): red
    assert r > 150 and b < 100
    r, g, b = picture[150, 300].astype(int)  # the weak point: blue
    assert b > 100 and r < 80
    assert (picture[50, 107] != 128).any() and (picture[150, 307] == 128).all()  # big dot vs small dot
    one = np.asarray(sampling_image(run, _points(), 1, [90.0, 40.0, 500.0, 190.0], opacity=0.0))
    assert (one[50, 100] == 128).all() and not (one[100, 200] == 128).all()  # head 0's point gone, head 1's there
    with pytest.raises(ExplainError, match="head 2 is out of range"):
        sampling_image(run, _points(), 2, [0.0, 0.0, 1.0, 1.0])
