"""Grad-CAM for ViT / DeiT and Swin against pytorch-grad-cam (jacobgil, `grad-cam` on PyPI) on the same weights.

The reference runs on timm's models (its own hooks, its own `reshape_transform` as in its ViT / Swin examples); ours
runs on our models loaded from timm's state dict through our converters. Expected numbers come from the library
or from a hand computation, never from our code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vtdemo.convert import swin as swin_convert
from vtdemo.convert import vit as vit_convert
from vtdemo.explain import gradcam as ex
from vtdemo.models.swin import SwinTransformer
from vtdemo.models.swin import config_from_timm as swin_config
from vtdemo.models.vit import VisionTransformer
from vtdemo.models.vit import config_from_timm as vit_config

timm = pytest.importorskip("timm")
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from tests.support.weights import randomise_classifier  # noqa: E402

VIT_ARGS = dict(img_size=64, patch_size=8, embed_dim=32, depth=3, num_heads=2)
SWIN_ARGS = dict(img_size=64, patch_size=4, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4)


class RawGradCAM(pgc.GradCAM):  # type: ignore[name-defined]
    """pytorch-grad-cam's GradCAM, also keeping its map before the [0, 1] scaling and the resize (batch of one)."""

    def get_cam_image(self, *args, **kwargs):
        cam = super().get_cam_image(*args, **kwargs)
        self.raw = np.maximum(cam, 0)[0]  # the library's own ReLU, in `compute_cam_per_layer`
        return cam


def reference(model, layer, reshape, x, class_index, grid):
    cam = RawGradCAM(model=model, target_layers=[layer], reshape_transform=reshape)
    cam.get_target_width_height = lambda _x: (grid[1], grid[0])  # (width, height): cv2.resize becomes a no-op
    scaled = cam(input_tensor=x, targets=[ClassifierOutputTarget(class_index)])[0]
    return torch.from_numpy(cam.raw), torch.from_numpy(scaled)


def min_max(m: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's `scale_cam_image` without the resize."""
    m = m - m.min()
    return m / (1e-7 + m.max())


def test_gradcam_by_hand():
    # Two channels on a 1 x 2 grid. Gradients: channel 0 mean (1 + 3) / 2 = 2, channel 1 mean (-1 - 3) / 2 = -2.
    act = torch.tensor([[[1.0, 2.0], [3.0, 1.0]]])  # [1, 2, C=2]: cell (0, 0) = (1, 2), cell (0, 1) = (3, 1)
    grad = torch.tensor([[[1.0, -1.0], [3.0, -3.0]]])
    # cell (0, 0): 2*1 - 2*2 = -2 -> ReLU 0; cell (0, 1): 2*3 - 2*1 = 4
    torch.testing.assert_close(ex.gradcam(act, grad), torch.tensor([[0.0, 4.0]]))


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_vit_gradcam_matches_pytorch_grad_cam(arch, photos):
    ref = randomise_classifier(timm.create_model(arch, pretrained=False, num_classes=10, **VIT_ARGS), seed=3)
    ours = VisionTransformer(vit_config(arch, 10, VIT_ARGS)).eval()
    ours.load_state_dict(vit_convert.from_timm(ref.state_dict()), strict=True)
    prefix, grid = ours.cfg.num_prefix_tokens, ours.cfg.grid_size

    def reshape_transform(t: torch.Tensor) -> torch.Tensor:  # the library's ViT example, prefix made explicit
        r = t[:, prefix:, :].reshape(t.size(0), grid[0], grid[1], t.size(2))
        return r.transpose(2, 3).transpose(1, 2)

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for c in (0, 7):
        raw, scaled = reference(ref, ref.blocks[-1].norm1, reshape_transform, x, c, grid)
        m = ex.vit_gradcam(ours, x, c)
        assert m.shape == grid and float(m.max()) > 0
        torch.testing.assert_close(m, raw, atol=1e-5 * float(raw.max()), rtol=1e-4)
        torch.testing.assert_close(min_max(m), scaled, atol=1e-3, rtol=0)  # float32 scaling, eps 1e-7
    # another block: the reference on that block too
    raw, _ = reference(ref, ref.blocks[1].norm1, reshape_transform, x, 2, grid)
    torch.testing.assert_close(ex.vit_gradcam(ours, x, 2, block=1), raw, atol=1e-5 * float(raw.max()), rtol=1e-4)


def test_vit_gradcam_at_another_input_size_matches_pytorch_grad_cam():
    arch = "vit_tiny_patch16_224"
    ref = timm.create_model(arch, pretrained=False, num_classes=10, dynamic_img_size=True, **VIT_ARGS)
    ref = randomise_classifier(ref, seed=5)
    ours = VisionTransformer(vit_config(arch, 10, VIT_ARGS)).eval()
    ours.load_state_dict(vit_convert.from_timm(ref.state_dict()), strict=True)
    grid = (12, 8)  # a 96 x 64 input of a model trained at 64 x 64 (8 x 8 patches)

    def reshape_transform(t: torch.Tensor) -> torch.Tensor:
        r = t[:, 1:, :].reshape(t.size(0), grid[0], grid[1], t.size(2))
        return r.transpose(2, 3).transpose(1, 2)

    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(1))
    raw, _ = reference(ref, ref.blocks[-1].norm1, reshape_transform, x, 4, grid)
    m = ex.vit_gradcam(ours, x, 4)
    assert m.shape == grid and float(m.max()) > 0
    torch.testing.assert_close(m, raw, atol=1e-5 * float(raw.max()), rtol=1e-4)


def test_swin_gradcam_matches_pytorch_grad_cam():
    arch = "swin_tiny_patch4_window7_224"
    ref = randomise_classifier(
        timm.create_model(arch, pretrained=False, num_classes=10, **SWIN_ARGS), seed=4, gain=1.0, bias=0.1
    )
    ours = SwinTransformer(swin_config(arch, 10, SWIN_ARGS)).eval()
    ours.load_state_dict(swin_convert.from_timm(ref.state_dict()), strict=True)

    def reshape_transform(t: torch.Tensor) -> torch.Tensor:  # timm's Swin stages are [B, H, W, C] already
        return t.permute(0, 3, 1, 2)  # [B, C, H, W]

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for stage, grid in ((-1, (4, 4)), (1, (8, 8))):
        for c in (1, 5):
            raw, scaled = reference(ref, ref.layers[stage], reshape_transform, x, c, grid)
            m = ex.swin_gradcam(ours, x, c, stage=stage)
            assert m.shape == grid
            torch.testing.assert_close(m, raw, atol=1e-5 * max(float(raw.max()), 1e-6), rtol=1e-4)
            if float(raw.max()) > 0:
                torch.testing.assert_close(min_max(m), scaled, atol=1e-3, rtol=0)  # float32 scaling, eps 1e-7


def test_gradcam_leaves_no_gradients_and_no_hooks():
    model = randomise_classifier(VisionTransformer(vit_config("vit_tiny_patch16_224", 10, VIT_ARGS)), seed=0)
    model.requires_grad_(False)
    x = torch.randn(1, 3, 64, 64)
    ex.vit_gradcam(model, x, 0)
    assert all(p.grad is None for p in model.parameters())
    assert not model.blocks[-1].norm1._forward_hooks
    with pytest.raises(ValueError, match="one image"):
        ex.vit_gradcam(model, torch.randn(2, 3, 64, 64), 0)
