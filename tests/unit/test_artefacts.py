"""The register / high-norm artefact inspector: norms on the patch grid, the outlier rule, and the masked rollout
(small cases by hand, and a tiny model with a planted high-norm token)."""

from __future__ import annotations

import pytest
import torch

from vtdemo.explain import artefacts
from vtdemo.explain import vit as ex


def _one_head(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).float().unsqueeze(0)  # [1, N, N]


# CLS + 3 patches (grid 1x3); the patch in the middle (token 2) is the outlier.
A = _one_head([[0.4, 0.1, 0.4, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.7, 0.1], [0.2, 0.2, 0.4, 0.2]])
MIDDLE = torch.tensor([False, True, False])


def test_masked_rollout_one_layer_by_hand():
    # unmasked: row 0 + I = [1.4, .1, .4, .1], sum 2 -> patches [.05, .2, .05]
    torch.testing.assert_close(ex.rollout([A]), torch.tensor([0.05, 0.2, 0.05]))
    # masked: column 2 -> 0, row 0 + I = [1.4, .1, 0, .1], sum 1.6 -> patches [.0625, 0, .0625]
    torch.testing.assert_close(artefacts.masked_rollout([A], MIDDLE), torch.tensor([0.0625, 0.0, 0.0625]))


def test_masked_rollout_two_layers_by_hand():
    # masked A' rows (column 2 zeroed, + I, / row sum): [7/8, 1/16, 0, 1/16], [1/7, 5/7, 0, 1/7],
    # [1/13, 1/13, 10/13, 1/13], [1/8, 1/8, 0, 3/4]; R[0] = row0 @ A':
    # patch 1 = 1/16 * (7/8 + 5/7 + 1/8) = 3/28, patch 3 = 1/16 * (7/8 + 1/7 + 3/4) = 99/896, the masked one 0.
    got = artefacts.masked_rollout([A, A], MIDDLE)
    torch.testing.assert_close(got, torch.tensor([3 / 28, 0.0, 99 / 896]))


def test_masked_rollout_avg_readout_by_hand():
    # avg readout: mean of the patch rows (1..3) of A' over the patch columns, then the outlier's own entry -> 0
    got = artefacts.masked_rollout([A], MIDDLE, readout="avg")
    expected = torch.tensor([(5 / 7 + 1 / 13 + 1 / 8) / 3, 0.0, (1 / 7 + 1 / 13 + 3 / 4) / 3])
    torch.testing.assert_close(got, expected)


def test_avg_readout_of_the_plain_rollout_by_hand():
    # one register + 2 patches: A + I rows sum to 2 -> A' = [[.75,.125,.125],[.1,.8,.1],[.05,.15,.8]]
    a = _one_head([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]])
    torch.testing.assert_close(ex.rollout([a], num_prefix=1, readout="avg"), torch.tensor([0.475, 0.45]))
    torch.testing.assert_close(ex.rollout([a], num_prefix=1, readout="token"), torch.tensor([0.125, 0.125]))


def test_outlier_rule_by_hand():
    norms = torch.tensor([[10.0, 11.0, 9.0], [10.0, 80.0, 12.0], [8.0, 10.0, 30.0]])
    mask, threshold = artefacts.find_outliers(norms)
    # median 10, |x - 10| = [0,1,1,0,70,2,2,0,20] -> MAD 1; max(10 + 5 * 1.4826, 2 * 10) = 20
    assert threshold == pytest.approx(20.0)
    assert mask.tolist() == [[False, False, False], [False, True, False], [False, False, True]]
    flat = torch.full((4, 4), 5.0)
    assert not artefacts.find_outliers(flat)[0].any()  # no spread, no outlier


def test_norms_on_the_grid_by_hand():
    tokens = [torch.zeros(1, 1 + 6, 2)]
    tokens[0][0, 1 + 4] = torch.tensor([3.0, 4.0])  # patch 4 = row 1, col 1 of a 2x3 grid
    tokens[0][0, 0] = torch.tensor([6.0, 8.0])
    norms = artefacts.token_norms(tokens, num_prefix=1, grid=(2, 3))
    assert norms.shape == (1, 2, 3) and norms[0, 1, 1] == 5.0 and norms.sum() == 5.0
    assert artefacts.prefix_norms(tokens, 1).tolist() == [[10.0]]
    with pytest.raises(ValueError, match="do not fill"):
        artefacts.token_norms(tokens, num_prefix=1, grid=(2, 2))


def test_planted_high_norm_token_is_found_and_masked():
    timm = pytest.importorskip("timm")
    from tests.support.weights import randomise_classifier
    from vtdemo.convert import vit as convert
    from vtdemo.models.vit import VisionTransformer, config_from_timm

    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    ref = randomise_classifier(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **args), 5)
    model = VisionTransformer(config_from_timm("vit_tiny_patch16_224", 10, args)).eval()
    model.load_state_dict(convert.from_timm(ref.state_dict()), strict=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 32, 32, generator=g) * 0.5
    x[..., 8:16, 16:24] *= 40  # patch (row 1, col 2) = patch index 6: a huge patch embedding
    with torch.inference_mode():
        out = model(x, return_attn=True, return_tokens=True)
    norms = artefacts.token_norms(out.tokens, 1, out.grid)  # [L, 4, 4]
    mask, threshold = artefacts.find_outliers(norms[-1])
    expected_mask = torch.zeros(4, 4, dtype=torch.bool)
    expected_mask[1, 2] = True
    assert torch.equal(mask, expected_mask) and norms[-1, 1, 2] > threshold

    attentions = [a[0] for a in out.attentions]  # [nh, N, N]
    plain = ex.rollout(attentions)
    masked = artefacts.masked_rollout(attentions, mask)
    # by hand: fuse heads, zero column 1 + 6 = 7, add I, renormalise rows, multiply, CLS row, patch 6 -> 0
    R = torch.eye(17)
    for a in attentions:
        fused = a.mean(0).clone()
        fused[:, 7] = 0
        step = fused + torch.eye(17)
        R = (step / step.sum(1, keepdim=True)) @ R
    by_hand = R[0, 1:].clone()
    by_hand[6] = 0
    torch.testing.assert_close(masked, by_hand)
    assert plain[6] > 0 and masked[6] == 0
    assert (masked - plain).abs().max() > 1e-3  # masking moved the attention elsewhere
    assert masked.sum() == pytest.approx(float(R[0, 1:].sum() - R[0, 7]), abs=1e-6)


def test_caption_says_what_the_dots_are():
    text = artefacts.CAPTION
    assert "norm" in text and "register" in text and "Darcet" in text and "outlier" in text


def test_masking_is_refused_for_other_methods(tiny_hub, monkeypatch, photos):
    from vtdemo import loader
    from vtdemo.errors import ExplainError
    from vtdemo.explain.api import explain_run
    from vtdemo.explain.registry import ExplainOptions
    from vtdemo.explain.runs import run_classifier

    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_hub.cache))
    loader.clear_cache()
    run = run_classifier(loader.load(tiny_hub.repos["vit"], "cpu"), photos["chelsea"])
    masked = ExplainOptions(mask_outliers=True)
    assert tuple(explain_run(run, "rollout", masked).map.shape) == run.patch_grid
    for method in ("grad-rollout", "cls-attention"):
        with pytest.raises(ExplainError, match="ViT rollout only"):
            explain_run(run, method, masked)
    loader.clear_cache()
