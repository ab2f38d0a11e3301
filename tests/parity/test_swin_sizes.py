"""Swin at another input size than it was trained at: same weights, grids / windows / shifts / masks rebuilt.

The reference is timm's own model created at the new size (`create_model(..., img_size=S)`) and timm's
`set_input_size` on the model built at the training size, holding the same weights; the explanations run on the
records of the resized model and follow its grid.
"""

from __future__ import annotations

import pytest
import torch

from tests.support.weights import randomise_classifier
from vtdemo.errors import UnsupportedModelError
from vtdemo.explain import swin as ex
from vtdemo.models.swin import PRESETS, SwinConfig, SwinTransformer, allowed_sizes, config_at_size, with_input_size

timm = pytest.importorskip("timm")

FULL = "swin_tiny_patch4_window7_224"
# Grids 16 / 8 / 4 at 64 px with window 4: at 128 px 32 / 16 / 8, so the last stage starts to shift.
TINY_ARGS = dict(patch_size=4, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4)
TINY = SwinConfig(img_size=64, num_classes=10, **TINY_ARGS)


def _pair(arch: str, cfg: SwinConfig, args: dict, new_size: int, seed: int):
    """(timm at the training size, timm created at new_size, ours resized), all holding the same random weights."""
    ref = randomise_classifier(
        timm.create_model(arch, pretrained=False, num_classes=cfg.num_classes, img_size=cfg.img_size, **args),
        seed,
        gain=1.0,
        bias=0.1,
    )
    big = timm.create_model(arch, pretrained=False, num_classes=cfg.num_classes, img_size=new_size, **args).eval()
    big.load_state_dict(ref.state_dict(), strict=True)  # the bias tables fit: each stage keeps its window
    ours = SwinTransformer(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # timm >= 0.9 names are ours
    return ref, big, with_input_size(ours, new_size)


def test_tiny_at_twice_the_size_matches_timm():
    ref, big, ours = _pair(FULL, TINY, TINY_ARGS, 128, seed=3)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = big(x)
        out = ours(x, return_attn=True)
        fast = ours(x).logits
        ref.set_input_size(img_size=(128, 128), window_size=4)  # timm in place, windows kept: the same model
        torch.testing.assert_close(ref(x), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast, expected, atol=1e-4, rtol=0)
    geometry = [(r.stage, r.grid, r.window, r.shift) for r in out.attentions]
    assert geometry == [
        (0, (32, 32), 4, 0),
        (0, (32, 32), 4, 2),
        (1, (16, 16), 4, 0),
        (1, (16, 16), 4, 2),
        (2, (8, 8), 4, 0),
        (2, (8, 8), 4, 2),
    ]  # at 64 px stage 2 was one window, never shifted
    timm_shifts = [blk.shift_size[0] for stage in big.layers for blk in stage.blocks]
    assert [r.shift for r in out.attentions] == timm_shifts


@pytest.mark.slow
def test_swin_t_at_448_matches_timm():
    cfg = PRESETS[FULL]
    _, big, ours = _pair(FULL, replace_classes(cfg, 1000), {}, 448, seed=5)
    x = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = big(x)
        got = ours(x).logits
    assert ours.layers[3].blocks[1].shift == 3  # grid 14 > window 7: the last stage now shifts too
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)


def replace_classes(cfg: SwinConfig, n: int) -> SwinConfig:
    from dataclasses import replace

    return replace(cfg, num_classes=n)


def test_sizes_that_need_padding_or_other_windows_are_refused_with_the_allowed_ones():
    cfg = PRESETS[FULL]
    assert allowed_sizes(cfg, 1000) == [224, 448, 672, 896]
    assert allowed_sizes(PRESETS["swin_base_patch4_window12_384"], 1000) == [384, 768]
    with pytest.raises(UnsupportedModelError, match="sizes it runs at: 224, 448, 672"):
        config_at_size(cfg, 288)  # grid 9 at the last stage: timm would pad it to 14
    with pytest.raises(UnsupportedModelError, match="sizes it runs at"):
        config_at_size(cfg, 112)  # last stage 3 x 3 < 7: a 3 x 3 window would need another bias table
    # timm agrees that at 112 px the last stage needs another table than the trained (2*7-1)^2 = 169 rows (its grid
    # 3.5 -> 4 is padded, the window clamped to 4):
    small = timm.create_model(FULL, pretrained=False, img_size=112)
    assert small.layers[3].blocks[0].attn.relative_position_bias_table.shape[0] == (2 * 4 - 1) ** 2
    assert config_at_size(cfg, 672).img_size == 672
    with pytest.raises(ValueError, match="expects input"):
        SwinTransformer(TINY)(torch.zeros(1, 3, 128, 128))  # the original model still wants its own size


def test_explanations_follow_the_new_grid():
    _, _, ours = _pair(FULL, TINY, TINY_ARGS, 128, seed=4)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        records = ours(x, return_attn=True).attentions
    roll = ex.rollout(records)
    assert roll.shape == (32, 32)
    torch.testing.assert_close(roll.sum(), torch.tensor(1.0))
    at = ex.window_attention_at(records, (0.3, 0.6), block=-1)
    assert at.shape == (8, 8)
    torch.testing.assert_close(at.sum(), torch.tensor(1.0))
    assert (at > 0).sum() <= 16  # inside one 4 x 4 window
    _, attns, grads = ex.class_gradients(ours, x, 1)
    relevance = ex.grad_rollout(attns, grads)
    assert relevance.shape == (32, 32) and torch.isfinite(relevance).all()


def test_resizing_keeps_the_original_and_its_device_state():
    model = SwinTransformer(TINY).eval().requires_grad_(False)
    bigger = with_input_size(model, 128)
    assert bigger is not model and model.cfg.img_size == 64 and bigger.cfg.img_size == 128
    assert not any(p.requires_grad for p in bigger.parameters()) and not bigger.training
    assert with_input_size(model, 64) is model
    for a, b in zip(model.state_dict().values(), bigger.state_dict().values(), strict=False):
        assert torch.equal(a, b)
