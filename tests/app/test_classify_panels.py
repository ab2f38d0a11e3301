"""The Classify tab's panels through the app's API (tiny checkpoints, gradio_client) and their handlers:

- all methods side by side: one thumbnail per applicable method, captions with the AUCs that `deletion_check` gives
  for each map computed on its own, the agreement matrix equal to scipy's Spearman on the maps, a click on thumbnail
  k showing method k, and a second request (or a click) that does not run the model;
- the Swin stage view: four stages, 56x56 to 7x7 tokens for the tiny Swin at 224 px, computed once per photo;
- the sanity panel: deletion unchanged, insertion from the same check without a forward pass, the randomisation
  curve starting at 1.0; a map read from the input alone survives the randomisation (Adebayo et al.'s edge
  detector) and the verdict says it fails;
- hostile values for the new endpoints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

from gradio_client import Client, handle_file  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from tests.support.apps import counting_forward, launched_app  # noqa: E402
from vtdemo import loader  # noqa: E402
from vtdemo.evaluate.faithfulness import edge_map  # noqa: E402
from vtdemo.evaluate.randomisation import map_randomisation  # noqa: E402
from vtdemo.explain.api import deletion_check, explain_run, methods_for_model  # noqa: E402
from vtdemo.explain.registry import ExplainOptions  # noqa: E402
from vtdemo.pipeline import run_classifier  # noqa: E402  (the run records the app holds)
from vtdemo.ui.classify.compare import STEPS  # noqa: E402
from vtdemo.ui.classify.sanity_views import randomisation_caption  # noqa: E402
from vtdemo.ui.classify.views import ClassifyState  # noqa: E402
from vtdemo.ui.components import Click  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched on the tiny checkpoints: its start-up and a model run per test

ROOT = Path(__file__).resolve().parents[2]
CAT = str(ROOT / "assets" / "examples" / "chelsea.png")


@pytest.fixture(scope="module")
def app(tiny_hub):
    with launched_app(tiny_hub) as (vt, url):
        yield vt, url


@pytest.fixture(scope="module")
def client(app):
    return Client(app[1], verbose=False, download_files=False)


def _state(app, family: str) -> tuple[object, ClassifyState]:
    """A column of the launched app and a fresh state for the cat photo on its model (what /classify_* holds)."""
    column = getattr(app[0].classify, family)
    loaded = loader.load(column.s.default_model(family), "cpu")
    run = run_classifier(loaded, Image.open(CAT).convert("RGB"))
    state = ClassifyState(run=run, name="cat", method=methods_for_model(loaded)[0].name)
    column.render(state)
    return column, state


def test_comparison_grid_captions_are_each_maps_own_deletion_check(client, app):
    client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    loaded = loader.load(app[0].services.default_model("vit"), "cpu")
    methods = methods_for_model(loaded)
    gallery, matrix, text = client.predict(api_name="/compare_vit")
    assert len(gallery) == len(methods) == 6
    assert matrix is not None and "Spearman" in text

    run = run_classifier(loaded, Image.open(CAT).convert("RGB"))
    index = int(run.logits.argmax())
    x0, y0, x1, y1 = run.region
    options = ExplainOptions(point=((x0 + x1) / 2, (y0 + y1) / 2))
    for item, m in zip(gallery, methods, strict=True):
        relevance = explain_run(run, m.name, options).map
        check = deletion_check(run, relevance, index, steps=STEPS)
        caption = item["caption"]
        assert caption.startswith(m.label), caption
        assert f"deletion {check['auc']:.3f} (random {check['random_auc']:.3f}" in caption
        assert f"insertion {check['insertion_auc']:.3f} (random {check['random_insertion_auc']:.3f}" in caption

    calls, restore = counting_forward(loaded)
    try:
        again = client.predict(api_name="/compare_vit")
    finally:
        restore()
    assert calls["n"] == 0, "a second request ran the model"
    assert [g["caption"] for g in again[0]] == [g["caption"] for g in gallery]


def test_agreement_is_scipys_spearman_and_a_click_shows_that_method(app):
    column, state = _state(app, "vit")
    panel = column.panels[1]
    first, out = list(panel.compare(state))  # the maps and the matrix first, then the same with the curves' areas
    _, result, thumbs, _ = state.panels["compare"]
    assert len(thumbs) == len(result.scores) and out[panel.gallery] == thumbs
    assert [c for _, c in first[panel.gallery]] == [
        f"{s.label} · deletion and insertion curves: being measured" for s in result.scores
    ]
    assert "Measuring each map's deletion and insertion curves" in first[panel.text]
    assert first[panel.matrix] is out[panel.matrix] and all(s.scored for s in result.scores)  # drawn once
    rho = np.array([[np.nan if v is None else v for v in row] for row in result.spearman])
    maps = [s.map.flatten().numpy() for s in result.scores]  # all on the 14x14 patch grid
    constant = [float(m.std()) == 0.0 for m in maps]  # no rank correlation: None (the tiny Grad-CAM is flat)
    assert np.allclose(rho, rho.T, equal_nan=True)
    assert [bool(np.isnan(rho[i, i])) for i in range(len(maps))] == constant
    assert np.allclose(np.diag(rho)[~np.array(constant)], 1.0) and not all(constant)
    for i in range(len(maps)):
        for j in range(len(maps)):
            if i != j and not math.isnan(rho[i, j]):
                assert rho[i, j] == pytest.approx(spearmanr(maps[i], maps[j]).statistic, abs=1e-9)

    calls, restore = counting_forward(state.run.loaded)
    try:
        for k in (3, 0, 2):  # gradcam, rollout, cls-attention
            shown = panel.pick(state, 0.5, Click(None, {"index": k, "value": None}))
            assert state.method == result.scores[k].method
            assert shown[column.method].value == result.scores[k].method
            assert result.scores[k].label in shown[column.caption]
            assert torch.allclose(state.relevance, result.scores[k].map)  # the same map, now the main one
        assert len(list(panel.compare(state))) == 1  # asking again: the kept result, at once
    finally:
        restore()
    assert calls["n"] == 1  # only the Grad-CAM re-render's own forward+backward; no comparison re-run
    for bad in (-1, 6, 2.5, "1", None, True, [1, 2], float("nan")):
        shown = panel.pick(state, 0.5, Click(None, {"index": bad}))
        assert set(shown) == {column.status} and "Pick one of the 6" in shown[column.status]


def test_swin_stage_view_once_per_photo(client, app):
    client.predict(handle_file(CAT), "", "swin-rollout", 0.5, api_name="/classify_swin")
    image, text = client.predict(api_name="/stages_swin")
    assert image is not None and "patch merging" in text
    for grid in ("56x56 (32 ch) → 28x28 (64 ch) → 14x14 (128 ch) → 7x7 (256 ch)",):
        assert grid in text
    strip = Image.open(image["path"] if isinstance(image, dict) else image)
    assert 1.2 < strip.width / strip.height < 1.6  # the crop and four stages, three a row
    loaded = loader.load(app[0].services.default_model("swin"), "cpu")
    calls, restore = counting_forward(loaded)
    try:
        assert client.predict(api_name="/stages_swin")[1] == text
    finally:
        restore()
    assert calls["n"] == 0


def test_sanity_panel_three_curves(client, app):
    client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    chart, text = client.predict(api_name="/deletion_vit")  # unchanged contract: the chart and the caption
    assert chart is not None and "area" in text and "Inserting" in text
    loaded = loader.load(app[0].services.default_model("vit"), "cpu")
    calls, restore = counting_forward(loaded)
    try:
        assert client.predict(api_name="/insertion_vit") is not None
    finally:
        restore()
    assert calls["n"] == 0  # the insertion chart reuses the deletion test's check
    plot, verdict = client.predict(api_name="/randomisation_vit")
    assert plot is not None and ("Passes" in verdict or "Fails" in verdict) and "Spearman" in verdict

    column, state = _state(app, "vit")
    column.panels[0].randomisation(state)
    curve = state.panels["randomisation"][1]
    assert curve.steps == ["original", "head", "block 1", "block 0", "embedding"]
    assert curve.spearman[0] == 1.0 and len(curve.spearman) == 5
    assert all(r is None or -1.0 <= r <= 1.0 for r in curve.spearman)


def test_a_map_of_the_input_alone_survives_randomisation_and_fails(app):
    _, state = _state(app, "swin")
    run = state.run
    curve = map_randomisation(run, lambda r: edge_map(r.x, (8, 8)), "edge detector")
    assert curve.spearman == pytest.approx([1.0] * len(curve.steps)) and curve.survives  # nothing changed
    assert "Fails the check: the map survives randomised weights" in randomisation_caption(curve, "tabby")
    before = {k: v.clone() for k, v in run.loaded.model.state_dict().items()}
    grad = map_randomisation(run, lambda r: explain_run(r, "swin-grad-rollout", ExplainOptions(class_index=3)).map, "g")
    assert all(torch.equal(before[k], v) for k, v in run.loaded.model.state_dict().items())  # the cached model
    assert grad.spearman[0] == 1.0 and grad.final is not None and abs(grad.final) < 0.5
    assert "Passes" in randomisation_caption(grad, "tabby")


def _call(url: str, api: str, data: list, session: str) -> tuple[str, object]:
    body = json.dumps({"data": data, "session_hash": session})  # writes NaN, as a script can
    r = httpx.post(
        f"{url}gradio_api/call/{api}", content=body, timeout=30, headers={"content-type": "application/json"}
    )
    if r.status_code != 200:
        return "http", r.status_code
    event = None
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{r.json()['event_id']}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                return event, json.loads(line[5:].strip() or "null")
    return str(event), None


def test_new_endpoints_refuse_bad_calls_with_one_line(app):
    _, url = app
    session = "panels-hostile"
    for api in ("compare_vit", "compare_swin", "stages_swin", "insertion_vit", "randomisation_swin"):
        event, out = _call(url, api, [], session)  # before any photo
        assert event == "complete", (api, out)
        text = " ".join(v for v in out if isinstance(v, str))
        assert ("Upload a photo first" in text) or api.startswith("insertion"), (api, out)
    for bad in ([math.nan], ["abc"], [None], [2.0]):
        event, out = _call(url, "compare_pick_vit", bad, session)
        assert event in ("complete", "error"), out
        if event == "error":
            assert "Opacity" in str(out) and "Traceback" not in str(out)
    assert _call(url, "compare_vit", ["extra"], session)[0] in ("complete", "error")
    assert httpx.get(f"{url}config", timeout=30).status_code == 200  # still serving
