"""DeiT III (LayerScale) and ViTs with registers (average-pool readout): our presets against timm's own
definitions, and checkpoints written by timm's `save_for_hf` loaded through the real Hub path (offline)."""

from __future__ import annotations

import json

import pytest
import torch

import vtdemo
from tests.support.hubcache import write_timm_repo
from tests.support.weights import randomise, randomise_classifier
from vtdemo import loader
from vtdemo.convert import vit as convert
from vtdemo.errors import UnsupportedModelError
from vtdemo.models.vit import PRESETS, VisionTransformer, config_from_timm

timm = pytest.importorskip("timm")

TINY_ARGS = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
NEW = sorted(n for n in PRESETS if n.startswith("deit3_") or "_reg" in n)


@pytest.mark.parametrize("name", NEW)
def test_presets_build_exactly_timms_architecture(name):
    """Same parameter names and shapes as timm's model of that name (built on the meta device: no memory), and the
    same prefix tokens and readout."""
    ref = timm.create_model(name, pretrained=False, device="meta")
    with torch.device("meta"):
        ours = VisionTransformer(PRESETS[name])
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    cfg = PRESETS[name]
    assert cfg.num_prefix_tokens == ref.num_prefix_tokens and cfg.readout == ref.global_pool
    assert cfg.no_embed_class == ref.no_embed_class and cfg.class_token == ref.has_class_token
    gammas = [m.gamma for m in ref.modules() if type(m).__name__ == "LayerScale"]
    if cfg.init_values is None:
        assert not gammas
    else:
        assert gammas and ours.blocks[0].ls1.gamma.shape == gammas[0].shape


@pytest.mark.parametrize(
    "arch",
    [
        "deit3_small_patch16_224",
        "vit_medium_patch16_reg4_gap_256",
        "vit_base_patch16_reg4_gap_256",
        "vit_so150m2_patch16_reg1_gap_256",
    ],
)
def test_tiny_parity_and_attention_path(arch):
    ref = randomise(timm.create_model(arch, pretrained=False, num_classes=10, **TINY_ARGS), 3, scale=0.2)
    ours = VisionTransformer(config_from_timm(arch, 10, TINY_ARGS)).eval()
    ours.load_state_dict(convert.from_timm(ref.state_dict()), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        fast = ours(x)
        slow = ours(x, return_attn=True, return_tokens=True)
        torch.testing.assert_close(fast.logits, ref(x), atol=1e-4, rtol=0)
        torch.testing.assert_close(slow.logits, fast.logits, atol=1e-5, rtol=0)
        # timm's own block outputs (forward_intermediates: the residual stream after each block, no norm)
        _, inter = ref.forward_intermediates(x, output_fmt="NLC", return_prefix_tokens=True, norm=False)
    N = ours.cfg.num_prefix_tokens + 16
    assert slow.attentions[0].shape == (2, 2, N, N) and len(slow.tokens) == 2
    for mine, (patches, prefix) in zip(slow.tokens, inter, strict=False):
        torch.testing.assert_close(mine, torch.cat([prefix, patches], dim=1), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "arch", ["vit_pwee_patch16_reg1_gap_256", "vit_base_patch16_rope_reg1_gap_256", "vit_so150m_patch16_reg4_map_256"]
)
def test_other_register_models_are_refused_by_name(arch):
    with pytest.raises(UnsupportedModelError, match="not supported.*deit3_base_patch16_384"):
        config_from_timm(arch, 1000)


def test_unsupported_readout_in_model_args_is_refused():
    with pytest.raises(UnsupportedModelError, match="readout 'map'"):
        config_from_timm("vit_medium_patch16_reg4_gap_256", 10, {"global_pool": "map"})


def _top(logits: torch.Tensor, k: int):
    p, i = logits.softmax(-1)[0].topk(k)
    return p.tolist(), i.tolist()


def _check_hub_round_trip(
    hf_cache, tmp_path, photo, name: str, model_args: dict, num_classes: int, seed: int, full_size: bool, atol: float
):
    """timm model (with the tag's pretrained_cfg) -> save_for_hf -> temporary cache -> vtdemo.classify, against
    timm's own eval transform from the written pretrained_cfg and timm's forward."""
    ref = timm.create_model(name, pretrained=False, num_classes=num_classes, **model_args)
    # full size: weights ~ gain / sqrt(fan_in), so activations and logits stay O(1) through 12 blocks
    ref = randomise_classifier(ref, seed) if full_size else randomise(ref, seed, scale=0.2)
    repo = f"timm/{name}"
    snap = write_timm_repo(hf_cache, repo, ref, model_args, tmp_path, formats=("model.safetensors",))
    written = json.loads((snap / "config.json").read_text())
    data_cfg = timm.data.resolve_data_config(pretrained_cfg=written["pretrained_cfg"])
    x_ref = timm.data.create_transform(**data_cfg)(photo).unsqueeze(0)
    loaded = loader.load(repo)
    from vtdemo import preprocess

    x = preprocess.classifier_input(photo, loaded.preprocess)
    torch.testing.assert_close(x, x_ref, atol=1e-6, rtol=0)  # the checkpoint's own preprocessing
    with torch.inference_mode():
        logits_ref = ref(x_ref)
        assert logits_ref.std() > (0.5 if full_size else 0.1)  # a non-trivial output to compare
        torch.testing.assert_close(loaded.model(x).logits, logits_ref, atol=atol, rtol=0)
    result = vtdemo.classify(photo, model=repo, top_k=3)
    probs, idx = _top(logits_ref, 3)
    assert [p.index for p in result.predictions] == idx
    assert [p.score for p in result.predictions] == pytest.approx(probs, abs=10 * atol)
    return loaded, written


@pytest.mark.parametrize(
    "name,crop_pct",
    [
        ("deit3_small_patch16_224.fb_in22k_ft_in1k", 1.0),
        ("vit_medium_patch16_reg4_gap_256.sbb_in1k", 0.95),
        ("vit_betwixt_patch16_reg4_gap_256.sbb_in1k", 0.95),
    ],
)
def test_tiny_checkpoints_through_the_hub(name, crop_pct, hf_cache, tmp_path, photos):
    loaded, written = _check_hub_round_trip(hf_cache, tmp_path, photos["chelsea"], name, TINY_ARGS, 10, 0, False, 1e-4)
    assert written["pretrained_cfg"]["crop_pct"] == crop_pct and loaded.preprocess.crop == (32, 32)
    arch = name.split(".")[0]
    assert loaded.config.readout == ("token" if arch.startswith("deit3") else "avg")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,size,crop_pct",
    [("deit3_small_patch16_224.fb_in22k_ft_in1k", 224, 1.0), ("vit_medium_patch16_reg4_gap_256.sbb_in1k", 256, 0.95)],
)
def test_full_size_checkpoints_through_the_hub(name, size, crop_pct, hf_cache, tmp_path, photos):
    """Full-size architectures, random weights, their own preprocessing (input 224 / 256, crop_pct 1.0 / 0.95)."""
    loaded, written = _check_hub_round_trip(hf_cache, tmp_path, photos["coffee"], name, {}, 1000, 0, True, 1e-3)
    assert written["pretrained_cfg"]["input_size"] == [3, size, size]
    assert written["pretrained_cfg"]["crop_pct"] == crop_pct
    assert loaded.preprocess.crop == (size, size) and loaded.preprocess.resize == int(size / crop_pct)
