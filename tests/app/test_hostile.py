"""A hostile client against the real HTTP API of a launched app (tiny models, loopback only).

Every payload here is what a script can send to `POST /gradio_api/call/<api_name>` without the browser: server paths
instead of uploads, files that are not images, 100-byte images that would expand to gigabytes, NaN / "abc" / null
where numbers belong, names where lists belong, click endpoints without a click, absurd ground truth. Each must end
in a one-line message that says what is allowed (never "Unexpected error", never Gradio's bare "Error"), read no
file outside the upload folder, and leave the app serving.

Reads of the file system are watched with a Python audit hook (`sys.addaudithook`, event "open"): it sees every file
the server process opens, whichever library does it.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")

from tests.support.apps import launched_app  # noqa: E402
from vtdemo.ui.components import CLIP_NOT_UPLOADED, NOT_UPLOADED  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched on the tiny checkpoints: its start-up and a model run per test

VIEW = ["mean", "last", "where it looks", 0.55]  # head, layer, encoder direction, opacity


# ------------------------------------------------------------------------------------------------- helpers


class Opens:
    """Paths opened by this process while `watching` is set and that start with one of `prefixes`."""

    def __init__(self) -> None:
        self.prefixes: tuple[str, ...] = ()
        self.seen: list[str] = []
        self.lock = threading.Lock()
        sys.addaudithook(self._hook)  # cannot be removed: it does nothing unless prefixes are set

    def _hook(self, event: str, args: tuple) -> None:
        if event != "open" or not self.prefixes or not args:
            return
        path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)):
            text = os.fsdecode(path)
            if text.startswith(self.prefixes):
                with self.lock:
                    self.seen.append(text)


OPENS = Opens()


def call(url: str, api: str, data: list, session: str | None = None, timeout: float = 120) -> tuple[str, object]:
    """One raw call: ("complete", outputs) or ("error", message) - or ("http", status) if refused at the door."""
    body: dict = {"data": data}
    if session is not None:
        body["session_hash"] = session
    # json.dumps writes NaN and Infinity (not JSON, but what a script can send); Python's json reads them back
    r = httpx.post(
        f"{url}gradio_api/call/{api}",
        content=json.dumps(body),
        timeout=30,
        headers={"content-type": "application/json"},
    )
    if r.status_code != 200:
        return "http", r.status_code
    event_id = r.json()["event_id"]
    event = None
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line[5:].strip() or "null")
                if event == "error":
                    return "error", (payload or {}).get("error") if isinstance(payload, dict) else payload
                return "complete", payload
    return str(event), None


def upload(url: str, name: str, data: bytes) -> dict:
    """Upload through Gradio's own route; returns the FileData payload a browser would send."""
    r = httpx.post(f"{url}gradio_api/upload", files={"files": (name, data)}, timeout=30)
    r.raise_for_status()
    return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 90).save(buf, format="PNG")
    return buf.getvalue()


def detect_args(photo, threshold=0.3, classes=None, max_det=100, nms=False, iou=0.5) -> list:
    return [photo, "", threshold, [] if classes is None else classes, max_det, nms, iou, *VIEW]


def text_of(outputs) -> str:
    """Every string in a result (status lines, captions), for looking for messages."""
    if isinstance(outputs, str):
        return outputs
    if isinstance(outputs, dict):
        return " ".join(text_of(v) for v in outputs.values())
    if isinstance(outputs, (list, tuple)):
        return " ".join(text_of(v) for v in outputs)
    return ""


def assert_clear(result: tuple[str, object], expect: str | None = None) -> str:
    """The call ended in a readable message (an error line or a status), not a crash; returns that text."""
    event, payload = result
    assert event in ("complete", "error"), result
    text = payload if event == "error" else text_of(payload)
    assert isinstance(text, str), result
    if event == "error":
        assert text and text.strip() != "Error", f"bare error: {result}"
    assert "Unexpected error" not in text and "Traceback" not in text, text
    if expect is not None:
        assert expect.lower() in text.lower(), f"expected {expect!r} in {text!r}"
    return text


@pytest.fixture(scope="module")
def app(tiny_hub):
    with launched_app(tiny_hub) as (vt, url):
        yield vt, url


@pytest.fixture
def photo(app):
    _, url = app
    return upload(
        url, "chelsea.png", (Path(__file__).resolve().parents[2] / "assets/examples/chelsea.png").read_bytes()
    )


# ------------------------------------------------------------------------------------------------- file paths


IMAGE_APIS = {
    "detect": lambda p: detect_args(p),
    "classify_vit": lambda p: [p, "", "rollout", 0.5],
    "classify_swin": lambda p: [p, "", "swin-rollout", 0.5],
    "webcam": lambda p: [p, 0.7, 384, "", False],
    "dino_features_vit": lambda p: [p],  # the second photo of the DINO feature colours
}


def test_server_paths_are_refused_and_never_read(app, tmp_path):
    from gradio.utils import get_upload_folder

    _, url = app
    secret = tmp_path / "secret photo.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(secret)
    upload_dir = Path(get_upload_folder())
    link = upload_dir / f"vtdemo-test-link-{os.getpid()}.png"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)  # a symbolic link inside the upload folder that points outside it
    traversal = str(upload_dir / ".." / os.path.relpath(secret, upload_dir.parent))
    payloads = [
        {"path": str(secret)},
        {"path": str(tmp_path / "missing.png")},
        {"path": traversal},
        {"path": str(link)},
        {"path": "/etc/passwd"},
        {"path": str(secret), "url": None, "size": 1},
    ]
    OPENS.seen.clear()
    OPENS.prefixes = (str(tmp_path), os.path.realpath(tmp_path))
    try:
        answers = {}
        for api, args in IMAGE_APIS.items():
            for payload in payloads:
                answers[api, payload["path"]] = call(url, api, args(payload))
        # with the `meta` a browser sends, Gradio's own check refuses it before our code
        meta = call(url, "detect", detect_args({"path": str(secret), "meta": {"_type": "gradio.FileData"}}))
    finally:
        OPENS.prefixes = ()
        link.unlink(missing_ok=True)
    for key, answer in answers.items():
        assert answer == ("error", NOT_UPLOADED), (key, answer)  # the same words whether the file exists or not
    assert meta[0] == "error" and "not uploaded" in str(meta[1]).lower(), meta
    assert OPENS.seen == [], f"files outside the upload folder were opened: {OPENS.seen}"
    assert secret.read_bytes()  # (the sentinel itself is fine)


def test_a_clip_outside_the_upload_folder_is_refused_and_never_read(app, tmp_path):
    """The Video tab's door: a server path (existing or not, or a link out of the upload folder) is refused, the
    same way whether the file exists, and nothing outside the upload folder is opened. (A video payload without
    Gradio's `meta` is refused by Gradio's own model validation; with it, by Gradio's upload check; a path that
    passes both, a link inside the folder, by ours.)"""
    from gradio.utils import get_upload_folder

    _, url = app
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    link = Path(get_upload_folder()) / f"vtdemo-test-clip-{os.getpid()}.mp4"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    OPENS.seen.clear()
    OPENS.prefixes = (str(tmp_path), os.path.realpath(tmp_path))
    try:
        paths = (str(secret), str(tmp_path / "missing.mp4"), str(link), "/etc/passwd")
        answers = [
            call(url, "detect_video", [{"path": path, "meta": {"_type": "gradio.FileData"}, **bare}, 0.7, ""])
            for path in paths
            for bare in ({}, {"meta": None})
        ]
    finally:
        OPENS.prefixes = ()
        link.unlink(missing_ok=True)
    assert all(kind == "error" for kind, _ in answers), answers
    # with `meta`: Gradio's own words, which echo the path the client sent (no other), the same whether it exists
    with_meta = [str(answers[2 * i][1]).replace(path, "PATH") for i, path in enumerate(paths)]
    assert with_meta[0] == with_meta[1] == with_meta[3] and "not uploaded" in with_meta[0], with_meta
    assert with_meta[2] in (with_meta[0], CLIP_NOT_UPLOADED)  # the link inside the upload folder: Gradio's or ours
    assert OPENS.seen == [], f"files outside the upload folder were opened: {OPENS.seen}"


def test_the_live_map_switch_takes_only_true_or_false(app, photo):
    """The webcam's map switch, sent a string by a script, is refused in one line (a stock checkbox would count
    any non-empty string as on)."""
    _, url = app
    kind, text = call(url, "webcam", [photo, 0.7, 320, "", "yes please"])
    assert kind == "error" and "must be true or false, not 'yes please'" in str(text), (kind, text)


def test_refused_values_leave_no_traceback_in_the_log(app, photo, capfd):
    """A value our components refuse is the client's mistake, answered in one line: the server logs no traceback
    for it (a script sending bad values over and over would otherwise fill the log with them)."""
    _, url = app
    capfd.readouterr()
    for _ in range(3):
        kind, text = call(url, "webcam", [photo, 0.7, 320, "", "yes please"])
        assert kind == "error" and "must be true or false" in str(text), (kind, text)
    kind, text = call(url, "classify_vit", IMAGE_APIS["classify_vit"]({"path": "/etc/passwd"}))
    assert kind == "error" and "upload" in str(text).lower(), (kind, text)  # a server path: refused, not read
    logged = capfd.readouterr()
    assert "Traceback" not in logged.err + logged.out


def test_uploads_and_examples_still_work(app, photo):
    _, url = app
    event, out = call(url, "classify_vit", [photo, "", "rollout", 0.5])
    assert event == "complete" and out[0]["confidences"], out
    example = str(Path(__file__).resolve().parents[2] / "assets" / "examples" / "coffee.png")
    event, out = call(url, "detect", detect_args({"path": example}))
    assert event == "complete" and "queries kept" in text_of(out), out


def test_data_urls_are_read_by_our_reader_with_its_limits(app):
    _, url = app
    small = "data:image/png;base64," + base64.b64encode(png((64, 48))).decode()
    event, out = call(url, "classify_swin", [{"url": small}, "", "swin-rollout", 0.5])
    assert event == "complete" and out[0]["confidences"], out
    # a 9000 x 9000 PNG is a few hundred kB but 81 million pixels: refused from its header, as an upload would be
    bomb = "data:image/png;base64," + base64.b64encode(png((9000, 9000), "L")).decode()
    assert_clear(
        call(url, "classify_vit", [{"url": bomb}, "", "rollout", 0.5]), "resize the photo to at most 40 megapixels"
    )
    # webcam frames arrive through the same component; a stream cannot be driven through /call, so the frame goes
    # straight to the handler, as the component hands it over
    vt, _ = app
    webcam = next(b for b in vt.demo.blocks.values() if getattr(b, "elem_id", None) == "webcam-in")
    frame = webcam.preprocess(webcam.data_model(url=bomb))
    assert isinstance(frame, bytes)
    _, stats, _ = vt.webcam.live(frame, 0.7, 384, "", False, None)
    assert "resize the photo to at most 40 megapixels" in stats
    assert_clear(call(url, "detect", detect_args({"url": "data:image/png;base64,%%%"})), "base64")


# ------------------------------------------------------------------------------------------------- files


def test_postscript_is_never_handed_to_ghostscript(app, monkeypatch):
    import subprocess

    _, url = app
    calls = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(OSError()))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n"
    for name in ("drawing.eps", "drawing.png"):
        text = assert_clear(call(url, "detect", detect_args(upload(url, name, eps))), "unsupported format")
        assert "PostScript" in text
    assert calls == []


def test_thin_images_answer_fast(app):
    """1xN and Nx1 images go through every preprocessing path in the app without blowing up (the cost itself is
    bounded in tests/unit/test_preprocess.py)."""
    _, url = app
    for size in ((1, 20000), (20000, 1), (2, 40000)):
        photo = upload(url, f"thin {size[0]}x{size[1]}.png", png(size))
        for api in ("classify_vit", "classify_swin", "detect"):
            started = time.perf_counter()
            result = call(url, api, IMAGE_APIS[api](photo))
            assert result[0] == "complete", (size, api, result)
            assert_clear(result)
            assert time.perf_counter() - started < 30, (size, api)  # tiny models; seconds even on a loaded machine


# ------------------------------------------------------------------------------------------------- values


BAD_DETECT = [
    (dict(threshold=math.nan), "Confidence threshold must be"),
    (dict(threshold="abc"), "Confidence threshold must be"),
    (dict(threshold=None), "Confidence threshold must be"),
    (dict(threshold=2), "Confidence threshold must be"),
    (dict(max_det=math.nan), "Max detections must be"),
    (dict(max_det="abc"), "Max detections must be"),
    (dict(max_det=None), "Max detections must be"),
    (dict(nms="abc"), "must be true or false"),
    (dict(nms=True, iou=math.nan), "NMS IoU must be"),
    (dict(classes=[["nested"]]), "must be a list of names"),
    (dict(classes=["not a class"]), "Only these classes (empty: all): 'not a class' is not one of its 80 choices"),
    (dict(classes=["cat", "x" * 300]), "Only these classes (empty: all): 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."),
]


@pytest.mark.parametrize(
    "change,message", BAD_DETECT, ids=[next(iter(c)) + "=" + repr(next(iter(c.values()))) for c, _ in BAD_DETECT]
)
def test_bad_detect_values_are_refused_in_one_line(app, photo, change, message):
    _, url = app
    args = dict(dict(threshold=0.3, classes=None, max_det=100, nms=False, iou=0.5), **change)
    result = call(url, "detect", detect_args(photo, **args))
    assert result[0] == "error", result
    assert len(assert_clear(result, message)) <= 200  # one short line, not the value echoed whole


def test_a_plain_string_is_a_one_class_filter(app, photo):
    _, url = app
    listed = call(url, "detect", detect_args(photo, threshold=0.05, classes=["cat"]))
    plain = call(url, "detect", detect_args(photo, threshold=0.05, classes="cat"))
    assert listed[0] == plain[0] == "complete", (listed, plain)
    rows = listed[1][2]["data"]
    assert rows and all(r[1] == "cat" for r in rows), rows  # the filter keeps something, and only cats
    assert plain[1][2]["data"] == rows


def test_other_bad_values(app, photo):
    _, url = app
    session = "hostile-values"
    assert call(url, "classify_vit", [photo, "", "rollout", 0.5], session)[0] == "complete"
    assert_clear(
        call(url, "explain_vit", ["rollout", None, "mean", math.nan, "mean", None, 0.5], session),
        "Discard lowest must be",
    )
    assert_clear(
        call(url, "explain_vit", ["rollout", None, "mean", 0.2, "mean", None, math.inf], session), "Opacity must be"
    )
    long_id = "org/" + "x" * 300
    text = assert_clear(call(url, "classify_vit", [photo, long_id, "rollout", 0.5], session), "at most 255")
    assert "File name too long" not in text
    assert_clear(call(url, "classify_vit", [photo, 12345, "rollout", 0.5], session))
    # click endpoints called without a click: nothing happens, nothing breaks
    assert call(url, "detect", detect_args(photo), session)[0] == "complete"
    for api, data in (
        ("detection_click", VIEW),
        ("detection_row", VIEW),
        ("encoder_click", VIEW),
        ("class_map_vit", [0.5]),
        ("point_map_swin", [0.5]),
    ):
        assert call(url, api, data, session)[0] == "complete", api  # not an error: nothing to do
    assert_clear(call(url, "encoder_map", [math.nan, 3, *VIEW], session), "x must be")


GROUND_TRUTH = [
    [[None, 0, 0, 10, 10]],
    [["cat", 0, 0, 1e308, 10]],
    [["cat", -1e308, 0, 10, 10]],
    [["cat", 0, 0, "Infinity", 10]],
    [["cat", 0, 0, "NaN", 10]],
    [["cat", 0, 0, 10]],
    [["cat", 10, 10, 0, 0]],
]


def test_bad_ground_truth(app, photo, tmp_path):
    _, url = app
    session = "hostile-matching"
    assert call(url, "detect", detect_args(photo), session)[0] == "complete"
    for rows in GROUND_TRUTH:
        table = {"headers": ["label", "x0", "y0", "x1", "y1"], "data": rows}
        assert_clear(call(url, "match", [table], session), "ground")  # ground truth / Ground-truth boxes
    nested = "[" * 100_000 + "]" * 100_000
    result = call(url, "load_ground_truth", [upload(url, "nested.json", nested.encode())], session)
    assert result[0] == "error"
    assert_clear(result, "nested too deeply")
    for name, data, expected in (
        ("binary.json", b"\xff\xfe\x00 not text", "cannot read binary.json: upload a UTF-8 JSON text file"),
        ("long-label.json", json.dumps([["x" * 300, 0, 0, 10, 10]]).encode(), "unknown class name 'xxx"),
    ):
        kind, text = call(url, "load_ground_truth", [upload(url, name, data)], session)
        assert kind == "error" and expected in str(text) and len(str(text)) <= 200, (kind, text)
        assert "/tmp/" not in str(text) and "codec" not in str(text)
    ok = {"headers": ["label", "x0", "y0", "x1", "y1"], "data": [["cat", 10, 10, 200, 150]]}
    event, out = call(url, "match", [ok], session)
    assert event == "complete" and "matched" in text_of(out), out


# ------------------------------------------------------------------------------------------------- results


def test_results_stay_downloadable_after_the_next_run(app, photo):
    _, url = app
    session = "hostile-files"
    other = upload(url, "rocket.jpg", (Path(__file__).resolve().parents[2] / "assets/examples/rocket.jpg").read_bytes())
    first = call(url, "detect", detect_args(photo, threshold=0.05), session)
    assert first[0] == "complete"
    boxes = first[1][0].get("value", first[1][0])  # an update of the box view: its value is the image + masks
    urls = [boxes["image"]["url"]] + [a["image"]["url"] for a in boxes["annotations"]]
    assert len(urls) > 1
    for args in (detect_args(other, threshold=0.05), detect_args(photo, threshold=0.5)):
        assert call(url, "detect", args, session)[0] == "complete"  # the same session runs again
    for file_url in urls:
        assert httpx.get(file_url, timeout=10).status_code == 200, file_url


def test_still_serving(app, photo):
    _, url = app
    event, out = call(url, "detect", detect_args(photo))
    assert event == "complete" and "queries kept" in text_of(out)
