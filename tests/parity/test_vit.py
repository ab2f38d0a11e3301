"""ViT / DeiT: our model against timm and transformers on the same weights and the same images."""

from __future__ import annotations

import pytest
import torch

from tests.support.hubcache import hub_state_dict
from tests.support.weights import randomise
from vtdemo import preprocess
from vtdemo.convert import vit as convert
from vtdemo.models.vit import VisionTransformer, ViTConfig, config_from_hf, config_from_timm

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)


def test_tiny_shapes_attention_rows_and_paths_agree():
    model = randomise(VisionTransformer(ViTConfig(**TINY)))
    x = torch.randn(3, 3, 32, 32)
    fast = model(x)
    slow = model(x, return_attn=True)
    assert fast.logits.shape == (3, 10) and fast.attentions is None
    assert len(slow.attentions) == 2
    for attn in slow.attentions:
        assert attn.shape == (3, 2, 17, 17)  # 1 CLS + 4x4 patches
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, 2, 17))
    torch.testing.assert_close(fast.logits, slow.logits, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(fast.logits).all()


def test_wrong_input_size_is_refused():
    model = VisionTransformer(ViTConfig(**TINY))
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("arch,distilled", [("vit_tiny_patch16_224", False), ("deit_tiny_distilled_patch16_224", True)])
def test_tiny_parity_with_timm(arch, distilled):
    timm = pytest.importorskip("timm")
    ref = randomise(timm.create_model(arch, pretrained=False, **TINY))
    args = {k: v for k, v in TINY.items() if k != "num_classes"}
    ours = VisionTransformer(config_from_timm(arch, 10, args)).eval()
    ours.load_state_dict(convert.from_timm(ref.state_dict()), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x).logits, ref(x), atol=1e-4, rtol=0)
    assert ours.cfg.num_prefix_tokens == (2 if distilled else 1)


@pytest.mark.slow
def test_full_size_parity_with_timm_on_a_photo(photos):
    """ViT-B/16 at 224 with timm's own eval transform vs ours: inputs equal and logits within 1e-3."""
    timm = pytest.importorskip("timm")
    ref = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    ours = VisionTransformer(config_from_timm("vit_base_patch16_224", 1000)).eval()
    ours.load_state_dict(convert.from_timm(ref.state_dict()), strict=True)
    pretrained_cfg = dict(
        input_size=(3, 224, 224),
        interpolation="bicubic",
        crop_pct=0.9,
        crop_mode="center",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    transform = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg))
    x_ref = transform(photos["chelsea"]).unsqueeze(0)
    x = preprocess.classifier_input(photos["chelsea"], preprocess.config_from_timm(pretrained_cfg))
    torch.testing.assert_close(x, x_ref, atol=1e-6, rtol=0)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x).logits, ref(x_ref), atol=1e-3, rtol=0)


def _hf_tiny(kind: str):
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
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**common))
    elif kind == "deit":
        model = transformers.DeiTForImageClassification(transformers.DeiTConfig(**common))
    else:
        model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**common))
    return randomise(model)


@pytest.mark.parametrize("kind", ["vit", "deit", "deit-distilled"])
def test_tiny_parity_with_transformers(kind, tmp_path):
    ref = _hf_tiny(kind)
    config = ref.config.to_dict()
    config["architectures"] = [type(ref).__name__]
    cfg = config_from_hf(config)
    assert cfg.distill_head == (kind == "deit-distilled") and cfg.ln_eps == ref.config.layer_norm_eps
    ours = VisionTransformer(cfg).eval()
    ours.load_state_dict(convert.from_hf(hub_state_dict(ref, tmp_path)), strict=True)  # strict: every key consumed
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        theirs = ref(pixel_values=x, output_attentions=True)
        mine = ours(x, return_attn=True)
    torch.testing.assert_close(mine.logits, theirs.logits, atol=1e-4, rtol=0)
    for a, b in zip(mine.attentions, theirs.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_qkv_merge_puts_query_key_value_rows_in_order(tmp_path):
    sd = hub_state_dict(_hf_tiny("vit"), tmp_path)
    merged = convert.from_hf(sd)["blocks.0.attn.qkv.weight"]
    q = sd["vit.encoder.layer.0.attention.attention.query.weight"]
    v = sd["vit.encoder.layer.0.attention.attention.value.weight"]
    assert torch.equal(merged[:32], q) and torch.equal(merged[64:], v)


@pytest.mark.slow
def test_full_size_parity_with_transformers_on_a_photo(photos, tmp_path):
    """google/vit-base-patch16-224's architecture and preprocessing, random weights: logits within 1e-3."""
    transformers = pytest.importorskip("transformers")
    ref = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000)).eval()
    processor = transformers.ViTImageProcessor(
        size={"height": 224, "width": 224}, resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    x_ref = processor(photos["astronaut"], return_tensors="pt")["pixel_values"]
    pp = preprocess.config_from_hf(processor.to_dict())
    x = preprocess.classifier_input(photos["astronaut"], pp)
    torch.testing.assert_close(x, x_ref, atol=1e-6, rtol=0)
    ours = VisionTransformer(config_from_hf(ref.config.to_dict())).eval()
    ours.load_state_dict(convert.from_hf(hub_state_dict(ref, tmp_path)), strict=True)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x).logits, ref(pixel_values=x_ref).logits, atol=1e-3, rtol=0)
