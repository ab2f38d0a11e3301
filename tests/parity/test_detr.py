"""DETR: unit tests on a tiny model, checkpoint conversion, and parity against transformers' DetrForObjectDetection.

The transformers side is the reference: every expected number comes from it, from torch's own
`nn.MultiheadAttention`, or from a hand computation. Its weights are written with `save_pretrained` (which
writes the Hub-era key names) and read back with safetensors, so the conversion sees what a Hub file holds.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from tests.support.weights import randomise_detr_calibrated
from vtdemo.convert.detr import from_hf, from_original, is_no_timm
from vtdemo.errors import UnsupportedModelError
from vtdemo.models.detr import (
    DETR,
    PRESETS,
    DetrConfig,
    MultiHeadAttention,
    config_from_hf,
    sine_position_encoding,
)

TINY = DetrConfig(d_model=32, num_heads=2, encoder_layers=2, decoder_layers=2, ffn_dim=64, num_queries=10)
TINY_HF = dict(
    d_model=32,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_layers=2,
    decoder_layers=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    num_queries=10,
    num_labels=91,
)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HUB_PREFIX = "model.backbone.conv_encoder.model."


# ----------------------------------------------------------------------------------------------- helpers


def to_tensor(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """PIL RGB -> [3, height, width], bilinear resize, ImageNet-normalised (DETR's preprocessing, test-side)."""
    data = torch.frombuffer(bytearray(image.resize((width, height), Image.BILINEAR).tobytes()), dtype=torch.uint8)
    x = data.view(height, width, 3).permute(2, 0, 1).float() / 255  # [3, H, W]
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def pad_batch(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [3, h_i, w_i] -> pixel_values [B, 3, H, W] (zero padding bottom/right), pixel_mask [B, H, W] bool."""
    H, W = max(x.shape[1] for x in images), max(x.shape[2] for x in images)
    values = torch.zeros(len(images), 3, H, W)
    mask = torch.zeros(len(images), H, W, dtype=torch.bool)
    for i, x in enumerate(images):
        values[i, :, : x.shape[1], : x.shape[2]] = x
        mask[i, : x.shape[1], : x.shape[2]] = True
    return values, mask


def build_hf(tmp_path, calibration: torch.Tensor, **kwargs):
    """transformers DETR (random, randomised, eager attention) + its Hub-format state dict and config.json."""
    from safetensors.torch import load_file
    from transformers import DetrConfig as HFDetrConfig
    from transformers import DetrForObjectDetection

    if kwargs.get("use_timm_backbone", True):
        kwargs["use_pretrained_backbone"] = False
    hf = DetrForObjectDetection(HFDetrConfig(**kwargs, attn_implementation="eager")).eval()
    randomise_detr_calibrated(hf, 0, lambda: hf.model.backbone(calibration, torch.ones(1, *calibration.shape[2:])))
    hf.save_pretrained(tmp_path)
    hub_sd = load_file(str(tmp_path / "model.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    return hf, hub_sd, config


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(images):
    torch.manual_seed(0)
    model = DETR(TINY).eval()
    net = model.backbone  # torchvision's modules, run through their own forward for the BN calibration
    layers = torch.nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    randomise_detr_calibrated(model, 1, lambda: layers(images["calibration"]))
    return model


@pytest.fixture(scope="module")
def images(photos):
    """A real photo alone, and a batch of two photos of different shapes (padding at the bottom of one and on the
    right of the other). Sizes are chosen so that nearest interpolation of the pixel mask gives each image as many
    feature cells as its own backbone grid (coffee 256x160 -> 8x5 cells, astronaut 192x192 -> 6x6, in 8x6)."""
    chelsea = to_tensor(photos["chelsea"], 224, 150)
    astronaut = to_tensor(photos["astronaut"], 192, 192)
    coffee = to_tensor(photos["coffee"], 256, 160)
    calibration = to_tensor(photos["rocket"], 192, 128)[None]
    return {"single": chelsea[None], "batch": pad_batch([coffee, astronaut]), "calibration": calibration}


HF_VARIANTS = {
    "timm": dict(use_timm_backbone=True),  # the Hub's `main` revision
    "no_timm": dict(use_timm_backbone=False),  # the Hub's `no_timm` revision
    "dc5": dict(use_timm_backbone=True, dilation=True),  # facebook/detr-resnet-50-dc5
}


@pytest.fixture(scope="module", params=list(HF_VARIANTS))
def pair(request, tmp_path_factory, images):
    """A tiny transformers model, its Hub-format state dict, our model converted from it, and its outputs."""
    torch.manual_seed(0)
    hf, hub_sd, config = build_hf(
        tmp_path_factory.mktemp(request.param), images["calibration"], **TINY_HF, **HF_VARIANTS[request.param]
    )
    ours = DETR(config_from_hf(config)).eval()
    ours.load_state_dict(from_hf(hub_sd), strict=True)
    values, mask = images["batch"]
    with torch.no_grad():
        ref_single = hf(pixel_values=images["single"])
        ref_batch = hf(pixel_values=values, pixel_mask=mask.long(), output_attentions=True)
    return SimpleNamespace(
        variant=request.param, hf=hf, hub_sd=hub_sd, ours=ours, ref_single=ref_single, ref_batch=ref_batch
    )


# ----------------------------------------------------------------------------------------------- unit tests


def test_output_shapes(tiny):
    with torch.no_grad():
        out = tiny(torch.randn(2, 3, 64, 96))
    assert out.logits.shape == (2, 10, 92) and out.boxes.shape == (2, 10, 4)
    assert out.feature_size == (2, 3) and out.feature_mask.shape == (2, 2, 3) and out.feature_mask.all()
    assert torch.isfinite(out.logits).all() and ((out.boxes > 0) & (out.boxes < 1)).all()
    assert out.encoder_attn is None and out.decoder_self_attn is None and out.decoder_cross_attn is None
    assert out.logits.std(dim=1).mean() > 0.01  # queries differ from each other (the weights are not degenerate)


def test_sine_position_encoding_by_hand():
    # A 2x3 grid whose last column is padding. Along each axis the position is the count of real cells up to and
    # including this one, over the count in the whole row/column (+1e-6), times 2*pi: in the padded column the
    # y count is 0, and along x the padded cell repeats the row's last count.
    grid = [[1, 1, 0], [1, 1, 0]]
    pos = sine_position_encoding(torch.tensor([grid], dtype=torch.bool), num_feats=128)
    assert pos.shape == (1, 2, 3, 256)
    expected = torch.zeros(2, 3, 256, dtype=torch.float64)
    for r in range(2):
        for c in range(3):
            column, row = [grid[i][c] for i in range(2)], grid[r]
            y = sum(column[: r + 1]) / (sum(column) + 1e-6) * 2 * math.pi
            x = sum(row[: c + 1]) / (sum(row) + 1e-6) * 2 * math.pi
            for i in range(128):
                period = 10000 ** (2 * (i // 2) / 128)
                trig = math.sin if i % 2 == 0 else math.cos
                expected[r, c, i] = trig(y / period)
                expected[r, c, 128 + i] = trig(x / period)
    torch.testing.assert_close(pos[0].double(), expected, atol=1e-5, rtol=0)


def test_attention_probabilities(tiny, images):
    values, mask = images["batch"]
    with torch.no_grad():
        out = tiny(values, mask, return_attn=True)
    h, w = out.feature_size
    keys = out.feature_mask.flatten(1)  # [B, hw]
    assert (h, w) == (6, 8) and keys.sum(1).tolist() == [5 * 8, 6 * 6]
    assert len(out.encoder_attn) == 2 and len(out.decoder_self_attn) == 2 and len(out.decoder_cross_attn) == 2
    for a in out.encoder_attn:
        assert a.shape == (2, 2, h * w, h * w)
    for a in out.decoder_self_attn:
        assert a.shape == (2, 2, 10, 10)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 10))
    for a in out.encoder_attn + out.decoder_cross_attn:
        assert a.shape[-1] == h * w
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
        assert (a.masked_select(~keys[:, None, None, :]) == 0).all()  # padded keys get exactly 0


def test_attention_stays_in_graph(tiny):
    out = tiny(torch.randn(1, 3, 64, 64), return_attn=True)
    assert out.decoder_cross_attn[-1].requires_grad
    out.decoder_cross_attn[-1].retain_grad()
    out.logits[0, 0, 0].backward()
    assert out.decoder_cross_attn[-1].grad is not None and out.decoder_cross_attn[-1].grad.abs().sum() > 0


def test_attn_path_equals_fast_path(tiny, images):
    values, mask = images["batch"]
    with torch.no_grad():
        fast = tiny(values, mask)
        slow = tiny(values, mask, return_attn=True)
    torch.testing.assert_close(fast.logits, slow.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.boxes, slow.boxes, atol=1e-5, rtol=0)


def test_padding_is_ignored_after_the_backbone(tiny, images):
    """Given an image's backbone features, padding them into a larger grid with another image and garbage in the
    padded cells changes nothing. (The full forward is not exactly invariant: like the reference implementations,
    the ResNet runs over the padded batch, so convolutions near an image's border see the padding.)"""
    single = images["single"]
    with torch.no_grad():
        f1 = tiny.backbone_features(single)  # [1, 2048, 5, 7]
        f2 = tiny.backbone_features(torch.randn(1, 3, 256, 160))  # [1, 2048, 8, 5]
        features = torch.randn(2, 2048, 8, 7) * 5  # garbage wherever no image is
        features[0, :, :5, :7], features[1, :, :8, :5] = f1[0], f2[0]
        mask = torch.zeros(2, 8, 7, dtype=torch.bool)
        mask[0, :5, :7], mask[1, :8, :5] = True, True
        alone = tiny.forward_transformer(f1, torch.ones(1, 5, 7, dtype=torch.bool), return_attn=True)
        padded = tiny.forward_transformer(features, mask, return_attn=True)
    torch.testing.assert_close(padded.logits[:1], alone.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.boxes[:1], alone.boxes, atol=1e-5, rtol=0)
    cross = padded.decoder_cross_attn[-1][:1].reshape(1, 2, 10, 8, 7)[..., :5, :7].flatten(-2)
    torch.testing.assert_close(cross, alone.decoder_cross_attn[-1], atol=1e-6, rtol=0)


def test_multihead_attention_matches_torch():
    """Our attention, loaded from an `nn.MultiheadAttention` through `from_original` (fused in_proj rows q, k, v),
    gives torch's result on both paths, with a key-padding mask."""
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_bias.normal_(), ref.out_proj.bias.normal_()
    sd = from_original({f"transformer.decoder.layers.0.multihead_attn.{k}": v for k, v in ref.state_dict().items()})
    ours = MultiHeadAttention(16, 4).eval()
    ours.load_state_dict({k.removeprefix("decoder.0.cross_attn."): v for k, v in sd.items()}, strict=True)
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[1, 4:] = False
    with torch.no_grad():
        expected, expected_attn = ref(q, k, v, key_padding_mask=~keep, average_attn_weights=False)
        fast, _ = ours(q, k, v, keep)
        slow, attn = ours(q, k, v, keep, return_attn=True)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(slow, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(attn, expected_attn, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------- config

HUB_R50_CONFIG = {  # the fields of facebook/detr-resnet-50's config.json that matter (a Hub-era file)
    "architectures": ["DetrForObjectDetection"],
    "model_type": "detr",
    "backbone": "resnet50",
    "use_timm_backbone": True,
    "use_pretrained_backbone": True,
    "dilation": False,
    "d_model": 256,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 8,
    "decoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,
    "decoder_ffn_dim": 2048,
    "num_queries": 100,
    "num_channels": 3,
    "position_embedding_type": "sine",
    "activation_function": "relu",
    "id2label": {str(i): f"label {i}" for i in range(91)},
}


def test_config_from_hub_era_files():
    assert config_from_hf(HUB_R50_CONFIG) == PRESETS["detr-resnet-50"]
    assert config_from_hf({**HUB_R50_CONFIG, "backbone": "resnet101"}) == PRESETS["detr-resnet-101"]
    assert config_from_hf({**HUB_R50_CONFIG, "dilation": True}) == PRESETS["detr-resnet-50-dc5"]
    no_timm = {
        **HUB_R50_CONFIG,
        "use_timm_backbone": False,
        "backbone": None,
        "backbone_config": {
            "model_type": "resnet",
            "depths": [3, 4, 23, 3],
            "hidden_sizes": [256, 512, 1024, 2048],
            "layer_type": "bottleneck",
            "embedding_size": 64,
            "out_features": ["stage4"],
        },
    }
    assert config_from_hf(no_timm) == PRESETS["detr-resnet-101"]
    gaps = {**HUB_R50_CONFIG, "id2label": {"1": "person", "90": "toothbrush"}}
    assert config_from_hf(gaps).num_classes == 91  # ids index the class head: max id + 1


def test_config_from_transformers_5_files(tmp_path):
    from transformers import DetrConfig as HFDetrConfig

    for kwargs, expected in [
        (dict(use_timm_backbone=True, use_pretrained_backbone=False), ("resnet50", False)),
        (
            dict(use_timm_backbone=True, use_pretrained_backbone=False, backbone="resnet101", dilation=True),
            ("resnet101", True),
        ),
        (dict(use_timm_backbone=False), ("resnet50", False)),
    ]:
        HFDetrConfig(**kwargs, **TINY_HF).save_pretrained(tmp_path)
        cfg = config_from_hf(json.loads((tmp_path / "config.json").read_text()))
        assert (cfg.backbone, cfg.dilation) == expected
        assert cfg == DetrConfig(
            backbone=expected[0],
            dilation=expected[1],
            d_model=32,
            num_heads=2,
            encoder_layers=2,
            decoder_layers=2,
            ffn_dim=64,
            num_queries=10,
            num_classes=91,
        )


@pytest.mark.parametrize(
    "change",
    [
        {"backbone": "resnet18"},
        {"position_embedding_type": "learned"},
        {"model_type": "deformable_detr"},
        {"decoder_attention_heads": 4},
        {
            "use_timm_backbone": False,
            "backbone_config": {"model_type": "resnet", "depths": [2, 2, 2, 2], "layer_type": "basic"},
        },
        {"backbone_config": {"model_type": "swin"}},
    ],
)
def test_config_unsupported(change):
    with pytest.raises(UnsupportedModelError):
        config_from_hf({**HUB_R50_CONFIG, **change})


def test_unsupported_backbone_in_our_config():
    with pytest.raises(UnsupportedModelError):
        DETR(DetrConfig(backbone="resnet18"))


# ----------------------------------------------------------------------------------------------- key maps


def test_hub_key_names(pair):
    """`save_pretrained` writes the Hub-era names (transformers' `DetrForObjectDetection` checkpoint names), not
    transformers 5's in-memory names."""
    hub_sd = pair.hub_sd
    backbone = [k for k in hub_sd if k.startswith(HUB_PREFIX)]
    assert len(backbone) == 265  # ResNet-50 up to layer4, frozen BN, no num_batches_tracked
    assert is_no_timm(hub_sd) == (pair.variant == "no_timm")
    if pair.variant == "no_timm":
        for key in [
            "embedder.embedder.convolution.weight",
            "encoder.stages.0.layers.0.shortcut.normalization.bias",
            "encoder.stages.3.layers.2.layer.2.normalization.running_var",
        ]:
            assert HUB_PREFIX + key in hub_sd
    else:
        for key in ["conv1.weight", "bn1.running_mean", "layer1.0.downsample.1.running_var", "layer4.2.conv3.weight"]:
            assert HUB_PREFIX + key in hub_sd
    for key in [
        "model.input_projection.weight",
        "model.query_position_embeddings.weight",
        "model.encoder.layers.1.self_attn.out_proj.weight",
        "model.encoder.layers.0.fc1.bias",
        "model.decoder.layers.1.encoder_attn.q_proj.weight",
        "model.decoder.layers.0.encoder_attn_layer_norm.bias",
        "model.decoder.layers.1.final_layer_norm.weight",
        "model.decoder.layernorm.weight",
        "class_labels_classifier.weight",
        "bbox_predictor.layers.2.bias",
    ]:
        assert key in hub_sd
    assert not any(".o_proj." in k or ".mlp." in k for k in hub_sd)
    assert hub_sd["class_labels_classifier.weight"].shape == (92, 32)


def test_every_key_is_consumed(pair):
    """Strict loads (no missing, no unexpected keys) from the Hub names, from transformers 5's in-memory names,
    and with BN step counters present."""
    target = DETR(pair.ours.cfg)
    target.load_state_dict(from_hf(pair.hub_sd), strict=True)
    in_memory = pair.hf.state_dict()
    assert any(".o_proj." in k for k in in_memory) and any(".mlp.fc1." in k for k in in_memory)
    target.load_state_dict(from_hf(in_memory), strict=True)
    counters = {
        HUB_PREFIX + "bn1.num_batches_tracked": torch.tensor(0),
        HUB_PREFIX + "layer1.0.downsample.1.num_batches_tracked": torch.tensor(0),
    }
    target.load_state_dict(from_hf({**pair.hub_sd, **counters}), strict=True)
    assert len(pair.ours.state_dict()) == len(pair.hub_sd)


def to_original_names(hub_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hub names -> facebookresearch/detr names, as facebookresearch/detr names them (fused in_proj rows q, k, v)."""
    table = [
        ("model.backbone.conv_encoder.model.", "backbone.0.body."),
        ("model.input_projection.", "input_proj."),
        ("model.query_position_embeddings.", "query_embed."),
        ("model.decoder.layernorm.", "transformer.decoder.norm."),
        ("model.encoder.", "transformer.encoder."),
        ("model.decoder.", "transformer.decoder."),
        ("self_attn_layer_norm", "norm1"),
        ("encoder_attn_layer_norm", "norm2"),
        ("encoder_attn.", "multihead_attn."),
        ("fc1.", "linear1."),
        ("fc2.", "linear2."),
        ("class_labels_classifier.", "class_embed."),
        ("bbox_predictor.", "bbox_embed."),
    ]
    original = {}
    for key, value in hub_sd.items():
        for a, b in table:
            key = key.replace(a, b)
        key = key.replace("final_layer_norm", "norm3" if ".decoder." in key else "norm2")
        original[key] = value
    for key in [k for k in original if ".q_proj." in k]:
        kind = key.rsplit(".", 1)[1]
        parts = [original.pop(key.replace(".q_proj.", f".{n}_proj.")) for n in "qkv"]
        original[key.replace(f"q_proj.{kind}", f"in_proj_{kind}")] = torch.cat(parts)  # [3C, C] or [3C]
    return original


@pytest.mark.parametrize("pair", ["timm"], indirect=True)  # the original checkpoints use torchvision names
def test_from_original_names(pair, images):
    """facebookresearch/detr names load strictly and give the reference's outputs."""
    original = to_original_names(pair.hub_sd)
    assert "transformer.decoder.layers.1.multihead_attn.in_proj_weight" in original
    assert "transformer.decoder.layers.1.norm3.weight" in original
    assert "transformer.encoder.layers.1.norm2.bias" in original
    model = DETR(pair.ours.cfg).eval()
    model.load_state_dict(from_original(original), strict=True)
    with torch.no_grad():
        out = model(images["single"])
    torch.testing.assert_close(out.logits, pair.ref_single.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.boxes, pair.ref_single.pred_boxes, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------- parity


def test_parity_single_photo(pair, images):
    with torch.no_grad():
        out = pair.ours(images["single"])
    ref = pair.ref_single
    assert ref.logits.std(dim=1).mean() > 0.01 and ref.pred_boxes.std(dim=1).mean() > 0.001  # not degenerate
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.boxes, ref.pred_boxes, atol=1e-4, rtol=0)


def test_parity_padded_batch_with_attention(pair, images):
    values, mask = images["batch"]
    with torch.no_grad():
        fast = pair.ours(values, mask)
        out = pair.ours(values, mask, return_attn=True)
    ref = pair.ref_batch
    assert (ref.logits[0] - ref.logits[1]).abs().mean() > 0.01  # the two images give different outputs
    for o in (fast, out):
        torch.testing.assert_close(o.logits, ref.logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(o.boxes, ref.pred_boxes, atol=1e-4, rtol=0)
    # Probabilities in [0, 1]. The first encoder layer has sharp rows (scores of tens), where the ~1e-5 relative
    # difference between our folded-BN backbone and transformers' conv-then-BN moves a probability by up to ~2e-4;
    # a wrong mask, head order or position would move them by ~0.1.
    assert len(ref.encoder_attentions) == len(out.encoder_attn) == 2
    for ours_attn, ref_attn in [
        (out.encoder_attn, ref.encoder_attentions),
        (out.decoder_self_attn, ref.decoder_attentions),
        (out.decoder_cross_attn, ref.cross_attentions),
    ]:
        for a, b in zip(ours_attn, ref_attn, strict=True):
            torch.testing.assert_close(a, b, atol=5e-4, rtol=0)


# ----------------------------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_size_parity(tmp_path, photos, images):
    """detr-resnet-50 (random, randomised weights) on a real photo at DETR's size: 800 x 1199."""
    hf, hub_sd, config = build_hf(tmp_path, images["calibration"], use_timm_backbone=True, num_labels=91)
    cfg = config_from_hf(config)
    assert cfg == PRESETS["detr-resnet-50"]
    ours = DETR(cfg).eval()
    ours.load_state_dict(from_hf(hub_sd), strict=True)
    x = to_tensor(photos["rocket"], 1199, 800)[None]  # 640x427 -> short side 800
    with torch.inference_mode():
        ref = hf(pixel_values=x)
        out = ours(x)
    assert out.feature_size == (25, 38)
    assert ref.logits.std() > 0.1 and ref.logits.std(dim=1).mean() > 1e-3 and ref.pred_boxes.std() > 1e-3
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-3, rtol=0)
    torch.testing.assert_close(out.boxes, ref.pred_boxes, atol=1e-4, rtol=0)
