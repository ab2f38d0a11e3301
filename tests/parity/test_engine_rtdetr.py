"""RT-DETR / RT-DETRv2 on the fast engine (OpenVINO f32) against the exact PyTorch model, the fidelity guard's bar
(`pipeline.fidelity.rtdetr_gaps`): every (query, class) score within 0.02, every box within 3 px, the kept sets at
each threshold alike up to scores at the threshold, every decoder layer's sampling locations within 3 px and weights
within 0.02, AIFI's attention at each kept detection within 0.02 of its maximum; the same detections through
`pipeline.detect` and `run_rtdetr`; the Grad-CAM relevance (gradients: the exact model) the same at both precisions.

Tiny random checkpoints in both transformers formats (tests/parity/test_rtdetr.py: `rt_detr` with bilinear sampling,
`rt_detr_v2` with the discrete gather) and the full-size RT-DETRv2 R18vd; the conversions are slow (about a minute
each on two busy cores). The shape-policy checks convert nothing.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("openvino")
pytest.importorskip("transformers")

from tests.parity.test_rtdetr import BASIC, BOTTLENECK, _full_size, hf_model, write_repo  # noqa: E402
from tests.support.bf16 import choose_bf16, faithful, stray  # noqa: E402
from vtdemo import loader, pipeline  # noqa: E402
from vtdemo.engine import cache, openvino_runtime, runtime_info  # noqa: E402
from vtdemo.engine.fast import FastModel, choose  # noqa: E402
from vtdemo.pipeline import fidelity  # noqa: E402


@pytest.fixture
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VTDEMO_ENGINE_CACHE", str(tmp_path / "engine"))
    return tmp_path / "engine"


def test_rtdetr_gets_a_fast_model_keyed_by_its_input_size(hf_cache, tmp_path, engine_cache):
    """make_fast gives RT-DETR a FastModel converted for its processor's size; the size is in the cache key; an
    input of another size runs the exact model (nothing converted)."""
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-fast-key", hf_model("rt_detr", BASIC, "default", seed=4))
    exact = loader.load("test/tiny-rtdetr-fast-key")
    fast = loader.load("test/tiny-rtdetr-fast-key", precision="fast")
    assert isinstance(fast.model, FastModel) and fast.model.input_size == (320, 320)
    assert runtime_info(fast)["engine"] == "openvino" and runtime_info(fast)["dtype"] == choose("cpu").dtype

    policies = {
        openvino_runtime.shape_policy("rtdetr", exact.model, (640, 640)),
        openvino_runtime.shape_policy("rtdetr", exact.model, (320, 320)),
        openvino_runtime.shape_policy("detr", exact.model),
    }
    assert "static-320x320-batch-dynamic" in policies and len(policies) == 3
    folders = {cache.entry_dir(cache.entry_key(fast.id, fast.weights, "openvino", "v", "attn", p)) for p in policies}
    assert len(folders) == 3
    with pytest.raises(ValueError, match="input size"):
        openvino_runtime.shape_policy("rtdetr", exact.model)

    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        got, want = fast.model(x, return_attn=True), exact.model(x, return_attn=True)
    assert torch.equal(got.logits, want.logits) and not fast.model.converted  # the exact model ran
    assert not engine_cache.exists() or not any(engine_cache.iterdir())


def _assert_fast_matches_exact(repo: str, photos: dict, min_detections: int) -> None:
    exact, fast = loader.load(repo), loader.load(repo, precision="fast")
    assert runtime_info(fast)["engine"] == "openvino"
    compared = 0
    for name, image in photos.items():
        gaps = fidelity.rtdetr_gaps(exact, fast, image, threshold=0.3)
        print(repo, name, {k: round(float(v), 7) for k, v in gaps.items()})
        assert fidelity.within_guard(gaps), (name, gaps)
        compared += int(gaps["detections"])
    assert compared >= min_detections

    # The same detections, each named by its label and the encoder position its query was selected from: positions
    # with near-equal selection scores may leave top-k in another order (another query number; the decoder treats
    # its queries as a set), and near-equal detection scores may be listed in another order.
    # `detect` runs the forward without attention outputs (another path, another graph), so its query numbers are
    # read from that same forward.
    image = photos["coffee"]
    run_e, run_f = pipeline.run_rtdetr(exact, image), pipeline.run_rtdetr(fast, image)
    pos_e, pos_f = run_e.output.query_index[0].tolist(), run_f.output.query_index[0].tolist()
    want, got = pipeline.detect(image, exact, threshold=0.3), pipeline.detect(image, fast, threshold=0.3)
    at_e, at_f = (pipeline.forward_rtdetr(m, image).query_index[0].tolist() for m in (exact, fast))
    both = set(pos_e) & set(pos_f) & set(at_e) & set(at_f)  # a near-tie at the top-Q boundary: one path only
    by_pair = {(d.label_id, at_f[d.query]): d for d in got.detections if at_f[d.query] in both}
    want_kept = [d for d in want.detections if at_e[d.query] in both]
    assert want_kept and set(by_pair) == {(d.label_id, at_e[d.query]) for d in want_kept}
    assert len(both) >= 0.99 * len(pos_e)
    for a in want_kept:
        b = by_pair[a.label_id, at_e[a.query]]
        assert abs(a.score - b.score) <= 0.02 and max(abs(p - q) for p, q in zip(a.box, b.box, strict=True)) <= 3
    assert got.runtime["engine"] == "openvino" and want.runtime["engine"] == "pytorch"

    kept_e, kept_f = run_e.detections(run_e.select(0.3)), run_f.detections(run_f.select(0.3))
    kept_f = [d for d in kept_f if pos_f[d.query] in both]
    kept_e = [d for d in kept_e if pos_e[d.query] in both]
    assert {(d.label_id, pos_f[d.query]) for d in kept_f} == {(d.label_id, pos_e[d.query]) for d in kept_e}
    assert {(d.label_id, pos_e[d.query]) for d in kept_e} == set(by_pair)
    assert run_f.output.aifi_attn and len(run_f.output.sampling_locations) == len(run_e.output.sampling_locations)

    det = kept_e[0]  # relevance: gradients run the exact model at either precision
    twin = pos_f.index(pos_e[det.query])  # the fast run's query of the same encoder position
    rel_e = run_e.explain("rtdetr-gradcam", pipeline.ExplainOptions(query=det.query, target_kind="class"))
    rel_f = run_f.explain("rtdetr-gradcam", pipeline.ExplainOptions(query=twin, target_kind="class"))
    assert torch.allclose(rel_e.map, rel_f.map, atol=1e-5)


@pytest.mark.slow  # two conversions to OpenVINO
@pytest.mark.parametrize(
    "model_type, backbone, method",
    [("rt_detr", BASIC, "default"), ("rt_detr_v2", BOTTLENECK, "discrete")],
    ids=["v1-basic-bilinear", "v2-bottleneck-discrete"],
)
def test_tiny_fast_matches_exact(model_type, backbone, method, hf_cache, tmp_path, engine_cache, photos):
    repo = f"test/tiny-fast-{model_type}-{method}"
    write_repo(hf_cache, tmp_path, repo, hf_model(model_type, backbone, method, seed=9))
    _assert_fast_matches_exact(repo, photos, min_detections=5)


@pytest.mark.slow  # the full-size RT-DETRv2 R18vd at 640x640, converted once
def test_full_size_r18vd_fast_matches_exact(hf_cache, tmp_path, engine_cache, photos):
    ref = _full_size("rt_detr_v2")
    write_repo(hf_cache, tmp_path, "test/full-fast-rtdetr-v2", ref, size=640)
    _assert_fast_matches_exact("test/full-fast-rtdetr-v2", photos, min_detections=1)


@pytest.mark.slow  # two CLI processes and one conversion
def test_cli_convert_prepares_what_detect_then_uses(hf_cache, tmp_path, engine_cache):
    """`python -m vtdemo convert <RT-DETR repo>` fills the engine cache (e.g. while a Space is built); a later
    `detect --precision fast` in another process runs OpenVINO from that entry: nothing converted again."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import EXAMPLES, ROOT

    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-convert", hf_model("rt_detr_v2", BOTTLENECK, "default", seed=2))
    env = dict(os.environ, HF_HUB_CACHE=str(hf_cache), HF_HUB_OFFLINE="1", VTDEMO_ENGINE_CACHE=str(engine_cache))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vtdemo", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
        )

    converted = cli("convert", "test/tiny-rtdetr-convert")
    assert converted.returncode == 0 and "test/tiny-rtdetr-convert: ready (OpenVINO" in converted.stdout, converted

    def entries() -> dict[str, int]:  # every file of the cache, with when it was written
        return {str(p.relative_to(engine_cache)): p.stat().st_mtime_ns for p in engine_cache.rglob("*") if p.is_file()}

    written = entries()
    assert any(name.endswith(".xml") for name in written), f"convert wrote no graph: {sorted(written)}"
    photo = str(EXAMPLES / "rocket.jpg")
    detected = cli("detect", "--model", "test/tiny-rtdetr-convert", "--precision", "fast", "--json", photo)
    assert detected.returncode == 0, detected.stderr
    (item,) = json.loads(detected.stdout)
    assert item["runtime"]["engine"] == "openvino" and item["runtime"]["precision"] == "fast"
    assert entries() == written  # the converted graph was read, not written again (a conversion rewrites it)


@pytest.fixture
def bf16_chosen(engine_cache, monkeypatch):
    """As on a CPU with bf16 units: the fast engine picks OpenVINO bf16 (its numbers pinned to f32's by the tests,
    `tests/support/bf16.py`)."""
    choose_bf16(monkeypatch)
    loader.clear_cache()
    yield
    loader.clear_cache()


def test_bf16_rtdetr_within_the_guard_runs_bf16_and_the_verdict_is_kept(bf16_chosen, hf_cache, tmp_path, monkeypatch):
    """An RT-DETR at bf16 is checked against its exact model on the four example photos before its first result
    (it once ran f32 wherever the CPU would pick bf16); within the guard it stays bf16, and the next process reads
    the verdict from the engine cache instead of checking again."""
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-bf16", hf_model("rt_detr", BASIC, "default", seed=4))
    faithful(monkeypatch)  # f32's numbers: within the guard on every CPU (a CPU's real bf16 moves the tiny model's)
    checked: list[tuple[int, int]] = []
    real = fidelity.rtdetr_gaps

    def counted(exact, fast, image, threshold=fidelity.DEFAULT_THRESHOLD):
        checked.append(image.size)
        return real(exact, fast, image, threshold)

    monkeypatch.setattr(fidelity, "rtdetr_gaps", counted)
    fast = loader.load("test/tiny-rtdetr-bf16", precision="fast")
    assert fast.model.guard is not None and fast.model.choice.dtype == "bf16"  # pending until the first result
    pipeline.prepare(fast)
    assert len(checked) == 4 and fast.model.choice.dtype == "bf16" and fast.model.guard_note is None
    assert runtime_info(fast)["dtype"] == "bf16" and pipeline.describe(fast).endswith("bf16 on cpu (fast)")
    loader.clear_cache()  # another process, same weights: the verdict comes from the engine cache
    again = loader.load("test/tiny-rtdetr-bf16", precision="fast")
    pipeline.prepare(again)
    assert len(checked) == 4 and again.model.choice.dtype == "bf16"


def test_bf16_rtdetr_outside_the_guard_falls_back_to_f32_and_says_why(
    bf16_chosen, hf_cache, tmp_path, monkeypatch, photos
):
    """bf16 perturbed as a CPU's bf16 units could: one class logit of every query raised by 1 (a sigmoid score moves
    by up to 0.25). The first result is checked before it is given out; it and every later one are f32's."""
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-bf16-off", hf_model("rt_detr", BASIC, "default", seed=4))
    hints = stray(monkeypatch, "rtdetr", 1.0)
    fast = loader.load("test/tiny-rtdetr-bf16-off", precision="fast")
    exact = loader.load("test/tiny-rtdetr-bf16-off")
    run = pipeline.run_rtdetr(fast, photos["astronaut"])  # the first result: checked before it is given out
    assert hints[0] == "bf16" and hints[-1] == "f32"
    note = fast.model.guard_note
    assert fast.model.choice.dtype == "f32" and note.startswith("bf16 is outside the fidelity guard on ")
    assert "score gap" in note and "sampling points" in note and len(note) < 300
    assert pipeline.describe(fast).endswith("(fast; bf16 was outside the fidelity guard)")
    assert runtime_info(fast)["dtype"] == "f32"
    reference = pipeline.run_rtdetr(exact, photos["astronaut"])
    assert (run.output.logits.sigmoid() - reference.output.logits.sigmoid()).abs().max() <= 0.02  # f32's result


def test_bf16_rtdetr_selecting_other_positions_falls_back_without_failing(
    bf16_chosen, hf_cache, tmp_path, monkeypatch, photos
):
    """bf16 that selects its queries from other encoder positions than the exact model (seen on a CPU with AMX, on
    a random full-size RT-DETR whose selection scores nearly tie): no query pairs with one of the exact model's, so
    nothing is compared. That once failed inside the check (max() of nothing) and the model did not load; it is
    outside the guard, says so, and runs f32."""

    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-bf16-moved", hf_model("rt_detr", BASIC, "default", seed=4))
    real_forward = FastModel.forward

    def moved(self, *inputs, **kwargs):
        out = real_forward(self, *inputs, **kwargs)
        if self.choice.dtype == "bf16":
            out.query_index = out.query_index + 10_000  # [B, Q]: positions the exact model never selects
        return out

    monkeypatch.setattr(FastModel, "forward", moved)
    faithful(monkeypatch)
    fast = loader.load("test/tiny-rtdetr-bf16-moved", precision="fast")
    pipeline.run_rtdetr(fast, photos["astronaut"])
    note = fast.model.guard_note
    assert fast.model.choice.dtype == "f32" and note.startswith("bf16 is outside the fidelity guard on ")
    assert "queries selected from other encoder positions" in note, note
