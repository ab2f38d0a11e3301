"""The app through its API: launched in this process on tiny checkpoints (offline Hub cache), driven with gradio_client.

Covers: start-up loads no model; classify (labels, overlays, class-specific maps); detect; re-rendering on threshold,
class filter and max detections without any model call, and its server time on a 1280x720 photo; DETR attention
maps; set matching; exports in the CLI's JSON schema; one-line errors for a bad file and an unavailable model, after
which the app still works; the webcam handler; API names, queue and upload limits, and what the server refuses to
serve.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")
gradio_client = pytest.importorskip("gradio_client")

from gradio import processing_utils  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from tests.support.apps import counting_forward, launched_app  # noqa: E402
from vtdemo import loader, pipeline  # noqa: E402
from vtdemo.ui.components import BOX_FILES, box_folder  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched on the tiny checkpoints: its start-up and a model run per test

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
CAT = str(EXAMPLES / "chelsea.png")
ASTRONAUT = str(EXAMPLES / "astronaut.png")
VIEW = ("mean", "last", "where it looks", 0.55)  # head, layer, encoder direction, opacity


@pytest.fixture(scope="module")
def app(tiny_hub):
    repos = tiny_hub.repos
    started = time.perf_counter()
    with launched_app(tiny_hub) as (vt, url):
        vt.startup_seconds = time.perf_counter() - started
        vt.loaded_at_start = [r for r in repos.values() if loader.is_loaded(r, "cpu")]
        vt.repos = repos
        yield vt, url


@pytest.fixture(scope="module")
def client(app):
    return Client(app[1], verbose=False, download_files=False)


def _path(value) -> str:
    """A file output as the client returns it without downloading (a dict with the server path)."""
    if isinstance(value, dict):
        value = value.get("value", value)
        return value["path"] if isinstance(value, dict) and "path" in value else value
    return value


def _detect(client, image=ASTRONAUT, model=None, threshold=0.7):
    return client.predict(handle_file(image), model or "", threshold, [], 100, False, 0.5, *VIEW, api_name="/detect")


def test_startup_is_quick_and_loads_no_model(app):
    vt, _ = app
    assert vt.loaded_at_start == []
    assert vt.startup_seconds < 20  # build + launch on a busy 2-core machine (imports excluded: already done)


def test_classify_both_families(client, app):
    out = client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    label, overlay, caption, status = out[:4]
    assert len(label["confidences"]) == 5
    names = [c["label"] for c in label["confidences"]]
    assert all(n in loader.load(app[0].repos["vit"], "cpu").labels for n in names)
    assert "Attention rollout" in caption and "tiny-vit" in status
    assert Image.open(_path(overlay)).size == Image.open(CAT).size  # the photo's size (below the display cap)

    out = client.predict(handle_file(CAT), "", "swin-rollout", 0.5, api_name="/classify_swin")
    assert len(out[0]["confidences"]) == 5 and "Window-aware rollout" in out[2]


def test_explanation_controls_rerender_from_the_cache(client, app):
    client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    loaded = loader.load(app[0].repos["vit"], "cpu")
    calls, restore = counting_forward(loaded)
    try:
        out = client.predict("rollout", None, "max", 0.5, "mean", None, 0.7, api_name="/explain_vit")
        assert out[0] is not None and calls["n"] == 0  # rollout: no forward pass
        out = client.predict("cls-attention", None, "mean", 0.0, "1", None, 0.5, api_name="/explain_vit")
        assert "CLS attention" in out[1] and "head 1" in out[1] and calls["n"] == 0
    finally:
        restore()
    top = client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")[0]
    second = top["confidences"][1]["label"]
    out = client.predict("grad-rollout", second, "mean", 0.0, "mean", None, 0.5, api_name="/explain_vit")
    assert f"for *{second}*" in out[1]  # the class-specific map of the class asked for, not the top one

    swin_top = client.predict(handle_file(CAT), "", "swin-rollout", 0.5, api_name="/classify_swin")[0]
    out = client.predict("swin-window", None, "mean", 0.0, "mean", None, 0.5, api_name="/explain_swin")
    assert out[0] is not None and "Window around" in out[1] and "stage" in out[1]
    chart, text = client.predict(api_name="/deletion_swin")
    assert chart is not None and "area" in text and "random" in text
    third = swin_top["confidences"][2]["label"]
    out = client.predict("swin-grad-rollout", third, "mean", 0.0, "mean", None, 0.5, api_name="/explain_swin")
    assert out[0] is not None and f"Gradient rollout (one class)** for *{third}*" in out[1]


def test_detect_then_rerender_without_a_model_call(client, app):
    loaded = loader.load(app[0].repos["detr"], "cpu")
    expected = {t: len(pipeline.detect(ASTRONAUT, loaded, threshold=t).detections) for t in (0.3, 0.7, 0.9)}
    assert expected[0.3] > expected[0.7] > expected[0.9] >= 1  # the tiny model gives something to see

    calls, restore = counting_forward(loaded)
    try:
        out = _detect(client)
        assert calls["n"] == 1
        boxes, count, table, status = out[:4]
        assert f"{expected[0.7]} of 100 queries kept" in count
        assert len(boxes["value"]["annotations"]) == len(table["data"]) == expected[0.7]
        assert "tiny-detr" in status
        for t in (0.3, 0.9, 0.7):
            boxes, count, table = client.predict(t, [], 100, False, 0.5, api_name="/rerender")[:3]
            assert f"{expected[t]} of 100 queries kept" in count
            assert len(boxes["value"]["annotations"]) == expected[t]
        first = table["data"][0][1]
        boxes, count, table = client.predict(0.3, [first], 2, False, 0.5, api_name="/rerender")[:3]
        assert len(table["data"]) <= 2 and {row[1] for row in table["data"]} == {first}  # class filter, max dets
        boxes, count, table = client.predict(0.0, [], 100, True, 0.3, api_name="/rerender")[:3]
        assert len(table["data"]) < 100  # class-aware NMS removes overlapping duplicates of random boxes
        assert calls["n"] == 1  # every control above re-rendered from the cached run
    finally:
        restore()


@pytest.fixture
def in_event():
    """Call handlers directly as the server does: inside an event listener, where `gr.Component(...)` is an update."""
    from gradio.context import LocalContext

    token = LocalContext.in_event_listener.set(True)
    yield
    LocalContext.in_event_listener.reset(token)


def test_rerender_server_time_for_a_1280x720_photo(app, tmp_path, in_event):
    """The re-render handler plus Gradio's postprocessing of its outputs, in the server process: < 80 ms."""
    vt, _ = app
    demo, tab = vt.demo, vt.detect
    photo = tmp_path / "wide.jpg"
    Image.open(ASTRONAUT).convert("RGB").resize((1280, 720)).save(photo)
    state = tab.detect(str(photo), "", 0.7, [], 100, False, 0.5, *VIEW)[tab.state]
    boxes_block = next(b for b in demo.blocks.values() if type(b).__name__ == "BoxImage")
    table_block = next(
        b for b in demo.blocks.values() if type(b).__name__ == "Dataframe" and b.headers and b.headers[0] == "#"
    )
    times, shown = [], []
    for t in [0.3, 0.5, 0.7, 0.9, 0.0, 0.6] * 3:
        started = time.perf_counter()
        out = tab.rerender(state, t, [], 100, False, 0.5)
        data = boxes_block.postprocess(out[tab.boxes].constructor_args["value"])  # the update's value, as Gradio does
        sent = asyncio.run(processing_utils.async_move_files_to_cache(data, boxes_block, postprocess=True))
        table_block.postprocess(out[tab.table])
        times.append(time.perf_counter() - started)
        shown.append(len(sent["annotations"]))
    median = statistics.median(times) * 1000
    print(f"\nre-render server time for 1280x720: median {median:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert max(shown) >= 20  # threshold 0: many boxes, one mask file each
    assert median < 80  # with Gradio's per-file checks on every mask (before the static box folder): ~3x more
    # the box files are served where they are (a static path: no per-file checks, no copy) and expire with the cache
    files = [sent["image"]["path"], *(a["image"]["path"] for a in sent["annotations"])]
    assert all(Path(f).parent.parent == box_folder() for f in files)
    assert set(files) <= BOX_FILES and any(s is BOX_FILES for s in demo.temp_file_sets)


def test_detection_and_encoder_maps(client):
    out = _detect(client, threshold=0.5)
    table = out[2]["data"]
    assert out[6] is not None and "Decoder cross-attention of query" in out[7]  # the best one, right away (no State)
    query = table[1][-1]
    image, caption = client.predict(query, *VIEW, api_name="/detection_map")
    assert image is not None and f"query {query}" in caption
    image, caption = client.predict(100, 80, *VIEW, api_name="/encoder_map")
    assert image is not None and "Encoder self-attention at (100, 80)" in caption
    image, caption = client.predict("1", "1", "who looks at it", 0.4, api_name="/attention_view")
    assert image is not None and "which positions look at it" in caption


def test_relevance_of_a_clicked_detection(client):
    """The relevance view of the chosen detection: its class (one map), or its four box edges (a 2x2 panel of the
    photo); the maps themselves are checked against the published rules in
    tests/parity/test_explain_detr_relevance.py."""
    from PIL import Image

    out = _detect(client, threshold=0.5)
    query = out[2]["data"][0][-1]
    client.predict(query, *VIEW, api_name="/detection_map")
    image, caption = client.predict("class", 0.5, api_name="/relevance_map")
    assert image is not None and f"Relevance of query {query}" in caption and "Relevance is not attention" in caption
    single = Image.open(image["path"] if isinstance(image, dict) else image).size
    image, caption = client.predict("box edges", 0.5, api_name="/relevance_map")
    assert "each box edge" in caption
    panel = Image.open(image["path"] if isinstance(image, dict) else image).size
    assert panel[0] > single[0] * 0.9 and panel[1] > single[1] * 0.9  # four half-size tiles: about as large
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict("edges", 0.5, api_name="/relevance_map")


def test_set_matching(client, tmp_path):
    _detect(client, threshold=0.7)
    rows = client.predict(api_name="/fill_ground_truth")
    assert rows["data"] and len(rows["data"][0]) == 5
    gt = {"headers": ["label", "x0", "y0", "x1", "y1"], "data": rows["data"][:2], "metadata": None}
    image, table, text = client.predict(gt, api_name="/match")
    assert image is not None and len(table["data"]) == 2 and "Loss = classification" in text
    bad = {"headers": ["label", "x0", "y0", "x1", "y1"], "data": [["unicorn", 1, 2, 30, 40]], "metadata": None}
    assert "unknown class name 'unicorn'" in client.predict(bad, api_name="/match")[2]
    coco = tmp_path / "gt.json"
    coco.write_text(json.dumps({"annotations": [{"bbox": [10, 20, 100, 50], "category_id": 17}]}))
    loaded = client.predict(handle_file(str(coco)), api_name="/load_ground_truth")
    assert loaded["data"] == [["cat", 10, 20, 110, 70]]


def test_exports_follow_the_cli_schema(client):
    client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    client.predict(handle_file(CAT), "", "swin-rollout", 0.5, api_name="/classify_swin")
    files = [_path(f) for f in client.predict(api_name="/export_classify")]
    data = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert [set(d) for d in data] == [{"image", "model", "predictions", "runtime"}] * 2
    assert data[0]["runtime"]["engine"] == "pytorch" and data[0]["runtime"]["precision"] == "exact"
    assert data[0]["image"] == "chelsea.png" and set(data[0]["predictions"][0]) == {"index", "label", "score"}
    maps = [np.load(f) for f in files if f.endswith(".npy")]
    assert [m.shape for m in maps] == [(14, 14), (56, 56)] and all(m.max() == pytest.approx(1) for m in maps)
    assert sum(f.endswith(".png") for f in files) == 2

    _detect(client, threshold=0.7)
    files = [_path(f) for f in client.predict(0.55, api_name="/export_detect")]
    data = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert len(data) == 1 and set(data[0]) == {"image", "model", "size", "detections", "runtime"}
    assert data[0]["size"] == [512, 512] and data[0]["detections"]
    assert set(data[0]["detections"][0]) == {"label_id", "label", "score", "box"}
    png = next(f for f in files if f.endswith(".detections.png"))
    assert Image.open(png).size == (512, 512)
    grid = np.load(next(f for f in files if f.endswith(".npy")))
    assert grid.ndim == 2 and grid.max() == pytest.approx(1)


def test_bad_file_gives_one_line_and_the_app_keeps_working(client, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("<html><body>not a photo</body></html>")
    out = client.predict(handle_file(str(fake)), "", "rollout", 0.5, api_name="/classify_vit")
    assert not out[0] and "unsupported format" in out[3] and "Traceback" not in out[3]
    assert "\n" not in out[3]
    out = _detect(client, image=str(fake))
    assert out[0] is None and "unsupported format" in out[3]
    out = client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    assert len(out[0]["confidences"]) == 5


def test_unavailable_model_says_which_repo_and_what_to_do(client, caplog):
    """The visitor reads what they can do; the operator's remedy (variables, cache, folders) goes to the log."""
    with caplog.at_level(logging.WARNING):
        out = client.predict(handle_file(CAT), "nobody/not-a-model", "rollout", 0.5, api_name="/classify_vit")
    assert "'nobody/not-a-model' was not loaded" in out[3] and "Pick one of the models in the list" in out[3]
    assert "HF_HUB" not in out[3] and "folder" not in out[3]
    logged = [r.getMessage() for r in caplog.records]
    assert any("nobody/not-a-model" in m and "HF_HUB_OFFLINE" in m and "folder" in m for m in logged), logged
    out = client.predict(handle_file(CAT), "", "swin-rollout", 0.5, api_name="/classify_swin")
    assert len(out[0]["confidences"]) == 5  # the other model still works
    out = _detect(client, model="nobody/no-detr")
    assert "'nobody/no-detr' was not loaded" in out[3]
    out = client.predict(handle_file(CAT), "test/tiny-detr", "rollout", 0.5, api_name="/classify_vit")
    assert "detection model" in out[3] and "Detect tab" in out[3]


def test_webcam_frames_and_freeze(app, in_event, tmp_path):
    def tmp_frame(source, size):
        path = tmp_path / "frame.png"
        Image.open(source).convert("RGB").resize(size).save(path)
        return str(path)

    h = app[0].webcam
    frame = tmp_frame(ASTRONAUT, (1920, 1440))  # a frame as the webcam component hands it over (a file path)
    session = None
    for _ in range(3):
        out, text, session = h.live(frame, 0.5, 320, "", False, session)
    assert out.shape == (480, 640, 3) and out.dtype == np.uint8
    assert "frames/s processed" in text and "DETR input 427×320 (fixed)" in text and session.frames == 3
    assert "PyTorch" in text and "(exact)" in text  # the engine that ran the frames
    path, tabs = h.freeze(session)
    assert Image.open(path).size == (1920, 1440)


def test_every_event_has_an_api_name_and_limits_are_set(app):
    vt, url = app
    demo = vt.demo
    names = [fn.api_name for fn in demo.fns.values()]
    assert names and all(isinstance(n, str) and n for n in names)
    for documented in (
        "classify_vit",
        "classify_swin",
        "explain_vit",
        "detect",
        "rerender",
        "detection_map",
        "encoder_map",
        "match",
        "export_detect",
        "export_classify",
        "webcam",
        "freeze",
    ):
        assert documented in names
    assert vt.services.config.queue_size == 32  # what create_app hands to demo.queue(max_size=...)
    assert demo.max_file_size == 100 * 1024 * 1024  # Gradio's one limit: the video clips' (photos: 20 MB, ours)


def test_serves_nothing_outside_its_files(app):
    import httpx

    _, url = app
    escape = f"{EXAMPLES}/../../app.py"  # out of the examples folder by '..'
    for path in ("/etc/passwd", str(ROOT / "app.py"), escape, str(ROOT / "vtdemo" / "__init__.py")):
        response = httpx.get(f"{url.rstrip('/')}/gradio_api/file={path}")
        assert response.status_code == 403, path
    # the example photos are the app's own public files ("Try the cat" returns one: `launch_options`)
    assert httpx.get(f"{url.rstrip('/')}/gradio_api/file={EXAMPLES / 'chelsea.png'}").status_code == 200


def test_upload_size_is_limited(app, client, tmp_path):
    import httpx

    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + bytes(21 * 1024 * 1024))  # over the photos' 20 MB: our image door says so
    with pytest.raises(Exception, match="the image is larger than 20 MB"):
        client.predict(handle_file(str(big)), "", "rollout", 0.5, api_name="/classify_vit")
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"\xff\xd8" + bytes(101 * 1024 * 1024))  # over Gradio's one limit (the clips' 100 MB)
    with pytest.raises(Exception, match="maximum file size"):  # gradio_client checks first ...
        client.predict(handle_file(str(huge)), "", "rollout", 0.5, api_name="/classify_vit")
    with huge.open("rb") as f:  # ... and the server refuses it anyway
        response = httpx.post(f"{app[1].rstrip('/')}/gradio_api/upload", files={"files": ("huge.jpg", f, "image/jpeg")})
    assert response.status_code == 413


def test_typed_folders_only_on_a_private_server(tmp_path, monkeypatch):
    from vtdemo.errors import VtdemoError
    from vtdemo.ui.common import Services
    from vtdemo.ui.config import AppConfig

    monkeypatch.delenv("VTDEMO_ALLOW_FOLDERS", raising=False)
    public = Services(AppConfig(host="0.0.0.0", device="cpu"))
    with pytest.raises(VtdemoError, match="local folders can only be chosen by whoever runs the app"):
        public.load(str(tmp_path), "vit")
    assert AppConfig(host="127.0.0.1").allow_typed_folders
    assert not AppConfig(host="127.0.0.1", share=True).allow_typed_folders
    monkeypatch.setenv("VTDEMO_ALLOW_FOLDERS", "1")  # read once, by from_args
    from vtdemo.ui.config import from_args

    assert from_args(["--host", "0.0.0.0"]).allow_typed_folders
    monkeypatch.setenv("VTDEMO_ALLOW_FOLDERS", "no")
    assert not from_args(["--host", "127.0.0.1"]).allow_typed_folders


def test_try_the_cat_works_from_any_working_directory(app, tmp_path, monkeypatch):
    """ "Try the cat" returns the example photo's path; Gradio serves a returned file only from the working directory,
    the temp directory or `allowed_paths`. Started from another directory (`python /path/to/app.py`, the installed
    `vtdemo serve`), the button showed "Error" until the examples were allowed (found by hand this round)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the checkout nor above the examples
    from tests.app.test_hostile import call  # a raw call: the endpoint is private to the page

    kind, outputs = call(app[1], "try_cat", [])
    assert kind == "complete", outputs
    assert Path(_path(outputs[1])).name == "chelsea.png"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_model_calls_run_below_the_event_loop(tiny_hub, monkeypatch):
    """On a Space (`SPACE_ID` set, `VTDEMO_MODEL_NICE` unset: nice 10), after a model call every thread of the server
    but its event loop and the main thread runs at nice >= 10, so that the loop's light events (a threshold change)
    are scheduled first. (The mechanism alone, in a process of its own: tests/unit/test_priority.py.)"""
    from vtdemo.ui import priority

    monkeypatch.setenv("SPACE_ID", "someone/vtdemo")
    try:
        with launched_app(tiny_hub) as (vt, url):
            assert vt.services.config.model_nice is None  # the default: decided by the host
            Client(url, verbose=False, download_files=False).predict(
                handle_file(ASTRONAUT), "", 0.7, [], 100, False, 0.5, *VIEW, api_name="/detect"
            )
            loops = priority.event_loops()
            assert loops, "the model call found no event loop"
            nice = {}
            for t in map(int, os.listdir("/proc/self/task")):
                try:
                    nice[t] = os.getpriority(os.PRIO_PROCESS, t)
                except ProcessLookupError:  # a thread that ended since the listing
                    pass
            main = threading.main_thread().native_id
            assert all(nice[t] < 10 for t in loops if t in nice) and nice[main] < 10
            assert any(v >= 10 for t, v in nice.items() if t not in loops and t != main)  # the model's threads
    finally:
        priority.configure(0)  # the apps after this one in the test run: the desktop default


def test_box_files_are_served_to_the_browser(client, app, tmp_path):
    """The photo and every box mask of the Detect view load from their URLs (the box folder is a static path); a
    path that walks out of it, or any file outside Gradio's upload folder, is still refused. (Inside the upload
    folder Gradio serves any file by its path, as it always did: the box folder's names are random uuids.)"""
    import httpx

    boxes = _detect(client, threshold=0.3)[0]
    value = boxes.get("value", boxes)
    urls = [value["image"]["url"], *(a["image"]["url"] for a in value["annotations"])]
    assert len(urls) >= 2
    base = app[1].rstrip("/")
    for url in urls:
        got = httpx.get(url if url.startswith("http") else base + url, timeout=30)
        assert got.status_code == 200 and got.content[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb")
    # ".." sent percent-encoded, so that the client does not remove it and the server's file route sees it: a walk
    # that ends on a box file is served (the control), one that leaves the box folder is not
    photo = Path(value["image"]["path"])
    up = "/%2E%2E"
    control = httpx.get(f"{base}/gradio_api/file={photo.parent}{up}/{photo.parent.name}/{photo.name}", timeout=30)
    assert control.status_code == 200
    depth = len(photo.parent.parts)
    beside = tmp_path / "not-returned.json"  # a readable file outside Gradio's upload folder, never returned
    beside.write_text("{}")
    for outside in ("/etc/passwd", f"{photo.parent}{up * depth}/etc/passwd", str(beside)):
        refused = httpx.get(f"{base}/gradio_api/file={outside}", timeout=30)
        assert refused.status_code in (403, 404), outside
