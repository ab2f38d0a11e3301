"""The method registry: entries, lookups, one-line errors, and the dispatch of `explain_run` through it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vtdemo.errors import ExplainError
from vtdemo.explain import registry
from vtdemo.explain.api import explain_run
from vtdemo.explain.registry import ExplainOptions, Method
from vtdemo.explain.runs import ClassifierRun

BUILTIN = {
    "vit": ["rollout", "grad-rollout", "cls-attention", "gradcam"],
    "swin": ["swin-rollout", "swin-grad-rollout", "swin-window", "swin-gradcam"],
    "detr": ["detr-decoder", "detr-encoder"],
}


def test_every_family_has_its_methods_and_its_default_first():
    for family, names in BUILTIN.items():
        got = registry.names_for(family)
        assert set(names) <= set(got)
        assert got[0] == names[0] == registry.default_for(family).name
        assert registry.get(None, family).name == names[0]
    for m in registry.METHODS.values():
        assert m.label and m.note and m.paper and m.families <= set(registry.FAMILIES)
        assert m.target in registry.TARGETS and callable(m.fn)


def test_a_method_of_another_family_is_refused_in_one_line_naming_the_allowed_ones():
    with pytest.raises(ExplainError) as info:
        registry.get("swin-rollout", "vit")
    msg = str(info.value)
    assert "\n" not in msg and "does not apply to vit" in msg
    assert all(name in msg for name in BUILTIN["vit"]) and "swin-window" not in msg
    with pytest.raises(ExplainError, match="unknown; choose from detr-decoder"):
        registry.get("lrp-magic", "detr")


def test_entries_are_checked_and_registered_once():
    def fn(run, options):
        return torch.ones(2, 2)

    with pytest.raises(ValueError, match="families"):
        Method("x", "X", "n", "p", frozenset({"resnet"}), "class", False, frozenset(), fn)
    with pytest.raises(ValueError, match="target"):
        Method("x", "X", "n", "p", frozenset({"vit"}), "pixel", False, frozenset(), fn)
    with pytest.raises(ValueError, match="controls"):
        Method("x", "X", "n", "p", frozenset({"vit"}), "class", False, frozenset({"colour"}), fn)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.METHODS["rollout"])


def test_a_new_method_is_one_entry_and_explain_run_dispatches_to_it(monkeypatch):
    """What `README` promises: one function plus one registry entry; the API then finds it, resolves the class and
    scales the map."""
    seen = {}

    def fn(run, options):
        seen["class"] = options.class_index
        return torch.tensor([[0.0, 2.0], [4.0, 1.0]])

    monkeypatch.setitem(
        registry.METHODS,
        "toy",
        Method("toy", "Toy", "n", "p", frozenset({"vit"}), "class", False, frozenset({"class_index"}), fn),
    )
    loaded = SimpleNamespace(family="vit", labels=["a", "b", "c"], id="toy-model")
    run = ClassifierRun(
        loaded=loaded, image=None, x=torch.zeros(1), logits=torch.tensor([0.0, 3.0, 1.0]), attentions=[]
    )
    result = explain_run(run, "toy", ExplainOptions())
    assert seen["class"] == 1 and result.target["label"] == "b"  # the top class, resolved before the call
    torch.testing.assert_close(result.map, torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    explain_run(run, "toy", ExplainOptions(class_index=2))
    assert seen["class"] == 2
    with pytest.raises(ExplainError, match=r"class index 3 is out of range: toy-model has 3 classes \(0..2\)"):
        explain_run(run, "toy", ExplainOptions(class_index=3))
    with pytest.raises(ExplainError, match="target 'mask' is unknown; choose from class, box"):
        explain_run(run, "toy", ExplainOptions(target_kind="mask"))


def test_lrp_entries_are_the_lrp_functions_on_the_run():
    """The registered LRP methods call the LRP code (checked against lxt in test_explain_lrp.py) on the run's input,
    for the asked class, and show its positive part scaled to 1."""
    import torch

    from vtdemo.explain import normalize_map
    from vtdemo.explain.api import explain_run
    from vtdemo.explain.lrp import vit_lrp
    from vtdemo.explain.registry import ExplainOptions
    from vtdemo.explain.runs import ClassifierRun
    from vtdemo.models.vit import VisionTransformer, ViTConfig

    torch.manual_seed(0)
    model = VisionTransformer(
        ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    ).eval()
    x = torch.randn(1, 3, 32, 32)

    class Loaded:
        id, family, labels, device = "tiny", "vit", tuple(f"c{i}" for i in range(5)), torch.device("cpu")
        config = model.cfg

    Loaded.model = model

    with torch.no_grad():
        out = model(x, return_attn=True)
    run = ClassifierRun(
        loaded=Loaded(), image=None, x=x, logits=out.logits[0], attentions=[a[0] for a in out.attentions]
    )
    for name, rule in (("attn-lrp", "attnlrp"), ("cp-lrp", "cplrp")):
        got = explain_run(run, name, ExplainOptions(class_index=3))
        assert got.target["index"] == 3
        torch.testing.assert_close(got.map, normalize_map(vit_lrp(model, x, 3, rule=rule)))


def test_a_detector_tabs_fixed_views_ask_the_registry_for_their_methods():
    """The Detect tab's three views (attention at a clicked point, a detection's attention, its relevance) find their
    methods by target and gradient need, so that another detector family brings its own."""
    assert registry.for_view("detr", "point").name == "detr-encoder"
    assert registry.for_view("detr", "detection").name == "detr-decoder"
    assert registry.for_view("detr", "detection", needs_gradients=True).name == "detr-relevance"
    with pytest.raises(ExplainError, match="no attention method for a detection applies to model family 'vit'"):
        registry.for_view("vit", "detection")
