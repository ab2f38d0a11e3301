"""Loading ViT / DeiT through the real huggingface_hub path (offline, temporary cache) in every supported format,
then checking the whole pipeline (our preprocessing + model) against the reference library on a photo."""

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

TINY_ARGS = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def _reference_top(logits: torch.Tensor, k: int = 5):
    probs = logits.softmax(-1)[0]
    p, i = probs.topk(k)
    return p.tolist(), i.tolist()


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_timm_format(arch, weights, hf_cache, tmp_path, photos):
    ref = randomise(timm.create_model(arch, pretrained=False, num_classes=10, **TINY_ARGS))
    repo = f"timm/{arch}.test"
    snap = write_timm_repo(hf_cache, repo, ref, TINY_ARGS, tmp_path, formats=(weights,))
    result = vtdemo.classify(photos["chelsea"], model=repo, top_k=5)
    pretrained_cfg = json.loads((snap / "config.json").read_text())["pretrained_cfg"]  # as timm wrote it
    cfg = timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg)
    x = timm.data.create_transform(**cfg)(photos["chelsea"]).unsqueeze(0)
    with torch.inference_mode():
        probs, idx = _reference_top(ref(x))
    assert [p.index for p in result.predictions] == idx
    assert [p.score for p in result.predictions] == pytest.approx(probs, abs=1e-5)
    assert result.predictions[0].label == f"class {idx[0]}"  # 10 classes: no ImageNet names invented
    loaded = loader.load(repo)
    assert loaded.format == "timm" and loaded.family == "vit"


def _hf_model(kind: str):
    common = dict(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label={i: f"thing {i}" for i in range(10)},
    )
    if kind == "vit":
        return randomise(transformers.ViTForImageClassification(transformers.ViTConfig(**common)))
    return randomise(transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**common)))


@pytest.mark.parametrize(
    "kind,weights", [("vit", "model.safetensors"), ("vit", "pytorch_model.bin"), ("deit", "pytorch_model.bin")]
)
def test_transformers_format(kind, weights, hf_cache, tmp_path, photos):
    ref = _hf_model(kind)
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=2)
    repo = "google/vit-test" if kind == "vit" else "facebook/deit-test"
    write_transformers_repo(hf_cache, repo, ref, tmp_path, processor.to_dict(), formats=(weights,))
    result = vtdemo.classify(photos["coffee"], model=repo, top_k=3)
    with torch.inference_mode():
        probs, idx = _reference_top(ref(**processor(photos["coffee"], return_tensors="pt")).logits, 3)
    assert [p.index for p in result.predictions] == idx
    assert [p.score for p in result.predictions] == pytest.approx(probs, abs=1e-5)
    assert result.predictions[0].label == f"thing {idx[0]}"  # names from the repo's id2label


def test_revision_and_local_folder(hf_cache, tmp_path, photos):
    a = randomise(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_ARGS), 1)
    b = randomise(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_ARGS), 2)
    write_timm_repo(hf_cache, "org/model", a, TINY_ARGS, tmp_path)
    snap_b = write_timm_repo(hf_cache, "org/model", b, TINY_ARGS, tmp_path, revision="v2")
    main = loader.load("org/model").model.head.weight
    v2 = loader.load("org/model@v2").model.head.weight
    assert torch.equal(main, a.head.weight) and torch.equal(v2, b.head.weight)
    folder = loader.load(str(snap_b)).model.head.weight  # a plain folder with the same files
    assert torch.equal(folder, b.head.weight)


def test_offline_unknown_repo_says_what_to_do(hf_cache):
    with pytest.raises(vtdemo.VtdemoError) as err:
        loader.load("nobody/not-a-model")
    message = str(err.value)
    assert "nobody/not-a-model" in message and "HF_HUB_OFFLINE" in message and "folder" in message


def test_corrupt_safetensors_names_the_file(hf_cache, tmp_path):
    ref = randomise(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_ARGS))
    snap = write_timm_repo(hf_cache, "org/broken", ref, TINY_ARGS, tmp_path, formats=("model.safetensors",))
    weights = snap / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated download
    with pytest.raises(vtdemo.VtdemoError, match=r"model\.safetensors.*corrupt or truncated.*delete"):
        loader.load("org/broken")


def test_config_that_disagrees_with_weights_names_keys(hf_cache, tmp_path):
    ref = randomise(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_ARGS))
    write_timm_repo(hf_cache, "org/mismatch", ref, dict(TINY_ARGS, depth=3, embed_dim=48), tmp_path)
    with pytest.raises(vtdemo.VtdemoError) as err:
        loader.load("org/mismatch")
    message = str(err.value)
    assert "missing keys: blocks.2." in message and "shape mismatches" in message
    assert "blocks.0.mlp.fc1.weight (128, 32) vs (192, 48)" in message


def test_unsupported_architecture_lists_what_is_supported(hf_cache):
    from tests.support.hubcache import write_repo

    write_repo(hf_cache, "org/bert", {"config.json": {"model_type": "bert", "architectures": ["BertModel"]}})
    with pytest.raises(vtdemo.VtdemoError, match="'bert' model; vtdemo supports .*ViT"):
        loader.load("org/bert")


def test_pickle_with_code_is_refused(hf_cache, tmp_path):
    """A pytorch_model.bin that would run code when unpickled is never executed (weights_only=True)."""
    import pickle

    from tests.support.hubcache import write_repo

    class Evil:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    config = {
        "model_type": "vit",
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    write_repo(hf_cache, "org/evil", {"config.json": config, "pytorch_model.bin": pickle.dumps(Evil())})
    with pytest.raises(vtdemo.VtdemoError, match="pytorch_model.bin cannot be read safely"):
        loader.load("org/evil")
    assert not (tmp_path / "PWNED").exists()


def test_models_are_cached(hf_cache, tmp_path):
    ref = randomise(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_ARGS))
    write_timm_repo(hf_cache, "org/cached", ref, TINY_ARGS, tmp_path)
    assert loader.load("org/cached") is loader.load("org/cached@main")
