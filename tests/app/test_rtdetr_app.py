"""RT-DETR in the app's Detect tab, through its HTTP API (gradio_client), on a tiny RT-DETR written with transformers'
`save_pretrained` into the offline Hub cache: a typed repo id runs; boxes are clipped to the photo on screen (the
JSON keeps the model's boxes, as transformers' post-processing); threshold, class filter and max detections re-select
without a model call; the sampling points, AIFI at a point and Grad-CAM relevance views; export; the panels that do
not apply (set matching, masks) say so in one line; the webcam streams RT-DETR (boxes, its live map) and its default
is whichever configured detector is faster here (timings injected)."""

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
    with launched_app(tiny_hub, rtdetr_model=tiny_rtdetr) as (vt, url):  # the webcam's other default candidate
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


def test_use_the_detections_fills_the_boxes_the_table_shows(app, client):
    """RT-DETR's boxes are not clipped (transformers' rule); a ground truth made from them lies inside the photo,
    as the detections table shows them."""
    out = _detect(client, app[2])
    raw = [d.box for d in pipeline.detect(ASTRONAUT, app[2], threshold=0.0).detections[:5]]
    assert any(v < 0 or v > 512 for box in raw for v in box)  # this photo's top five reach past it
    rows = client.predict(api_name="/fill_ground_truth")["data"]
    shown = [row[3:7] for row in out[2]["data"][:5]]  # the detections table: #, class, score, x0, y0, x1, y1, query
    assert [row[1:] for row in rows] == shown
    assert all(0 <= v <= 512 for row in rows for v in row[1:])


def test_what_does_not_apply_says_so_in_one_line(app, client, in_event):
    _detect(client, app[2])
    rows = client.predict(api_name="/fill_ground_truth")
    gt = {"headers": ["label", "x0", "y0", "x1", "y1"], "data": rows["data"][:1], "metadata": None}
    image, _, text = client.predict(gt, api_name="/match")
    assert image is None and "set matching shows DETR's" in text and "\n" not in text


def _frame(tmp_path, size=(1280, 960)) -> str:
    """A camera frame as the webcam component hands it over (a file path)."""
    path = tmp_path / "frame.png"
    Image.open(ASTRONAUT).convert("RGB").resize(size).save(path)
    return str(path)


def test_the_webcam_streams_rtdetr_with_boxes_and_its_live_map(app, in_event, tmp_path):
    """A picked RT-DETR model on the webcam: boxes on the frame (RT-DETR's on that frame as a photo, at its
    processor's fixed size whatever the DETR size), the threshold re-selects, the map switch draws the best
    detection's sampling points, the status names what ran; Freeze still hands the frame over."""
    vt, _, repo = app
    frame = _frame(tmp_path)
    session = None
    for _ in range(2):
        plain, text, session = vt.webcam.live(frame, 0.3, 256, repo, False, session)
    assert plain.shape == (480, 640, 3) and plain.dtype == np.uint8 and session.frames == 2
    assert "RT-DETR input 320×320 (fixed, squashed)" in text and "PyTorch" in text and "Default:" not in text
    shrunk = np.asarray(Image.open(frame).convert("RGB").resize((640, 480), Image.Resampling.BOX))
    expected = pipeline.detect(shrunk, repo, threshold=0.3).detections
    assert session.detections > 0 and abs(session.detections - len(expected)) <= 1  # (resampling: one at the edge)
    assert f"{session.detections} box" in text
    _, text, session = vt.webcam.live(frame, 0.8, 256, repo, False, session)
    assert session.detections < len(expected)
    mapped, text, session = vt.webcam.live(frame, 0.3, 256, repo, True, session)
    assert mapped.shape == plain.shape and np.abs(mapped.astype(int) - plain.astype(int)).mean() > 5  # a map under
    path, _ = vt.webcam.freeze(session)
    assert Image.open(path).size == (1280, 960)


def test_the_webcams_default_is_the_faster_detector_measured_once_and_said(app, in_event, tmp_path, monkeypatch):
    """The Detect picker empty or at its first entry (the configured DETR): the webcam runs whichever of the
    configured DETR and RT-DETR was faster on the first frame (timings injected), says so, and keeps the verdict."""
    vt, _, repo = app
    webcam, detr = vt.webcam, vt.services.config.detr_model
    caption = next(b.value for b in vt.demo.blocks.values() if getattr(b, "elem_id", None) == "webcam-why")
    assert f"whichever of {detr} and {repo} is faster on this machine" in caption
    timings = {detr: 0.140, repo: 0.095}
    timed: list[str] = []

    def timer(loaded, frame, size):
        timed.append(loaded.id)
        return timings[loaded.id]

    monkeypatch.setattr(webcam.default, "timer", timer)
    monkeypatch.setattr(webcam.default, "verdicts", {})
    frame = _frame(tmp_path)
    _, text, session = webcam.live(frame, 0.3, 320, "", False, None)
    said = f"Default: {repo} — on this machine 95 ms per frame vs {detr} 140 ms (measured at first use)"
    assert "RT-DETR input 320×320" in text and said in text and sorted(timed) == sorted(timings)
    timings.update({detr: 0.010})  # kept for the process: not measured again
    _, text, session = webcam.live(frame, 0.3, 320, detr, False, session)
    assert "RT-DETR input" in text and said in text and len(timed) == 2
    _, text, session = webcam.live(frame, 0.3, 320, repo, False, session)  # a picked model: no default line
    assert "Default:" not in text
    # DETR faster at another size (a new measurement for it): DETR runs
    _, text, session = webcam.live(frame, 0.3, 256, "", False, session)
    assert "DETR input 341×256 (fixed)" in text and f"Default: {detr} — on this machine 10 ms" in text
