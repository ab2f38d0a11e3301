"""Loading Swin through the real huggingface_hub path (offline, temporary cache) in the timm and transformers
formats; the whole pipeline (our preprocessing + model) agrees with the reference library on a photo."""

from __future__ import annotations

import json

import pytest
import torch

import vtdemo
from tests.support.hubcache import write_timm_repo, write_transformers_repo
from tests.support.weights import randomise
from vtdemo import loader

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

TINY_ARGS = dict(img_size=64, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4)


def _top(logits, k):
    p, i = logits.softmax(-1)[0].topk(k)
    return p.tolist(), i.tolist()


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_timm_format(weights, hf_cache, tmp_path, photos):
    ref = randomise(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, **TINY_ARGS))
    repo = "timm/swin_tiny_patch4_window7_224.test"
    snap = write_timm_repo(hf_cache, repo, ref, TINY_ARGS, tmp_path, formats=(weights,))
    pretrained_cfg = json.loads((snap / "config.json").read_text())["pretrained_cfg"]
    x = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg))(photos["coffee"])
    with torch.inference_mode():
        probs, idx = _top(ref(x.unsqueeze(0)), 5)
    result = vtdemo.classify(photos["coffee"], model=repo, top_k=5)
    assert [p.index for p in result.predictions] == idx
    assert [p.score for p in result.predictions] == pytest.approx(probs, abs=1e-5)
    loaded = loader.load(repo)
    assert (loaded.format, loaded.family) == ("timm", "swin")


def test_transformers_format(hf_cache, tmp_path, photos):
    config = transformers.SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=4,
        id2label={i: f"kind {i}" for i in range(7)},
    )
    ref = randomise(transformers.SwinForImageClassification(config))
    processor = transformers.ViTImageProcessor(
        size={"height": 64, "width": 64}, resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    )
    write_transformers_repo(hf_cache, "microsoft/swin-test", ref, tmp_path, processor.to_dict())
    with torch.inference_mode():
        probs, idx = _top(ref(**processor(photos["astronaut"], return_tensors="pt")).logits, 3)
    result = vtdemo.classify(photos["astronaut"], model="microsoft/swin-test", top_k=3)
    assert [p.index for p in result.predictions] == idx
    assert [p.score for p in result.predictions] == pytest.approx(probs, abs=1e-5)
    assert result.predictions[0].label == f"kind {idx[0]}"


def test_file_with_derived_buffers_and_relative_position_index_loads(hf_cache, tmp_path):
    """2023 timm uploads carry `relative_position_index` and `attn_mask` buffers: they are ignored, not an error."""
    from tests.support.hubcache import safetensors_bytes

    ref = randomise(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, **TINY_ARGS))
    snap = write_timm_repo(
        hf_cache, "timm/swin_tiny_patch4_window7_224.buffers", ref, TINY_ARGS, tmp_path, formats=("model.safetensors",)
    )
    state = dict(ref.state_dict())
    state.update({k: v for k, v in ref.named_buffers() if k.endswith(("relative_position_index", "attn_mask"))})
    assert any(k.endswith("relative_position_index") for k in state)
    (snap / "model.safetensors").write_bytes(safetensors_bytes(state, tmp_path))
    loaded = loader.load("timm/swin_tiny_patch4_window7_224.buffers")
    assert loaded.family == "swin"
