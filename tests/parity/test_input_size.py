"""A Hub-loaded Swin (V1 and V2) run at another input size end to end: our pipeline against timm's model created at
that size with timm's own transform for that size, on a photo; the explanations follow the new grid."""

from __future__ import annotations

import json

import pytest
import torch

import vtdemo
from tests.support.hubcache import write_timm_repo
from tests.support.weights import randomise_classifier, randomise_swinv2
from vtdemo import loader, pipeline
from vtdemo.errors import UnsupportedModelError
from vtdemo.input_size import at_input_size, sizes

timm = pytest.importorskip("timm")

V1 = (
    "swin_tiny_patch4_window7_224",
    dict(img_size=64, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4),
)
V2 = (
    "swinv2_tiny_window8_256",
    dict(img_size=64, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4),
)


@pytest.mark.parametrize("arch,args", [V1, V2], ids=["v1", "v2"])
def test_hub_model_at_twice_its_size_matches_timm(arch, args, hf_cache, tmp_path, photos):
    ref = timm.create_model(arch, pretrained=False, num_classes=10, **args)
    ref = randomise_swinv2(ref, 0) if arch.startswith("swinv2") else randomise_classifier(ref, 0, gain=1.0, bias=0.1)
    repo = f"timm/{arch}.sizes"
    snap = write_timm_repo(hf_cache, repo, ref, args, tmp_path, formats=("model.safetensors",))
    big = timm.create_model(arch, pretrained=False, num_classes=10, **{**args, "img_size": 128}).eval()
    big.load_state_dict(ref.state_dict(), strict=True)
    pretrained_cfg = json.loads((snap / "config.json").read_text())["pretrained_cfg"]
    data_cfg = timm.data.resolve_data_config(pretrained_cfg={**pretrained_cfg, "input_size": (3, 128, 128)})
    x = timm.data.create_transform(**data_cfg)(photos["coffee"]).unsqueeze(0)  # [1, 3, 128, 128]
    with torch.inference_mode():
        probs, idx = big(x).softmax(-1)[0].topk(5)
    loaded = loader.load(repo)
    assert 128 in sizes(loaded)
    resized = at_input_size(loaded, 128)
    assert loaded.config.img_size == 64 and resized.config.img_size == 128  # the cached model is unchanged
    result = vtdemo.classify(photos["coffee"], model=resized, top_k=5)
    assert [p.index for p in result.predictions] == idx.tolist()
    assert [p.score for p in result.predictions] == pytest.approx(probs.tolist(), abs=1e-5)
    e = pipeline.explain(photos["coffee"], model=resized, method="swin-rollout")
    assert e.grid == [32, 32]


def test_refusals_name_what_works(hf_cache, tmp_path):
    arch, args = V1
    ref = randomise_classifier(timm.create_model(arch, pretrained=False, num_classes=10, **args), 0)
    write_timm_repo(hf_cache, "timm/swin.refuse", ref, args, tmp_path, formats=("model.safetensors",))
    loaded = loader.load("timm/swin.refuse")
    with pytest.raises(UnsupportedModelError, match="sizes it runs at: 32, 64, 96, 128"):
        at_input_size(loaded, 80)  # grids 20 / 10: the second stage is not a whole number of 4 x 4 windows
    assert at_input_size(loaded, 64) is loaded


def test_transformers_preprocessing_at_the_new_size():
    from vtdemo.input_size import scale_preprocess
    from vtdemo.preprocess import PreprocessConfig

    squash = scale_preprocess(PreprocessConfig(mode="hf", resize=(256, 256)), 256, 512)
    assert (squash.resize, squash.crop) == ((512, 512), None)
    cropped = scale_preprocess(PreprocessConfig(mode="hf", resize=256, resize_short=True, crop=(224, 224)), 224, 448)
    assert (cropped.resize, cropped.crop, cropped.resize_short) == (512, (448, 448), True)
