"""ViT / DeiT at other input sizes: position embeddings resampled as timm's `resample_abs_pos_embed` (and as
transformers' `interpolate_pos_encoding` for transformers checkpoints), and outputs equal to the reference models
run at the new size with the same weights (timm `dynamic_img_size=True`, transformers `interpolate_pos_encoding`)."""

from __future__ import annotations

import pytest
import torch

from tests.support.hubcache import hub_state_dict
from tests.support.weights import randomise
from vtdemo.convert import vit as convert
from vtdemo.models.vit import VisionTransformer, ViTConfig, config_from_hf, config_from_timm, resample_pos_embed

timm = pytest.importorskip("timm")
from timm.layers import resample_abs_pos_embed  # noqa: E402

TINY_ARGS = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize(
    "old,new,prefix",
    [
        ((14, 14), (28, 28), 1),
        ((14, 14), (7, 7), 1),
        ((14, 14), (14, 20), 1),
        ((16, 16), (12, 21), 0),
        ((4, 4), (6, 3), 5),
        ((4, 4), (4, 4), 2),
    ],
)
def test_resampled_positions_equal_timm(old, new, prefix):
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, prefix + old[0] * old[1], 24, generator=g)
    ours = resample_pos_embed(pos, new, old, prefix)
    ref = resample_abs_pos_embed(pos, new_size=list(new), old_size=list(old), num_prefix_tokens=prefix)
    assert ours.shape == (1, prefix + new[0] * new[1], 24)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    assert torch.equal(ours[:, :prefix], pos[:, :prefix])  # prefix positions kept as they are


def _pair(arch: str, seed: int = 0):
    """Our tiny model and timm's (built with dynamic_img_size=True) on the same random weights."""
    ref = randomise(
        timm.create_model(arch, pretrained=False, num_classes=10, dynamic_img_size=True, **TINY_ARGS), seed, scale=0.2
    )
    ours = VisionTransformer(config_from_timm(arch, 10, TINY_ARGS)).eval()
    ours.load_state_dict(convert.from_timm(ref.state_dict()), strict=True)
    return ours, ref


@pytest.mark.parametrize(
    "arch",
    [
        "vit_tiny_patch16_224",
        "deit_tiny_distilled_patch16_224",
        "deit3_small_patch16_224",
        "vit_medium_patch16_reg4_gap_256",
        "vit_so150m_patch16_reg4_gap_256",
    ],
)
@pytest.mark.parametrize("size", [(32, 32), (48, 48), (16, 16), (32, 56), (40, 24)])
def test_tiny_outputs_at_other_sizes_equal_timm(arch, size):
    ours, ref = _pair(arch)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        out = ours(x)
        torch.testing.assert_close(out.logits, ref(x), atol=1e-4, rtol=0)
    assert out.grid == (size[0] // 8, size[1] // 8)


def test_timm_model_created_at_the_new_size_agrees():
    """timm's other route: a model built with img_size=48, its pos_embed resampled by timm at load time."""
    ours, ref32 = _pair("vit_tiny_patch16_224")
    ref48 = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=10, **dict(TINY_ARGS, img_size=48)
    ).eval()
    sd = timm.models.vision_transformer.checkpoint_filter_fn(ref32.state_dict(), ref48)  # resamples pos_embed
    ref48.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 48, 48)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x).logits, ref48(x), atol=1e-4, rtol=0)


def test_the_trained_size_uses_the_stored_embeddings_unchanged():
    ours, _ = _pair("vit_tiny_patch16_224")
    assert resample_pos_embed(ours.pos_embed, (4, 4), (4, 4), 1) is ours.pos_embed


def test_sizes_that_are_not_multiples_of_the_patch_are_refused():
    ours, _ = _pair("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match="multiples of the patch size 8"):
        ours(torch.randn(1, 3, 36, 32))
    fixed = VisionTransformer(ViTConfig(**TINY_ARGS, num_classes=10))  # built by hand: the trained size only
    with pytest.raises(ValueError, match="expects"):
        fixed(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("kind", ["vit", "deit-distilled"])
@pytest.mark.parametrize("size", [(48, 48), (32, 48), (24, 24)])
def test_transformers_checkpoints_follow_interpolate_pos_encoding(kind, size, tmp_path):
    transformers = pytest.importorskip("transformers")
    common = dict(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
        attn_implementation="eager",
    )
    if kind == "vit":
        ref = transformers.ViTForImageClassification(transformers.ViTConfig(**common))
    else:
        ref = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**common))
    ref = randomise(ref, 1, scale=0.2)
    config = ref.config.to_dict()
    config["architectures"] = [type(ref).__name__]
    ours = VisionTransformer(config_from_hf(config)).eval()
    ours.load_state_dict(convert.from_hf(hub_state_dict(ref, tmp_path)), strict=True)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        theirs = ref(pixel_values=x, interpolate_pos_encoding=True).logits
        torch.testing.assert_close(ours(x).logits, theirs, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(448, 448), (224, 336)])
def test_full_size_vit_b16_at_another_size_equals_timm(size):
    """ViT-B/16 trained at 224 (14x14 grid) run at 448 (28x28) and at 224x336 (14x21), random weights."""
    from tests.support.weights import randomise_classifier

    ref = randomise_classifier(timm.create_model("vit_base_patch16_224", pretrained=False, dynamic_img_size=True), 0)
    ours = VisionTransformer(config_from_timm("vit_base_patch16_224", 1000)).eval()
    ours.load_state_dict(convert.from_timm(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        out, expected = ours(x), ref(x)
    assert expected.std() > 0.5  # weights ~ 1/sqrt(fan_in): logits O(1), a non-trivial comparison
    torch.testing.assert_close(out.logits, expected, atol=1e-3, rtol=0)
    assert out.grid == (size[0] // 16, size[1] // 16)
