"""RT-DETR in the app's Detect tab, through its HTTP API (gradio_client), on a tiny RT-DETR written with transformers'
`save_pretrained` into the offline Hub cache: a typed repo id runs; boxes are clipped to the photo on screen (the
JSON keeps the model's boxes, as transformers' post-processing); threshold, class filter and max detections re-select
without a model call; the sampling points, AIFI at a point and Grad-CAM relevance views; export; the panels that do
not apply (set matching, masks, the webcam) say so in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from tests.support.apps import counting_forward, launched_app  # noqa: E402
from vtdemo import pipeline  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched on the tiny checkpoints

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = str(ROOT / "assets" / "examples" / "astronaut.png")  # 512 x 512
VIEW = ("mean", "last", "where it looks", 0.55)  # head, layer, encoder direction, opacity


@pytest.fixture(scope="module")
def app(tiny_hub, tiny_rtdetr):
    with launched_app(tiny_hub) as (vt, url):
        yield vt, url, tiny_rtdetr


@pytest.fixture(scope="module")
def client(app):
    return Client(app[1], verbose=False, download_files=False)


@pytest.fixture
def in_event():
    """Call handlers directly as the server does: inside an event listener (as tests/app/test_app.py)."""
    from gradio.context import LocalContext

    token = LocalContext.in_event_listener.set(True)
    yield
    LocalContext.in_event_listener.reset(token)


def _path(value) -> str:
    if isinstance(value, dict):
        value = value.get("value", value)
        return value["path"] if isinstance(value, dict) and "path" in value else value
    return value


def _detect(client, repo, threshold=0.0, classes=(), max_det=100):
    return client.predict(
        handle_file(ASTRONAUT), repo, threshold, list(classes), max_det, False, 0.5, *VIEW, api_name="/detect"
    )


def test_the_picker_suggests_the_pekingu_repos(app):
    choices = [c[0] if isinstance(c, (list, tuple)) else c for c in app[0].detect.model.choices]
    assert choices[0] == app[0].services.config.detr_model
    assert "PekingU/rtdetr_r18vd" in choices and "PekingU/rtdetr_v2_r101vd" in choices


def test_a_typed_rtdetr_id_detects_and_rerenders_without_a_model_call(app, client):
    repo = app[2]
    out = _detect(client, repo)
    boxes, count, table, status_line, _, _, attn, caption, heads = out
    assert repo in status_line and "(query, class) pairs" in status_line and "levels 40×40, 20×20, 10×10" in status_line
    assert "30 of 30 queries kept" in count  # threshold 0: the top Q (query, class) pairs
    rows = table["data"]
    assert len(rows) == 30 and all(0 <= r[3] <= r[5] <= 512 and 0 <= r[4] <= r[6] <= 512 for r in rows)  # clipped
    run = pipeline.run_rtdetr(pipeline.load_model(repo), pipeline.load_image(ASTRONAUT))
    expected = run.detections(run.select(0.0))
    assert [(r[1], r[7]) for r in rows] == [(d.label, d.query) for d in expected]
    assert attn is not None and "Where query" in caption and "decoder layer 2 of 2" in caption
    assert [c[0] for c in heads["choices"]] == ["mean", "0", "1"]

    loaded = pipeline.load_model(repo)
    calls, restore = counting_forward(loaded)
    try:
        middle = sorted(r[2] for r in rows)[15]
        _, count, table, _ = client.predict(middle, [], 100, False, 0.5, api_name="/rerender")[:4]
        assert all(r[2] >= middle - 1e-3 for r in table["data"]) and 0 < len(table["data"]) < 30
        label = rows[0][1]
        table = client.predict(0.0, [label], 100, False, 0.5, api_name="/rerender")[2]
        assert {r[1] for r in table["data"]} == {label}
        table = client.predict(0.0, [], 3, False, 0.5, api_name="/rerender")[2]
        assert len(table["data"]) == 3
    finally:
        restore()
    assert calls["n"] == 0


def test_views_of_a_detection_and_a_point(app, client):
    out = _detect(client, app[2])
    rows = out[2]["data"]
    query = rows[1][-1]
    image, caption = client.predict(query, *VIEW, api_name="/detection_map")
    assert image is not None and f"Where query {query} looked" in caption and "every head" in caption
    image, caption = client.predict("1", "1", "where it looks", 0.4, api_name="/attention_view")
    assert image is not None and "decoder layer 1 of 2, head 1" in caption
    picture = np.asarray(Image.open(_path(image)))
    assert picture.shape[:2] == (512, 512) and picture.std() > 10
    image, caption = client.predict(100, 80, *VIEW, api_name="/encoder_map")
    assert image is not None and "AIFI self-attention at (100, 80)" in caption and "10×10" in caption
    image, caption = client.predict("mean", "last", "who looks at it", 0.5, api_name="/attention_view")
    assert image is not None and "which positions look at it" in caption


def test_relevance_is_gradcam_on_the_encoder(app, client):
    out = _detect(client, app[2])
    query = out[2]["data"][0][-1]
    client.predict(query, *VIEW, api_name="/detection_map")
    image, caption = client.predict("class", 0.5, api_name="/relevance_map")
    assert image is not None and f"Relevance of query {query}" in caption and "Grad-CAM" in caption
    assert "It ignores" in caption
    image, caption = client.predict("box edges", 0.5, api_name="/relevance_map")
    assert image is not None and "each box edge" in caption and "right (x0, x1) or down" in caption


def test_export_keeps_the_models_boxes_and_says_the_runtime(app, client):
    _detect(client, app[2])
    files = [_path(f) for f in client.predict(0.55, api_name="/export_detect")]
    data = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert len(data) == 1 and set(data[0]) == {"image", "model", "size", "detections", "runtime"}
    assert data[0]["model"] == app[2] and data[0]["runtime"]["precision"] == "exact"
    result = pipeline.detect(ASTRONAUT, app[2], threshold=0.0)
    assert [d["box"] for d in data[0]["detections"]] == [d.box for d in result.detections]  # not clipped
    assert Image.open(next(f for f in files if f.endswith(".detections.png"))).size == (512, 512)
    grid = np.load(next(f for f in files if f.endswith(".npy")))
    assert grid.shape == (40, 40) and grid.max() == pytest.approx(1)


def test_what_does_not_apply_says_so_in_one_line(app, client, in_event):
    _detect(client, app[2])
    rows = client.predict(api_name="/fill_ground_truth")
    gt = {"headers": ["label", "x0", "y0", "x1", "y1"], "data": rows["data"][:1], "metadata": None}
    image, _, text = client.predict(gt, api_name="/match")
    assert image is None and "set matching shows DETR's" in text and "\n" not in text
    out, text, _ = app[0].webcam.live(ASTRONAUT, 0.5, 320, app[2], False, None)
    assert "webcam runs DETR only" in text and "Detect tab" in text
