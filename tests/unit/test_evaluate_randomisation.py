"""Cascading parameter randomisation (Adebayo et al. 2018) on the tiny random ViT and Swin checkpoints.

The paper's own contrast: an edge detector reads only the image, so its map survives randomised weights (and fails
the check); gradient rollout reads the weights, so its map decorrelates (and passes).
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from vtdemo import cli, loader
from vtdemo.evaluate import randomisation as rz


@pytest.fixture(scope="module")
def loaded(tiny_hub):
    cache, ids = tiny_hub
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_CACHE", str(cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    loader.clear_cache()
    yield {k: loader.load(ids[k], "cpu") for k in ("vit", "swin")}
    loader.clear_cache()
    mp.undo()


def image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_edge_detector_survives_and_gradient_rollout_does_not(loaded, seed):
    vit = loaded["vit"]
    before = {k: v.clone() for k, v in vit.model.state_dict().items()}
    curves = rz.cascading_randomisation(vit, image(seed), ["edge", "grad-rollout"], seed=seed)
    edge, grad = curves["edge"], curves["grad-rollout"]
    assert edge.steps == ["original", "head", "block 1", "block 0", "embedding"] == grad.steps
    assert edge.spearman == [1.0] * 5 and edge.survives and edge.verdict.startswith("fails")
    assert grad.final is not None and abs(grad.final) < 0.5 and not grad.survives
    assert grad.verdict.startswith("passes")
    # the randomisation ran on a copy: the cached model is untouched
    assert all(torch.equal(before[k], v) for k, v in vit.model.state_dict().items())
    assert loader.load(vit.id, "cpu") is vit
    record = json.loads(json.dumps(grad.to_dict()))
    assert record["passes"] is True and len(record["spearman"]) == 5


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_the_cascade_is_top_down_and_ends_with_every_weight_redrawn(loaded, family):
    model = loaded[family].model
    steps = rz.stages(model, family)
    assert steps[0][0] == "head" and steps[-1][0] == "embedding"
    if family == "swin":
        assert [s for s, _ in steps[1:3]] == ["stage 3 block 1", "stage 3 block 0"]
    copy = __import__("copy").deepcopy(model)
    g = torch.Generator().manual_seed(0)
    redrawn = sum(rz.randomise_(copy, prefixes, g) for _, prefixes in steps)
    params = dict(model.named_parameters())
    assert redrawn == len(params)
    for name, p in copy.named_parameters():
        if params[name].numel() > 1 and params[name].std() > 0:
            assert not torch.equal(p, params[name]), name
            assert float(p.std()) == pytest.approx(float(params[name].std()), rel=0.5)


def test_spearman_is_scipys_and_constant_maps_have_none():
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(5, 5, generator=g), torch.rand(5, 5, generator=g)
    assert rz.spearman(a, b) == pytest.approx(spearmanr(a.flatten(), b.flatten()).statistic)
    assert rz.spearman(torch.arange(4.0), -torch.arange(4.0)) == pytest.approx(-1.0)
    assert rz.spearman(torch.ones(3, 3), a[:3, :3]) is None
    curve = rz.RandomisationCurve("m", ["original", "head"], [1.0, None])
    assert not curve.survives and "undefined" in curve.verdict


def test_chart_draws_each_method(loaded):
    curves = [
        rz.RandomisationCurve("a", ["original", "head", "block 0"], [1.0, 0.2, -0.1]).to_dict(),
        rz.RandomisationCurve("b", ["original", "head", "block 0"], [1.0, 1.0, None]).to_dict(),
    ]
    img = rz.chart(curves, size=(320, 200))
    assert img.size == (320, 200) and img.mode == "RGB"
    pixels = np.asarray(img).reshape(-1, 3)
    for colour in rz.PALETTE[:2]:
        assert (pixels == colour).all(-1).sum() > 20


def test_randomisation_cli_json(loaded, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image(5).save(folder / "a.png")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(
            [
                "evaluate",
                "randomisation",
                "--model",
                loaded["vit"].id,
                "--methods",
                "edge,grad-rollout",
                "--images",
                str(folder),
                "--out",
                str(tmp_path / "r.jsonl"),
                "--json",
                "--device",
                "cpu",
            ]
        )
    assert code == 0
    summary = json.loads(out.getvalue())
    by = {m["method"]: m for m in summary["methods"]}
    assert by["edge"]["passes"] is False and by["edge"]["fails"] == 1
    assert by["grad-rollout"]["passes"] is True
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["image"], r["method"]) for r in lines] == [("a.png", "edge"), ("a.png", "grad-rollout")]
