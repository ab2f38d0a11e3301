"""The fast path (vtdemo.engine) on tiny models: same records as the exact path, outputs and attention within the
guard, gradients on the exact model, the conversion cache (miss, hit, corrupt, stale), and the precision reported."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("openvino")
pytest.importorskip("timm")

from tests.support.bf16 import choose_bf16, faithful, stray  # noqa: E402
from vtdemo import loader, pipeline, preprocess  # noqa: E402
from vtdemo.engine import cache, exact_model, make_fast, openvino_runtime, release_weights, runtime_info  # noqa: E402
from vtdemo.engine.fast import FastModel, choose  # noqa: E402
from vtdemo.models.swin import SwinAttention  # noqa: E402
from vtdemo.pipeline import fidelity  # noqa: E402

pytestmark = pytest.mark.slow  # conversions to the fast engine (OpenVINO), 5-30 s a test

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The app's tiny ViT / Swin / DETR repos in a Hub cache, and an engine cache of their own."""
    from tests.support.tiny_models import write_tiny_repos

    root = tmp_path_factory.mktemp("engine")
    repos = write_tiny_repos(root / "hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(root / "hub"))
        mp.setenv("VTDEMO_ENGINE_CACHE", str(root / "engine"))
        loader.clear_cache()
        yield root, repos
        loader.clear_cache()


@pytest.fixture
def conversions(monkeypatch):
    """Counts calls of the OpenVINO conversion (a cache miss converts, a hit does not)."""
    calls: list[str] = []
    real = openvino_runtime.convert

    def counting(family, model, return_attn, folder):
        calls.append(family)
        return real(family, model, return_attn, folder)

    monkeypatch.setattr(openvino_runtime, "convert", counting)
    return calls


def test_fast_classifiers_match_exact_records(tiny, photos):
    _, repos = tiny
    for family in ("vit", "swin"):
        exact, fast = loader.load(repos[family]), loader.load(repos[family], precision="fast")
        assert isinstance(fast.model, FastModel) and fast.model.exact is exact.model  # one copy of the weights
        assert loader.load(repos[family], precision="fast") is fast  # cached per precision
        x = preprocess.classifier_input(photos["chelsea"], exact.preprocess)
        with torch.inference_mode():
            a, b = exact.model(x, return_attn=True), fast.model(x, return_attn=True)
            plain = fast.model(x)
        assert plain.attentions is None  # the plain graph (its own: the weights are not released here)
        assert (a.logits.softmax(-1) - plain.logits.softmax(-1)).abs().max() <= 0.02
        assert b.logits.dtype == torch.float32 and b.logits.shape == a.logits.shape
        assert (a.logits.softmax(-1) - b.logits.softmax(-1)).abs().max() <= 0.02
        assert len(a.attentions) == len(b.attentions)
        for ra, rb in zip(a.attentions, b.attentions, strict=False):
            if family == "swin":
                assert isinstance(rb, SwinAttention)
                assert (ra.stage, ra.block, ra.grid, ra.window, ra.shift) == (
                    rb.stage,
                    rb.block,
                    rb.grid,
                    rb.window,
                    rb.shift,
                )
                ra, rb = ra.attn, rb.attn
            assert ra.shape == rb.shape
            assert torch.allclose(rb.sum(-1), torch.ones(()), atol=2e-2)  # still probabilities
            assert (ra - rb).abs().mean() <= 1e-3  # single sharp entries may move more; the maps are guarded below
        for name, image in photos.items():
            gaps = fidelity.classifier_gaps(exact, fast, image)
            assert fidelity.within_guard(gaps), (family, name, gaps)


def test_fast_batches_for_the_deletion_check(tiny, photos):
    _, repos = tiny
    exact, fast = loader.load(repos["vit"]), loader.load(repos["vit"], precision="fast")
    x = torch.cat([preprocess.classifier_input(p, exact.preprocess) for p in photos.values()])  # [4, ...]
    with torch.inference_mode():
        a, b = exact.model(x).logits.softmax(-1), fast.model(x).logits.softmax(-1)
    assert b.shape == a.shape and (a - b).abs().max() <= 0.02


def test_gradient_methods_run_on_the_exact_model(tiny, photos):
    _, repos = tiny
    for family, method in (("vit", "grad-rollout"), ("swin", "swin-grad-rollout")):
        exact, fast = loader.load(repos[family]), loader.load(repos[family], precision="fast")
        run_a, run_b = pipeline.run_classifier(exact, photos["coffee"]), pipeline.run_classifier(fast, photos["coffee"])
        cls = int(run_a.logits.argmax())
        map_a, _ = pipeline.classifier_map(run_a, method, class_index=cls)
        map_b, _ = pipeline.classifier_map(run_b, method, class_index=cls)
        assert torch.equal(map_a, map_b)  # same input tensor, same PyTorch fp32 backward pass
        assert exact_model(fast).model is exact.model and exact_model(exact) is exact
        assert exact_model(fast).precision == "exact"


def test_fast_detr_within_guard(tiny, photos):
    _, repos = tiny
    exact, fast = loader.load(repos["detr"]), loader.load(repos["detr"], precision="fast")
    seen = 0
    for name, image in photos.items():
        gaps = fidelity.detr_gaps(exact, fast, image)
        assert fidelity.within_guard(gaps), (name, gaps)
        seen += int(gaps["detections"])
    assert seen > 0  # the guard compared some detections
    a = pipeline.forward_detr(exact, [photos["rocket"]])  # the plain graph (no attention outputs)
    b = pipeline.forward_detr(fast, [photos["rocket"]])
    assert b.encoder_attn is None and b.feature_size == a.feature_size
    assert torch.equal(a.feature_mask, b.feature_mask)
    assert (a.logits.softmax(-1) - b.logits.softmax(-1)).abs().max() <= 0.02
    assert (a.boxes - b.boxes).abs().max() <= 3 / max(photos["rocket"].size)


def test_a_classifier_call_without_attention_runs_a_plain_graph_until_weights_are_released(tiny, photos, monkeypatch):
    """Writing out every attention probability doubles a DINOv2 B/14's time at 448 px (OpenVINO bf16, AMX): a fast
    classifier's call without attention has a plain graph of its own, with the same logits; once the weights are
    released (the app keeps one copy of each model) the attention graph serves it and nothing more is compiled."""
    _, repos = tiny
    kinds: list[bool] = []  # return_attn of every graph compiled
    real_load = openvino_runtime.load_graph

    def spy(*args, **kwargs):
        kinds.append(args[4])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(openvino_runtime, "load_graph", spy)
    loader.clear_cache()
    exact = loader.load(repos["vit"])
    fast = make_fast(exact)
    x = preprocess.classifier_input(photos["chelsea"], exact.preprocess)
    with torch.inference_mode():
        with_maps = fast.model(x, return_attn=True)
        plain = fast.model(x)
        want = exact.model(x).logits.softmax(-1)  # the exact model, pinned to timm by the parity tests
    assert kinds == [True, False] and plain.attentions is None
    assert (plain.logits.softmax(-1) - want).abs().max() <= 0.02

    own = dataclasses.replace(exact, model=copy.deepcopy(exact.model))  # released below: not `exact`'s module
    app_copy = make_fast(own, reload=lambda: exact.model)  # as the app holds it
    kinds.clear()
    with torch.inference_mode():
        app_copy.model(x, return_attn=True)
        assert release_weights(app_copy)
        served = app_copy.model(x)
    assert kinds == [True] and torch.equal(served.logits, with_maps.logits)


def test_conversion_cache_miss_hit_corrupt(tiny, photos, conversions, caplog):
    root, repos = tiny
    exact = loader.load(repos["vit"])
    x = preprocess.classifier_input(photos["chelsea"], exact.preprocess)
    with torch.inference_mode():
        want = exact.model(x).logits.softmax(-1)

    def fresh_run() -> torch.Tensor:
        model = FastModel(exact.model, "vit", exact.id, exact.weights, choose("cpu"))  # a new process, in effect
        with torch.inference_mode():
            got = model(x).logits.softmax(-1)
        assert (got - want).abs().max() <= 0.02
        return got

    key = cache.entry_key(
        exact.id,
        exact.weights,
        "openvino",
        openvino_runtime.version(),
        "plain",  # a call without attention: the plain graph
        openvino_runtime.shape_policy("vit", exact.model),
    )
    cache.remove(key)
    fresh_run()
    assert conversions == ["vit"]  # miss: converted
    folder = cache.lookup(key)
    assert folder is not None and folder.parent == root / "engine" and (folder / "model.xml").is_file()
    fresh_run()
    assert conversions == ["vit"]  # hit: read back, not converted

    (folder / "model.bin").write_bytes((folder / "model.bin").read_bytes()[:1000])  # truncated
    fresh_run()
    assert conversions == ["vit", "vit"] and "truncated" in caplog.text
    (folder / "entry.json").write_text("{not json")
    fresh_run()
    assert conversions == ["vit"] * 3 and "corrupt" in caplog.text
    xml = (folder / "model.xml").read_bytes()
    (folder / "model.xml").write_bytes(b"<" * len(xml))  # same size, unreadable: OpenVINO refuses it
    fresh_run()
    assert conversions == ["vit"] * 4 and "rebuilding" in caplog.text


def test_cache_key_follows_weights_runtime_and_location(tiny, tmp_path, monkeypatch):
    _, repos = tiny
    exact = loader.load(repos["vit"])
    base = cache.entry_key(exact.id, exact.weights, "openvino", "1.0", "attn", "static")
    assert cache.entry_dir(base) == cache.entry_dir(dict(base))
    for change in ({"runtime_version": "1.1"}, {"graph": "plain"}, {"shapes": "dynamic-hw"}):
        assert cache.entry_dir({**base, **change}) != cache.entry_dir(base)
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(Path(exact.weights).read_bytes())
    other = cache.entry_key(exact.id, copy, "openvino", "1.0", "attn", "static")
    os.utime(copy, ns=(1, 1))  # the same file edited later: another key
    assert cache.entry_key(exact.id, copy, "openvino", "1.0", "attn", "static") != other
    monkeypatch.delenv("VTDEMO_ENGINE_CACHE")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    assert cache.cache_root() == tmp_path / "hf" / "vtdemo-engine"  # next to the Hub cache


def test_precision_reported_and_refused(tiny):
    _, repos = tiny
    exact, fast = loader.load(repos["vit"]), loader.load(repos["vit"], precision="fast")
    assert runtime_info(exact) == {
        "precision": "exact",
        "engine": "pytorch",
        "version": torch.__version__,
        "dtype": "f32",
        "device": "cpu",
    }
    info = runtime_info(fast)
    assert info["precision"] == "fast" and info["engine"] == "openvino" and info["device"] == "cpu"
    import openvino

    assert openvino.__version__.startswith(info["version"])
    caps = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert info["dtype"] == ("bf16" if "BF16" in caps else "f32")
    with pytest.raises(Exception, match="precision"):
        loader.load(repos["vit"], precision="fp8")


def run_cli(*args: str, root: Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        HF_HUB_CACHE=str(root / "hub"),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
        VTDEMO_ENGINE_CACHE=str(root / "engine"),
    )
    return subprocess.run(
        [sys.executable, "-m", "vtdemo", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


def test_cli_precision_flag_and_convert(tiny):
    root, repos = tiny
    image = str(ROOT / "assets/examples/chelsea.png")
    proc = run_cli("convert", repos["swin"], root=root)
    assert proc.returncode == 0 and "ready (OpenVINO" in proc.stdout, proc.stderr
    for args in (("classify", "--model", repos["swin"]), ("explain", "--model", repos["swin"])):
        fast = run_cli(*args, "--precision", "fast", "--json", image, root=root)
        exact = run_cli(*args, "--json", image, root=root)
        assert fast.returncode == 0 and exact.returncode == 0, fast.stderr + exact.stderr
        (f,), (e,) = json.loads(fast.stdout), json.loads(exact.stdout)
        assert f["runtime"]["precision"] == "fast" and f["runtime"]["engine"] == "openvino"
        assert e["runtime"]["precision"] == "exact" and e["runtime"]["engine"] == "pytorch"
        assert set(f) == set(e)
    proc = run_cli(
        "explain",
        "--model",
        repos["vit"],
        "--method",
        "grad-rollout",
        "--precision",
        "fast",
        "--json",
        image,
        root=root,
    )
    assert json.loads(proc.stdout)[0]["runtime"]["gradients"] == "exact"


@pytest.fixture
def bf16_chosen(tiny, tmp_path, monkeypatch):
    """As on a CPU with bf16 units: the fast engine picks OpenVINO bf16 (the tests below pin its numbers to f32's,
    `tests/support/bf16.py`, and perturb them), with an engine cache of the test's own."""
    choose_bf16(monkeypatch)
    monkeypatch.setenv("VTDEMO_ENGINE_CACHE", str(tmp_path / "engine"))
    loader.clear_cache()
    yield tiny[1]
    loader.clear_cache()


def _count_gaps(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = fidelity.detr_gaps

    def counted(exact, fast, image, threshold=fidelity.DEFAULT_THRESHOLD):
        seen.append(image.size)
        return real(exact, fast, image, threshold)

    monkeypatch.setattr(fidelity, "detr_gaps", counted)
    return seen


def test_bf16_detr_within_the_guard_runs_bf16_and_the_verdict_is_kept(bf16_chosen, monkeypatch):
    faithful(monkeypatch)  # f32's numbers: within the guard on every CPU (a CPU's real bf16 moves the tiny DETR's)
    checked = _count_gaps(monkeypatch)
    fast = loader.load(bf16_chosen["detr"], precision="fast")
    assert fast.model.guard is not None  # pending until the first result
    pipeline.prepare(fast)
    assert len(checked) == 4  # the four example photos
    assert fast.model.choice.dtype == "bf16" and fast.model.guard_note is None
    loader.clear_cache()  # another process, same weights: the verdict comes from the engine cache
    again = loader.load(bf16_chosen["detr"], precision="fast")
    pipeline.prepare(again)
    assert len(checked) == 4 and again.model.choice.dtype == "bf16"


def test_bf16_detr_outside_the_guard_falls_back_to_f32_and_says_why(bf16_chosen, monkeypatch, photos):
    """bf16 perturbed as a CPU's bf16 units could: one class probability of every query raised by ~0.1."""
    hints = stray(monkeypatch, "detr", 0.5)
    fast = loader.load(bf16_chosen["detr"], precision="fast")
    exact = loader.load(bf16_chosen["detr"])
    run = pipeline.run_detr(fast, photos["astronaut"])  # the first result: checked before it is given out
    assert hints[0] == "bf16" and hints[-1] == "f32"
    assert fast.model.choice.dtype == "f32" and "outside the fidelity guard" in fast.model.guard_note
    assert "score gap" in fast.model.guard_note
    assert pipeline.describe(fast).endswith("(fast; bf16 was outside the fidelity guard)")
    assert runtime_info(fast)["dtype"] == "f32"
    reference = pipeline.run_detr(exact, photos["astronaut"])
    assert (run.scored.scores - reference.scored.scores).abs().max() <= 0.02  # the shown result is f32's
    for name, image in photos.items():
        assert fidelity.within_guard(fidelity.detr_gaps(exact, fast, image)), name
