"""Swin stage colours: PCA by hand and against scikit-learn, stage tokens against timm's own intermediates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.weights import randomise_classifier
from vtdemo.convert.swin import from_timm
from vtdemo.explain import stages
from vtdemo.models.swin import SwinTransformer, config_from_timm

ARGS = dict(img_size=64, patch_size=4, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16), window_size=4)


def test_pca_by_hand():
    # 4 tokens on a 2 x 2 grid, C = 3: (1,0,0), (-1,0,0), (0,2,0), (0,-2,0). Mean 0. Variance along y is
    # (4 + 4) / 4 = 2, along x (1 + 1) / 4 = 0.5, along z 0: components e_y, e_x, none; explained 0.8, 0.2, 0.
    tokens = torch.tensor([[[1.0, 0, 0], [-1, 0, 0]], [[0, 2, 0], [0, -2, 0]]])
    rgb, explained, comps = stages.pca_rgb(tokens)
    assert explained == pytest.approx([0.8, 0.2, 0.0])
    torch.testing.assert_close(comps, torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 0]]))
    # channel 0 = projection on e_y = (0, 0, 2, -2) -> min-max (0.5, 0.5, 1, 0); channel 1 on e_x = (1, -1, 0, 0)
    # -> (1, 0, 0.5, 0.5); channel 2 constant -> 0
    torch.testing.assert_close(rgb[..., 0], torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    torch.testing.assert_close(rgb[..., 1], torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    assert float(rgb[..., 2].abs().sum()) == 0.0


def test_pca_matches_scikit_learn():
    decomposition = pytest.importorskip("sklearn.decomposition")
    tokens = torch.randn(6, 5, 16, generator=torch.Generator().manual_seed(0)) * torch.linspace(3, 0.1, 16)
    rgb, explained, comps = stages.pca_rgb(tokens)
    ref = decomposition.PCA(n_components=3, svd_solver="full").fit(tokens.reshape(30, 16).double().numpy())
    np.testing.assert_allclose(explained, ref.explained_variance_ratio_, rtol=1e-6)
    proj = ref.transform(tokens.reshape(30, 16).double().numpy())  # [30, 3]
    for k in range(3):
        sign = np.sign(np.dot(comps[k].double().numpy(), ref.components_[k]))  # sklearn picks its own signs
        p = proj[:, k] * sign
        expected = (p - p.min()) / (p.max() - p.min())
        np.testing.assert_allclose(rgb[..., k].reshape(30).numpy(), expected, atol=1e-5)


def test_stage_tokens_are_timms_intermediates():
    timm = pytest.importorskip("timm")
    arch = "swin_tiny_patch4_window7_224"
    ref = randomise_classifier(
        timm.create_model(arch, pretrained=False, num_classes=10, **ARGS), seed=2, gain=1.0, bias=0.1
    )
    ours = SwinTransformer(config_from_timm(arch, 10, ARGS)).eval()
    ours.load_state_dict(from_timm(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)  # NCHW per stage, no final norm
    got = stages.stage_tokens(ours, x)
    assert [tuple(t.shape) for t in got] == [(16, 16, 32), (8, 8, 64), (4, 4, 128), (2, 2, 256)]
    for t, e in zip(got, expected, strict=True):
        torch.testing.assert_close(t, e[0].permute(1, 2, 0), atol=1e-4, rtol=1e-4)  # [C, H, W] -> [H, W, C]
    result = stages.stage_pca(ours, x)
    assert [r.grid for r in result] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for r in result:
        assert r.rgb.shape == (*r.grid, 3) and float(r.rgb.min()) >= 0 and float(r.rgb.max()) <= 1
        assert sum(r.explained) <= 1 + 1e-6 and r.explained == sorted(r.explained, reverse=True)
    assert not ours.layers[0]._forward_hooks  # hooks removed
