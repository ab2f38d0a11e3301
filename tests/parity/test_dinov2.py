"""DINOv2, with and without registers, against transformers (`Dinov2Model`, `Dinov2ForImageClassification`, the
`_with_registers` pair) and timm (`vit_*_patch14_dinov2`, `vit_*_patch14_reg4_dinov2`): checkpoints written by
`save_pretrained` / timm's `save_for_hf` into a temporary Hub cache and loaded through `hf_hub_download` (offline),
then classes, features and attention maps compared on the example photos, at the trained and at other sizes."""

from __future__ import annotations

import pytest
import torch

import vtdemo
from tests.support.bf16 import choose_f32
from tests.support.hubcache import write_timm_repo, write_transformers_repo
from tests.support.weights import randomise, randomise_classifier
from vtdemo import loader, pipeline, preprocess
from vtdemo.errors import UnsupportedModelError
from vtdemo.models.dinov2 import PRESETS, config_from_hf, config_from_timm
from vtdemo.models.vit import VisionTransformer

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

#: DINOv2's own image processor (`BitImageProcessor`) as the facebook/dinov2-* repos ship it.
BIT_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}
TINY_HF = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=70, patch_size=14)


def _hf_model(registers: bool, classifier: bool, seed: int, full: bool = False):
    T = transformers
    if registers:
        cfg_cls, model_cls = (
            T.Dinov2WithRegistersConfig,
            (T.Dinov2WithRegistersForImageClassification if classifier else T.Dinov2WithRegistersModel),
        )
    else:
        cfg_cls, model_cls = T.Dinov2Config, (T.Dinov2ForImageClassification if classifier else T.Dinov2Model)
    args = dict(image_size=518, patch_size=14, hidden_size=384, num_hidden_layers=12, num_attention_heads=6)
    cfg = cfg_cls(**(args if full else TINY_HF), num_labels=7, attn_implementation="eager")
    model = model_cls(cfg)
    return randomise_classifier(model, seed) if full else randomise(model, seed, scale=0.2)


def _hf_features(out) -> torch.Tensor:
    return out.pooler_output  # [B, C]: the CLS token after the final norm


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.mark.parametrize("registers", [False, True], ids=["plain", "registers"])
@pytest.mark.parametrize("classifier", [False, True], ids=["backbone", "classifier"])
def test_transformers_checkpoints_through_the_hub(registers, classifier, hf_cache, tmp_path, photos):
    ref = _hf_model(registers, classifier, seed=3)
    repo = f"facebook/dinov2-{'with-registers-' if registers else ''}tiny{'-1-layer' if classifier else ''}"
    write_transformers_repo(hf_cache, repo, ref, tmp_path, preprocessor=BIT_PREPROCESSOR)
    loaded = loader.load(repo)
    assert loaded.family == "vit" and loaded.config.reg_tokens == (4 if registers else 0)
    processor = transformers.AutoImageProcessor.from_pretrained(str(_snapshot(hf_cache, repo)))
    for name in ("chelsea", "astronaut"):
        photo = photos[name]
        x_ref = processor(photo, return_tensors="pt")["pixel_values"]
        x = preprocess.classifier_input(photo, loaded.preprocess)
        torch.testing.assert_close(x, x_ref, atol=1e-5, rtol=0)  # BitImageProcessor's recipe: 256 short side, 224
        with torch.inference_mode():
            out_ref = ref(x_ref, output_attentions=True)
            ours = loaded.model(x, return_attn=True)
        for mine, theirs in zip(ours.attentions, out_ref.attentions, strict=True):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)  # attention maps equal
        if classifier:
            p_ref, p = out_ref.logits.softmax(-1), ours.logits.softmax(-1)
            assert (p - p_ref).abs().max() <= 1.5e-3 and out_ref.logits.std() > 0.1
            result = vtdemo.classify(photo, model=repo, top_k=3)
            assert [q.index for q in result.predictions] == p_ref[0].topk(3).indices.tolist()
        else:
            assert _cos(ours.logits, _hf_features(out_ref)) >= 0.9999 and ours.logits.shape == (1, 32)
            assert loaded.labels == () and vtdemo.classify(photo, model=repo).predictions == []


@pytest.mark.parametrize("registers", [False, True], ids=["plain", "registers"])
@pytest.mark.parametrize("side", [140, 224, 448])
def test_transformers_at_other_input_sizes(registers, side, hf_cache, tmp_path, photos):
    """Any multiple of 14: transformers' `interpolate_pos_encoding` (bicubic; antialias only with registers)."""
    ref = _hf_model(registers, True, seed=5)
    repo = f"test/dinov2-sizes-{registers}"
    write_transformers_repo(hf_cache, repo, ref, tmp_path, preprocessor=BIT_PREPROCESSOR)
    loaded = loader.load(repo)
    run = pipeline.run_classifier(loaded, photos["coffee"], input_size=side)
    assert run.x.shape[-2:] == (side, side) and run.patch_grid == (side // 14, side // 14)
    with torch.inference_mode():
        out_ref = ref(run.x, output_attentions=True)
    torch.testing.assert_close(run.logits, out_ref.logits[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(run.attentions[-1], out_ref.attentions[-1][0], atol=1e-5, rtol=0)


@pytest.mark.slow  # a conversion to OpenVINO
@pytest.mark.parametrize("registers", [False, True], ids=["plain", "registers"])
def test_fast_engine_runs_dinov2_at_its_processors_size(registers, hf_cache, tmp_path, photos, monkeypatch):
    """A DINOv2 checkpoint's positions are for another size (here 70 px, 5x5 patches; the Hub's for 518 px) than its
    processor's crop (224): at precision fast the OpenVINO graph is converted for the crop, with the positions
    resampled into it, and runs it, giving transformers' classes and attention maps; another input size runs the
    exact model, and the runtime and the status line say so."""
    pytest.importorskip("openvino")
    from vtdemo.engine import openvino_runtime

    choose_f32(monkeypatch)  # the graph against transformers at f32's 1e-4, on any CPU
    ref = _hf_model(registers, True, seed=7)
    repo = f"test/dinov2-fast-{registers}"
    write_transformers_repo(hf_cache, repo, ref, tmp_path, preprocessor=BIT_PREPROCESSOR)
    fast = loader.load(repo, precision="fast")
    shapes: list[tuple[int, ...]] = []  # the input shape of every call of a compiled OpenVINO graph
    real = openvino_runtime.CompiledGraph.__call__

    def spy(self, inputs, outputs=None):
        shapes.append(tuple(inputs[0].shape))
        return real(self, inputs, outputs)

    monkeypatch.setattr(openvino_runtime.CompiledGraph, "__call__", spy)
    processor = transformers.AutoImageProcessor.from_pretrained(str(_snapshot(hf_cache, repo)))
    photo = photos["chelsea"]
    ours = pipeline.forward_classifier(fast, photo, return_attn=True)
    assert shapes == [(1, 3, 224, 224)]  # the graph ran, at the processor's crop
    with torch.inference_mode():
        out_ref = ref(processor(photo, return_tensors="pt")["pixel_values"], output_attentions=True)
    assert (ours.logits.softmax(-1) - out_ref.logits.softmax(-1)).abs().max() <= 1e-4
    for mine, theirs in zip(ours.attentions, out_ref.attentions, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)  # f32 on another engine: ~2e-5 seen
    assert pipeline.runtime_info(fast)["engine"] == "openvino"

    run = pipeline.run_classifier(fast, photo, input_size=448)
    assert len(shapes) == 1  # 448 px is not the graph's size: the exact model ran
    assert pipeline.runtime_info(fast, None, run.input_size)["precision"] == "exact"
    assert pipeline.describe(fast, run.input_size).endswith("(exact): this input size runs on the exact model")
    assert pipeline.describe(fast, (224, 224)).endswith("(fast)")
    # the CLI's `explain` (and its JSON) reports the same: fast at the processor's size, exact at another
    assert pipeline.explain(photo, fast, "rollout").runtime["engine"] == "openvino"
    assert pipeline.explain(photo, fast, "rollout", input_size=448).runtime["precision"] == "exact"


def _snapshot(cache, repo):
    from tests.support.hubcache import repo_dir

    return next((repo_dir(cache, repo) / "snapshots").iterdir())


TINY_TIMM = dict(img_size=70, patch_size=14, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize("arch", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_timm_checkpoints_through_the_hub(arch, hf_cache, tmp_path, photos):
    """timm's feature models (num_classes 0) as `save_for_hf` writes them; features and block outputs as timm's, at
    the trained size and (dynamic size) at 224."""
    ref = randomise(timm.create_model(arch, pretrained=False, dynamic_img_size=True, **TINY_TIMM), 7, scale=0.2)
    repo = f"timm/{arch}.lvd142m"
    write_timm_repo(hf_cache, repo, ref, TINY_TIMM, tmp_path, formats=("model.safetensors",))
    loaded = loader.load(repo)
    assert loaded.labels == () and not loaded.config.has_head
    for side in (70, 224):
        x = torch.randn(1, 3, side, side)
        with torch.inference_mode():
            ours = loaded.model(x, return_tokens=True)
            feats = ref(x)
            _, inter = ref.forward_intermediates(x, output_fmt="NLC", return_prefix_tokens=True, norm=False)
        assert _cos(ours.logits, feats) >= 0.9999
        torch.testing.assert_close(ours.logits, feats, atol=1e-4, rtol=0)
        for mine, (patches, prefix) in zip(ours.tokens, inter, strict=True):
            torch.testing.assert_close(mine, torch.cat([prefix, patches], dim=1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_exactly_timms_architecture(name):
    ref = timm.create_model(name, pretrained=False, device="meta")
    with torch.device("meta"):
        ours = VisionTransformer(PRESETS[name])
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert PRESETS[name].num_prefix_tokens == ref.num_prefix_tokens


def test_giant_and_swiglu_are_refused_in_one_line():
    with pytest.raises(UnsupportedModelError, match="ViT-g/14 uses a SwiGLU.*supported: DINOv2 ViT-S/14"):
        config_from_timm("vit_giant_patch14_dinov2", 0)
    with pytest.raises(UnsupportedModelError, match="SwiGLU"):
        config_from_hf({"model_type": "dinov2", "use_swiglu_ffn": True, "hidden_size": 1536})


@pytest.mark.slow
@pytest.mark.parametrize("registers", [False, True], ids=["plain", "registers"])
def test_full_size_small_classifier_through_the_hub(registers, hf_cache, tmp_path, photos):
    """ViT-S/14 at full size (518-px positions resampled to the 224 input), random weights at a realistic scale."""
    ref = _hf_model(registers, True, seed=11, full=True)
    repo = f"facebook/dinov2-{'with-registers-' if registers else ''}small-imagenet1k-1-layer"
    write_transformers_repo(hf_cache, repo, ref, tmp_path, preprocessor=BIT_PREPROCESSOR)
    loaded = loader.load(repo)
    x = preprocess.classifier_input(photos["astronaut"], loaded.preprocess)
    with torch.inference_mode():
        out_ref = ref(x, output_attentions=True)
        ours = loaded.model(x, return_attn=True)
    assert (ours.logits.softmax(-1) - out_ref.logits.softmax(-1)).abs().max() <= 1.5e-3
    torch.testing.assert_close(ours.attentions[-1], out_ref.attentions[-1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("classifier", [False, True], ids=["backbone", "classifier"])
def test_every_method_that_applies_runs_and_class_methods_need_a_head(classifier, hf_cache, tmp_path, photos):
    ref = _hf_model(True, classifier, seed=9)
    repo = f"test/dinov2-methods-{classifier}"
    write_transformers_repo(hf_cache, repo, ref, tmp_path, preprocessor=BIT_PREPROCESSOR)
    loaded = loader.load(repo)
    run = pipeline.run_classifier(loaded, photos["chelsea"], input_size=448)
    names = [m.name for m in run.methods()]
    assert {"rollout", "cls-attention"} <= set(names)
    assert ("grad-rollout" in names) == classifier and ("gradcam" in names) == classifier
    for name in names:
        result = run.explain(name)
        assert result.map.shape == (32, 32) and torch.isfinite(result.map).all() and result.map.max() == 1
    if not classifier:
        why = pipeline.get_method("grad-rollout", "vit").why_not(loaded, run)
        assert why is not None and "no classifier head" in why and "use rollout" in why
        assert run.predictions() == []
