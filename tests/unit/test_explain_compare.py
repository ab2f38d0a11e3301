"""All methods side by side: rank agreement by hand, the scores on a model built so that only a few patches
matter, one map per method, and the CLI's `explain --method all`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from tests.unit.test_cli import ROOT, run_cli, tiny_cache  # noqa: F401  (tiny_cache is a fixture)
from tests.unit.test_explain_vit import PatchSum
from vtdemo.explain import registry
from vtdemo.explain.compare import compare, spearman_matrix
from vtdemo.explain.registry import Method
from vtdemo.explain.runs import ClassifierRun


def test_spearman_by_hand():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    reverse = torch.tensor([[4.0, 3.0], [2.0, 1.0]])
    fine = a.repeat_interleave(2, 0).repeat_interleave(2, 1)  # [4, 4]: area-averages back to a exactly
    swap = torch.tensor([[2.0, 1.0], [3.0, 4.0]])  # ranks (2, 1, 3, 4) vs (1, 2, 3, 4): 1 - 6 * 2 / (4 * 15) = 0.8
    matrix, grid = spearman_matrix([a, reverse, fine, swap, torch.ones(2, 2)])
    assert grid == [2, 2]
    assert matrix[0][0] == 1.0 and matrix[0][1] == pytest.approx(-1.0) and matrix[0][2] == pytest.approx(1.0)
    assert matrix[0][3] == pytest.approx(0.8) and matrix[3][0] == matrix[0][3]
    assert matrix[4] == [None] * 5  # a constant map has no ranking


class Logits(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return SimpleNamespace(logits=self.inner(x))


def test_faithful_map_wins_and_each_method_runs_once(monkeypatch):
    important = [0, 5, 10, 15]
    right = torch.zeros(16)
    right[important] = 1.0
    calls = {"oracle": 0, "anti": 0}

    def method(name, m):
        def fn(run, options):
            calls[name] += 1
            return m.view(4, 4)

        return Method(name, name, "n", "p", frozenset({"vit"}), "class", False, frozenset(), fn)

    monkeypatch.setitem(registry.METHODS, "oracle", method("oracle", right))
    monkeypatch.setitem(registry.METHODS, "anti", method("anti", 1.0 - right))
    loaded = SimpleNamespace(
        family="vit",
        labels=["yes", "no"],
        id="patch-sum",
        model=Logits(PatchSum(important)),
        device=torch.device("cpu"),
    )
    x = torch.ones(1, 3, 32, 32)
    run = ClassifierRun(loaded=loaded, image=None, x=x, logits=loaded.model(x).logits[0], attentions=[])
    seen = []
    result = compare(run, methods=["oracle", "anti"], steps=16, progress=lambda i, n, name: seen.append(name))
    assert calls == {"oracle": 1, "anti": 1}
    assert seen == ["oracle", "anti", "agreement", "oracle curves", "anti curves", "scored"]
    oracle, anti = result.scores
    assert oracle.random_deletion_auc == anti.random_deletion_auc  # one random order per grid
    assert oracle.deletion_auc < oracle.random_deletion_auc < anti.deletion_auc
    assert oracle.insertion_auc > oracle.random_insertion_auc > anti.insertion_auc
    assert result.spearman[0][1] == pytest.approx(-1.0)
    d = result.to_dict()
    assert d["spearman"]["methods"] == ["oracle", "anti"] and d["methods"][0]["grid"] == [4, 4]


@pytest.mark.slow
def test_cli_all_methods(tiny_cache):  # noqa: F811
    cache, repos = tiny_cache
    image = str(ROOT / "assets/examples/coffee.png")
    proc = run_cli("explain", "--model", repos["vit"], "--method", "all", "--json", image, cache=cache)
    assert proc.returncode == 0, proc.stderr
    (item,) = json.loads(proc.stdout)
    names = [m["method"] for m in item["methods"]]
    assert names == registry.names_for("vit") and item["skipped"] == {}
    for m in item["methods"]:
        assert m["grid"] == [14, 14] and max(max(r) for r in m["map"]) == pytest.approx(1.0)
        for k in ("deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc"):
            assert 0 <= m[k] <= 1
    matrix = item["spearman"]["matrix"]
    assert len(matrix) == len(names) and all(matrix[i][i] in (1.0, None) for i in range(len(names)))
    proc = run_cli(
        "explain", "--model", repos["detr"], "--method", "all", "--threshold", "0.1", "--json", image, cache=cache
    )
    assert proc.returncode == 0, proc.stderr
    (item,) = json.loads(proc.stdout)
    assert [m["method"] for m in item["methods"]] == ["detr-decoder", "detr-relevance"]
    assert list(item["skipped"]) == ["detr-encoder"] and "query" in item["target"]


def test_the_grids_one_stream_gives_the_areas_of_the_plain_curves(monkeypatch):
    """`score_maps` runs every curve's images as one batched stream of distinct images (`deletion.CurveStream`) and
    takes the full image's probability from the run: at precision exact the areas are those of each curve computed
    alone, one image at a time (within 1e-6), and a map ranked like another adds no image."""
    from vtdemo.explain import deletion
    from vtdemo.explain.api import class_probability
    from vtdemo.explain.registry import ExplainOptions
    from vtdemo.models.vit import VisionTransformer, ViTConfig

    torch.manual_seed(0)
    model = VisionTransformer(
        ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    ).eval()
    loaded = SimpleNamespace(
        id="tiny", family="vit", labels=tuple(f"c{i}" for i in range(5)), device=torch.device("cpu"), model=model
    )
    loaded.config = model.cfg
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model(x, return_attn=True)
    run = ClassifierRun(loaded=loaded, image=None, x=x, logits=out.logits[0], attentions=[a[0] for a in out.attentions])
    rollout = registry.get("rollout", "vit")
    monkeypatch.setitem(
        registry.METHODS,
        "rollout-again",
        Method("rollout-again", "again", "n", "p", frozenset({"vit"}), "class", False, frozenset(), rollout.fn),
    )
    names = ["rollout", "cls-attention", "gradcam", "rollout-again"]
    options = ExplainOptions(class_index=3)
    seen = {"images": 0}
    probability = class_probability(run, 3)

    def counted(run_, index):
        def p(images):
            seen["images"] += images.shape[0]
            return probability(images)

        return p

    monkeypatch.setattr("vtdemo.explain.compare.class_probability", counted)
    steps = 4
    result = compare(run, options, steps=steps, methods=names)
    # 3 distinct maps + the random order, 2 curves x 3 interior images each, and the empty image (the full one is the
    # run's); fewer only if two of them share a perturbed image
    assert seen["images"] <= 4 * 2 * (steps - 1) + 1
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    plain = {}
    for curve in (deletion.deletion_curve, deletion.insertion_curve):
        frac, p = curve(probability, x, order, (4, 4), steps, batch_size=1)
        plain[curve] = deletion.area_under_curve(frac, p)
    for score in result.scores:
        assert score.random_deletion_auc == pytest.approx(plain[deletion.deletion_curve], abs=1e-6)
        assert score.random_insertion_auc == pytest.approx(plain[deletion.insertion_curve], abs=1e-6)
        o = deletion.patch_order(score.map)
        frac, d = deletion.deletion_curve(probability, x, o, (4, 4), steps, batch_size=1)
        _, ins = deletion.insertion_curve(probability, x, o, (4, 4), steps, batch_size=1)
        assert score.deletion_auc == pytest.approx(deletion.area_under_curve(frac, d), abs=1e-6)
        assert score.insertion_auc == pytest.approx(deletion.area_under_curve(frac, ins), abs=1e-6)
    assert result.scores[0].deletion_auc == result.scores[3].deletion_auc
