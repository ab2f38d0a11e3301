"""Swin V2: the log-spaced coordinates by hand and against timm, parity with timm and transformers on the same
weights (tiny and swinv2_tiny_window8_256), other input sizes against timm created at that size, config readers.

Weights are random at a sensible scale; every `logit_scale` is set so that some heads sit above the references'
clamp (log 100) and the shift mask's -100 matters, and checkpoints fine-tuned at a larger window are imitated with
`pretrained_window_sizes`, so that a wrong clamp, mask value or coordinate normalisation would show.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch

from tests.support.hubcache import hub_state_dict
from tests.support.weights import randomise_swinv2
from vtdemo.convert.swinv2 import from_hf, from_timm
from vtdemo.errors import UnsupportedModelError
from vtdemo.models.swin import SwinAttention
from vtdemo.models.swinv2 import (
    PRESETS,
    SwinTransformerV2,
    SwinV2Config,
    allowed_sizes,
    config_from_hf,
    config_from_timm,
    log_relative_coords,
    with_input_size,
)

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

ARCH = "swinv2_tiny_window8_256"
# Grids 16 / 8 / 4 with window 4: shifted blocks in stages 0-1, stage 2 one window.
TINY_ARGS = dict(img_size=64, patch_size=4, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4)
PRETRAINED = (3, 3, 2)  # as if fine-tuned from a smaller window: coordinates normalised by these


def _timm(seed: int = 0, **kw) -> torch.nn.Module:
    args = {**TINY_ARGS, **kw}
    return randomise_swinv2(timm.create_model(ARCH, pretrained=False, num_classes=10, **args), seed)


def _x(size: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _ours_from_timm(ref: torch.nn.Module, cfg: SwinV2Config) -> SwinTransformerV2:
    ours = SwinTransformerV2(cfg).eval()
    ours.load_state_dict(from_timm(ref.state_dict()), strict=True)
    return ours


def test_log_coordinates_by_hand():
    # Window 2: offsets -1, 0, 1 over (ws - 1) = 1, times 8: +-8 -> log2(9) / log2(8); 0 -> 0.
    c = log_relative_coords(2)
    v = math.log2(9) / 3
    assert c.shape == (9, 2)
    torch.testing.assert_close(c[0], torch.tensor([-v, -v]))  # (dy, dx) = (-1, -1) first: dy major
    torch.testing.assert_close(c[1], torch.tensor([-v, 0.0]))
    torch.testing.assert_close(c[5], torch.tensor([0.0, v]))
    # Pretrained window 3: the same offsets are halves of the pretrained span: 8 * 1/2 = 4 -> log2(5) / 3.
    torch.testing.assert_close(log_relative_coords(2, 3)[8], torch.full((2,), math.log2(5) / 3))


@pytest.mark.parametrize("window,pretrained", [(8, 0), (16, 12), (12, 6), (1, 0)])
def test_log_coordinates_match_timm(window, pretrained):
    from timm.models.swin_transformer_v2 import WindowAttention

    attn = WindowAttention(32, (window, window), 2, pretrained_window_size=(pretrained, pretrained))
    torch.testing.assert_close(log_relative_coords(window, pretrained), attn.relative_coords_table.reshape(-1, 2))


@pytest.mark.parametrize("pretrained", [(0, 0, 0), PRETRAINED])
def test_tiny_matches_timm(pretrained):
    ref = _timm(seed=2, pretrained_window_sizes=pretrained)
    cfg = config_from_timm(ARCH, 10, {**TINY_ARGS, "pretrained_window_sizes": pretrained})
    ours = _ours_from_timm(ref, cfg)
    x = _x(64)
    with torch.inference_mode():
        expected = ref(x)
        slow = ours(x, return_attn=True)
        fast = ours(x).logits
    assert any((b.attn.logit_scale > math.log(100)).any() for s in ref.layers for b in s.blocks)
    torch.testing.assert_close(slow.logits, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast, expected, atol=1e-4, rtol=0)
    records = slow.attentions
    assert all(isinstance(r, SwinAttention) for r in records)
    assert [(r.stage, r.grid, r.window, r.shift) for r in records] == [
        (0, (16, 16), 4, 0),
        (0, (16, 16), 4, 2),
        (1, (8, 8), 4, 0),
        (1, (8, 8), 4, 2),
        (2, (4, 4), 4, 0),
        (2, (4, 4), 4, 0),
    ]
    assert [r.shift for r in records] == [b.shift_size[0] for s in ref.layers for b in s.blocks]
    for r in records:
        torch.testing.assert_close(r.attn.sum(-1), torch.ones(r.attn.shape[:-1]))


def test_mask_value_is_the_references():
    """Blocked pairs get -100, as in timm and transformers (with cosine logits up to +-116, not negligible)."""
    ours = SwinTransformerV2(SwinV2Config(**{**TINY_ARGS, "num_classes": 10}))
    ref = timm.create_model(ARCH, pretrained=False, num_classes=10, **TINY_ARGS)
    torch.testing.assert_close(ours.layers[0].blocks[1].attn_mask, ref.layers[0].blocks[1].attn_mask)
    assert set(ours.layers[0].blocks[1].attn_mask.unique().tolist()) == {0.0, -100.0}


@pytest.mark.parametrize("pretrained", [(0, 0, 0), PRETRAINED])
def test_tiny_matches_transformers(pretrained):
    config = transformers.Swinv2Config(
        image_size=64,
        patch_size=4,
        embed_dim=32,
        depths=[2, 2, 2],
        num_heads=[2, 4, 8],
        window_size=4,
        num_labels=10,
        pretrained_window_sizes=list(pretrained),
    )
    ref = randomise_swinv2(transformers.Swinv2ForImageClassification(config), seed=3)
    with tempfile.TemporaryDirectory() as d:
        state = hub_state_dict(ref, Path(d))
    ours = SwinTransformerV2(config_from_hf(config.to_dict())).eval()
    ours.load_state_dict(from_hf(state), strict=True)
    x = _x(64, n=8)  # several inputs: the mask value (transformers adds its -100 twice) shows on some of them
    with torch.inference_mode():
        expected = ref(pixel_values=x).logits
        got = ours(x).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_full_size_tiny_window8_256_matches_timm():
    ref = randomise_swinv2(timm.create_model(ARCH, pretrained=False), seed=4)
    ours = _ours_from_timm(ref, config_from_timm(ARCH + ".ms_in1k", 1000))
    x = _x(256, n=1)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x).logits, ref(x), atol=1e-3, rtol=0)


@pytest.mark.parametrize("size", [128, 32])
def test_other_input_sizes_match_timm_created_at_that_size(size):
    """Same weights at 2x (every stage shifts) and 0.5x (last stage 2 x 2: window 2, coordinates renormalised)."""
    ref = _timm(seed=5)
    other = timm.create_model(ARCH, pretrained=False, num_classes=10, **{**TINY_ARGS, "img_size": size}).eval()
    other.load_state_dict(ref.state_dict(), strict=True)
    ours = with_input_size(_ours_from_timm(ref, config_from_timm(ARCH, 10, TINY_ARGS)), size)
    x = _x(size)
    with torch.inference_mode():
        expected = other(x)
        out = ours(x, return_attn=True)
    torch.testing.assert_close(out.logits, expected, atol=1e-4, rtol=0)
    assert [(r.window, r.shift) for r in out.attentions] == [
        (b.window_size[0], b.shift_size[0]) for s in other.layers for b in s.blocks
    ]


def test_sizes_that_need_padding_are_refused_with_the_allowed_ones():
    cfg = PRESETS[ARCH]
    assert allowed_sizes(cfg, 800)[:4] == [32, 64, 128, 256]
    assert 512 in allowed_sizes(cfg, 800) and 288 not in allowed_sizes(cfg, 800)
    with pytest.raises(UnsupportedModelError, match="sizes it runs at: 32, 64, 128, 256"):
        with_input_size(SwinTransformerV2(replace_classes(cfg)), 288)  # stage 2 grid 18: timm would pad to 24


def replace_classes(cfg: SwinV2Config) -> SwinV2Config:
    from dataclasses import replace

    return replace(cfg, num_classes=3, depths=(1, 1, 1, 1))


def test_config_readers():
    assert config_from_timm("swinv2_base_window12to24_192to384.ms_in22k_ft_in1k", 1000).pretrained_window_sizes == (
        12,
        12,
        12,
        6,
    )
    cfg = config_from_timm(
        ARCH, 10, {"window_size": [4, 4, 4], "img_size": [64, 64], "drop_path_rate": 0.1, "global_pool": "avg"}
    )
    assert (cfg.window_size, cfg.img_size) == (4, 64)
    with pytest.raises(UnsupportedModelError, match="not one square size"):
        config_from_timm(ARCH, 10, {"window_size": [8, 8, 8, 4]})
    with pytest.raises(UnsupportedModelError, match="supported: swinv2_tiny_window8_256"):
        config_from_timm("swinv2_cr_tiny_ns_224", 10)  # timm's other V2 (res-post-norm, other names)
    with pytest.raises(UnsupportedModelError, match="not supported"):
        config_from_timm(ARCH, 10, {"global_pool": "max"})
    hf = config_from_hf(
        transformers.Swinv2Config(
            window_size=8, image_size=256, pretrained_window_sizes=[0, 0, 0, 0], id2label={0: "a", 1: "b"}
        ).to_dict()
    )
    assert (hf.window_size, hf.img_size, hf.num_classes, hf.qkv_bias) == (8, 256, 2, True)
    with pytest.raises(UnsupportedModelError, match="absolute"):
        config_from_hf({"model_type": "swinv2", "use_absolute_embeddings": True})


def test_transformers_adds_its_shift_mask_twice():
    """Why `config_from_hf` sets mask_value=-200: transformers' attention with its -100 mask equals ours with -200.

    Keys are the negated queries (cosine -1 to its own side of a wrapped window) and the tokens across the wrap are
    the opposite vector (cosine +1): with a -100 mask the blocked tokens then win, with -200 they do not.
    """
    from transformers.models.swinv2.modeling_swinv2 import Swinv2SelfAttention

    from vtdemo.models.swin import shifted_window_mask
    from vtdemo.models.swinv2 import WindowAttentionV2

    ref = randomise_swinv2(
        Swinv2SelfAttention(transformers.Swinv2Config(embed_dim=16, window_size=4), 16, 2, 4), seed=7
    )
    with torch.no_grad():
        ref.logit_scale.fill_(math.log(100))
        ref.query.weight.copy_(torch.eye(16))
        ref.key.weight.copy_(-torch.eye(16))
        ref.query.bias.zero_()
    state = from_hf({f"swinv2.encoder.layers.0.blocks.0.attention.self.{k}": v for k, v in ref.state_dict().items()})
    state = {k.removeprefix("layers.0.blocks.0.attn."): v for k, v in state.items()}
    ours = WindowAttentionV2(16, 2, 4).eval()
    # transformers' self-attention stops before the output projection: ours gets an identity one.
    ours.load_state_dict(state | {"proj.weight": torch.eye(16), "proj.bias": torch.zeros(16)}, strict=True)
    mask = shifted_window_mask(8, 8, 4, 2).clamp(min=-100.0)  # [4, 16, 16]: timm's and transformers' -100 mask
    u = torch.randn(16, generator=torch.Generator().manual_seed(0))
    x = torch.where((mask[:, :1, :] == 0).transpose(1, 2), u, -u)  # [4, 16, 16]: +u on token 0's side, -u across
    with torch.no_grad():
        expected = ref(x, mask)[0]
        twice = ours(x, 2 * mask)[0]
        once = ours(x, mask)[0]
    torch.testing.assert_close(twice, expected, atol=1e-4, rtol=0)
    assert (once - expected).abs().max() > 0.1
