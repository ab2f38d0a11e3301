"""Loading Swin V2 through the real huggingface_hub path (offline, temporary cache) in the files timm's `save_for_hf`
and transformers' `save_pretrained` write; the pipeline agrees with the reference library on a photo, and the
window-aware Swin explanations run on the V2 attention records."""

from __future__ import annotations

import json

import pytest
import torch

import vtdemo
from tests.support.hubcache import write_timm_repo, write_transformers_repo
from tests.support.weights import randomise_swinv2
from vtdemo import loader, pipeline
from vtdemo.errors import VtdemoError
from vtdemo.explain import registry
from vtdemo.explain import swin as ex
from vtdemo.explain.api import explain_run
from vtdemo.explain.registry import ExplainOptions
from vtdemo.models.swinv2 import SwinTransformerV2

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

ARGS = dict(
    img_size=64,
    patch_size=4,
    embed_dim=16,
    depths=(2, 2),
    num_heads=(2, 4),
    window_size=4,
    pretrained_window_sizes=(3, 2),
)


def _top(logits, k):
    p, i = logits.softmax(-1)[0].topk(k)
    return p.tolist(), i.tolist()


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_timm_format(weights, hf_cache, tmp_path, photos):
    ref = randomise_swinv2(timm.create_model("swinv2_tiny_window8_256", pretrained=False, num_classes=10, **ARGS), 0)
    repo = "timm/swinv2_tiny_window8_256.test"
    snap = write_timm_repo(hf_cache, repo, ref, ARGS, tmp_path, formats=(weights,))
    pretrained_cfg = json.loads((snap / "config.json").read_text())["pretrained_cfg"]
    x = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg))(photos["coffee"])
    with torch.inference_mode():
        logits = ref(x.unsqueeze(0))
        probs, idx = _top(logits, 5)
    result = vtdemo.classify(photos["coffee"], model=repo, top_k=5)
    assert [p.index for p in result.predictions] == idx
    assert [p.score for p in result.predictions] == pytest.approx(probs, abs=1e-5)
    loaded = loader.load(repo)
    assert (loaded.format, loaded.family) == ("timm", "swin") and isinstance(loaded.model, SwinTransformerV2)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x.unsqueeze(0)).logits, logits, atol=1e-4, rtol=0)


def test_transformers_format(hf_cache, tmp_path, photos):
    config = transformers.Swinv2Config(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=4,
        pretrained_window_sizes=[3, 2],
        id2label={i: f"kind {i}" for i in range(7)},
    )
    ref = randomise_swinv2(transformers.Swinv2ForImageClassification(config), 1)
    processor = transformers.ViTImageProcessor(
        size={"height": 64, "width": 64}, resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    )
    write_transformers_repo(hf_cache, "microsoft/swinv2-test", ref, tmp_path, processor.to_dict())
    pixels = processor(photos["astronaut"], return_tensors="pt")["pixel_values"]
    loaded = loader.load("microsoft/swinv2-test")
    with torch.inference_mode():
        logits = ref(pixel_values=pixels).logits
        torch.testing.assert_close(loaded.model(pixels).logits, logits, atol=1e-4, rtol=0)
    probs, idx = _top(logits, 3)
    result = vtdemo.classify(photos["astronaut"], model="microsoft/swinv2-test", top_k=3)
    assert [p.index for p in result.predictions] == idx
    assert [p.score for p in result.predictions] == pytest.approx(probs, abs=1e-5)
    assert result.predictions[0].label == f"kind {idx[0]}"
    assert loaded.family == "swin" and isinstance(loaded.model, SwinTransformerV2)


def test_swin_explanations_run_on_v2(hf_cache, tmp_path, photos):
    ref = randomise_swinv2(timm.create_model("swinv2_tiny_window8_256", pretrained=False, num_classes=10, **ARGS), 2)
    repo = "timm/swinv2_tiny_window8_256.explain"
    write_timm_repo(hf_cache, repo, ref, ARGS, tmp_path, formats=("model.safetensors",))
    run = pipeline.run_classifier(loader.load(repo), photos["chelsea"])
    roll = ex.rollout(run.attentions)
    assert roll.shape == (16, 16)
    torch.testing.assert_close(roll.sum(), torch.tensor(1.0))
    at = ex.window_attention_at(run.attentions, (0.4, 0.7), block=1)  # stage 0, shifted block
    torch.testing.assert_close(at.sum(), torch.tensor(1.0))
    box = ex.window_box(run.attentions, (0.4, 0.7), block=1)
    assert box  # the window's outline on the input
    names = registry.names_for("swin")
    assert {"swin-rollout", "swin-grad-rollout", "swin-window"} <= set(names)
    for method in names:  # every registered Swin method runs on V2, except LRP, whose walk covers Swin V1 only
        if "lrp" in method:
            with pytest.raises(VtdemoError, match="Swin \\(V1\\) only"):
                explain_run(run, method, ExplainOptions(point=(100.0, 80.0)))
            continue
        result = explain_run(run, method, ExplainOptions(point=(100.0, 80.0)))
        assert result.map.shape in ((16, 16), (8, 8)) and torch.isfinite(result.map).all()
        assert float(result.map.max()) == pytest.approx(1.0)
