"""Runs at another input size and register / avg-pool models through the pipeline: the preprocessing equals the
reference library's at that size, and every ViT map follows the run's real patch grid and the model's readout."""

from __future__ import annotations

import pytest
import torch

from tests.support.hubcache import write_timm_repo
from tests.support.weights import randomise
from vtdemo import loader, pipeline, preprocess
from vtdemo.errors import VtdemoError

timm = pytest.importorskip("timm")

TIMM_CFG = dict(
    input_size=(3, 224, 224),
    interpolation="bicubic",
    crop_pct=0.9,
    crop_mode="center",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)


def _timm_x(photo, **overrides):
    cfg = timm.data.resolve_data_config(pretrained_cfg=dict(TIMM_CFG, **overrides))
    return timm.data.create_transform(**cfg)(photo).unsqueeze(0)


def test_default_recipe_is_returned_unchanged(photos):
    cfg = preprocess.config_from_timm(TIMM_CFG)
    assert preprocess.for_input_size(cfg, photos["chelsea"].size) is cfg
    torch.testing.assert_close(
        preprocess.classifier_input(photos["chelsea"], cfg), _timm_x(photos["chelsea"]), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("size", [448, 320, 160])
def test_square_size_equals_timms_transform_at_that_size(size, photos):
    cfg = preprocess.for_input_size(preprocess.config_from_timm(TIMM_CFG), photos["chelsea"].size, size, multiple=16)
    x = preprocess.classifier_input(photos["chelsea"], cfg)
    torch.testing.assert_close(x, _timm_x(photos["chelsea"], input_size=(3, size, size)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("photo", ["chelsea", "astronaut", "rocket"])
def test_keep_aspect_equals_timms_squash_transform(photo, photos):
    image = photos[photo]
    cfg = preprocess.for_input_size(preprocess.config_from_timm(TIMM_CFG), image.size, keep_aspect=True, multiple=16)
    x = preprocess.classifier_input(image, cfg)
    w, h = image.size
    assert x.shape[-2] % 16 == 0 and x.shape[-1] % 16 == 0 and min(x.shape[-2:]) == 224
    assert abs(x.shape[-1] / x.shape[-2] - w / h) <= 16 / 224 + 1e-9 or max(w, h) / min(w, h) > 3
    ref = _timm_x(image, input_size=(3, *x.shape[-2:]), crop_pct=1.0, crop_mode="squash")
    torch.testing.assert_close(x, ref, atol=1e-6, rtol=0)
    assert preprocess.input_region(image.size, cfg) == pytest.approx((0, 0, w, h))  # the whole photo


def test_transformers_recipe_at_another_size_equals_the_image_processor(photos):
    transformers = pytest.importorskip("transformers")
    base = dict(resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = transformers.ViTImageProcessor(size={"height": 224, "width": 224}, **base)
    cfg = preprocess.config_from_hf(processor.to_dict())
    big = preprocess.for_input_size(cfg, photos["coffee"].size, 384)
    ref = transformers.ViTImageProcessor(size={"height": 384, "width": 384}, **base)(
        photos["coffee"], return_tensors="pt"
    )
    torch.testing.assert_close(
        preprocess.classifier_input(photos["coffee"], big), ref["pixel_values"], atol=1e-6, rtol=0
    )


ARGS = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture
def tiny_repos(hf_cache, tmp_path):
    repos = {}
    for arch in ("vit_tiny_patch16_224", "vit_medium_patch16_reg4_gap_256", "deit3_small_patch16_224"):
        ref = randomise(timm.create_model(arch, pretrained=False, num_classes=10, **ARGS), 2, scale=0.3)
        write_timm_repo(hf_cache, f"test/{arch}", ref, ARGS, tmp_path, formats=("model.safetensors",))
        repos[arch] = (f"test/{arch}", ref)
    return repos


def test_maps_follow_the_grid_of_a_run_at_another_size(tiny_repos, photos):
    repo, ref = tiny_repos["vit_tiny_patch16_224"]
    loaded = loader.load(repo)
    run = pipeline.run_classifier(loaded, photos["astronaut"], input_size=64)  # trained at 32: grid 4x4 -> 8x8
    assert run.grid == (8, 8) and run.input_size == (64, 64) and run.trained_size == (32, 32)
    assert "trained at 32 px, running at 64 px (8x8 patches)" in run.size_note
    offered = [m.name for m in run.methods()]
    assert {"rollout", "grad-rollout", "cls-attention", "gradcam"} <= set(offered)
    for method in offered:
        m, _ = pipeline.classifier_map(run, method)
        assert m.shape == (8, 8)
    with torch.inference_mode():  # the run's logits are timm's at that size
        dyn = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, dynamic_img_size=True, **ARGS)
        dyn.load_state_dict(ref.state_dict())
        torch.testing.assert_close(run.logits, dyn.eval()(run.x)[0], atol=1e-4, rtol=0)
    wide = pipeline.run_classifier(loaded, photos["chelsea"], keep_aspect=True)  # 451x300 photo -> 32x48
    assert wide.grid == (4, 6) and pipeline.classifier_map(wide, "rollout")[0].shape == (4, 6)
    assert wide.region == pytest.approx((0, 0, *photos["chelsea"].size))
    assert pipeline.run_classifier(loaded, photos["chelsea"]).size_note is None
    with pytest.raises(VtdemoError, match="at most 1024"):
        pipeline.run_classifier(loaded, photos["chelsea"], input_size=8 * 40)


def test_a_size_chosen_for_another_model_runs_where_it_can_else_at_the_trained_size(tiny_repos, photos):
    """`run_classifier_at` (the Classify column keeps its size across models): 64 px runs on the tiny patch-8 ViT
    trained at 32; 68 px (not a multiple of the patch) runs at the trained size, and the run's note says why."""
    loaded = loader.load(tiny_repos["vit_tiny_patch16_224"][0])
    run = pipeline.run_classifier_at(loaded, photos["astronaut"], pipeline.SizeChoice(64))
    assert run.input_size == (64, 64) and run.choice == pipeline.SizeChoice(64) and run.refused is None
    refused = pipeline.run_classifier_at(loaded, photos["astronaut"], pipeline.SizeChoice(68))
    assert refused.input_size == (32, 32) and refused.choice == pipeline.SizeChoice()
    assert refused.size_note is not None and refused.size_note.endswith("; running at the trained size")
    assert "not 68" in refused.size_note and "patch size (8 px)" in refused.size_note
    trained = pipeline.run_classifier_at(loaded, photos["astronaut"], None)
    assert trained.input_size == (32, 32) and trained.size_note is None


def test_register_model_maps_use_the_mean_of_patch_rows(tiny_repos, photos):
    from vtdemo.explain import normalize_map
    from vtdemo.explain import vit as ex

    loaded = loader.load(tiny_repos["vit_medium_patch16_reg4_gap_256"][0])
    assert loaded.config.num_prefix_tokens == 4 and loaded.config.readout == "avg"
    run = pipeline.run_classifier(loaded, photos["coffee"])
    m, _ = pipeline.classifier_map(run, "rollout")
    R = ex.rollout_matrix(run.attentions, num_prefix=4)
    expected = normalize_map(R[4:, 4:].mean(0).view(4, 4))  # patch rows 4.., patch columns 4..
    torch.testing.assert_close(m, expected)
    assert pipeline.classifier_map(run, "grad-rollout")[0].shape == (4, 4)
    with pytest.raises(VtdemoError, match="no CLS token"):
        pipeline.classifier_map(run, "cls-attention")
    methods = pipeline.classifier_methods(loaded)
    assert "cls-attention" not in methods and {"rollout", "grad-rollout"} <= set(methods)
    report = run.artefacts()
    assert report["norms"].shape == (2, 4, 4) and report["prefix_names"] == [f"register {i}" for i in range(1, 5)]
    assert report["prefix_norms"].shape == (2, 4)


def test_deit3_maps_and_the_masked_rollout_switch(tiny_repos, photos):
    from vtdemo.explain import artefacts, normalize_map

    loaded = loader.load(tiny_repos["deit3_small_patch16_224"][0])
    run = pipeline.run_classifier(loaded, photos["rocket"])
    assert {"rollout", "grad-rollout", "cls-attention", "gradcam"} <= set(pipeline.classifier_methods(loaded))
    for method in pipeline.classifier_methods(loaded):
        assert pipeline.classifier_map(run, method)[0].shape == (4, 4)
    report = artefacts.inspect(run, k=0.5, min_ratio=1.0)  # a loose rule, so that something is flagged
    outliers = report["outliers"]
    assert outliers.any() and torch.equal(outliers, artefacts.find_outliers(report["norms"][-1], 0.5, 1.0)[0])
    masked, _ = pipeline.classifier_map(run, "rollout", mask_outliers=True)
    default = run.artefacts()["outliers"]  # the switch uses the default rule
    torch.testing.assert_close(masked, normalize_map(artefacts.masked_rollout(run.attentions, default).view(4, 4)))
    with pytest.raises(VtdemoError, match="rollout only"):
        pipeline.classifier_map(run, "grad-rollout", mask_outliers=True)


def test_swin_runs_at_the_sizes_its_windows_allow_and_refuses_others(hf_cache, tmp_path, photos):
    from tests.support.tiny_models import SWIN_ARGS

    ref = randomise(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, **SWIN_ARGS))
    write_timm_repo(hf_cache, "test/swin", ref, SWIN_ARGS, tmp_path, formats=("model.safetensors",))
    loaded = loader.load("test/swin")
    with pytest.raises(VtdemoError, match="ViT/DeiT models only"):  # a Swin keeps its square windows
        pipeline.run_classifier(loaded, photos["chelsea"], keep_aspect=True)
    with pytest.raises(VtdemoError, match="runs at 224, 448 px only, not 336"):  # the sizes its windows allow
        pipeline.run_classifier(loaded, photos["chelsea"], input_size=336)
    run = pipeline.run_classifier(loaded, photos["chelsea"], input_size=448)  # rebuilt for 448: twice the tokens
    assert run.input_size == (448, 448) and run.model_as_loaded is loaded
