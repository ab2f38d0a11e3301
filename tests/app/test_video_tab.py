"""The Video tab through gradio_client (issue 22 item 5), on the tiny DETR: a clip in, an annotated H.264 video and
the per-frame JSON out, a frame handed to the Detect tab; bad clips get one line and the app keeps serving; the
video door takes only uploads within the size limit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("timm")
gradio_client = pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from tests.support.apps import launched_app  # noqa: E402
from tests.unit.test_video import write_clip  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched, DETR on frames

SERVER_PATH = re.compile(r"(/tmp/|/home/|/root/|\.cache|snapshots)")


@pytest.fixture(scope="module")
def app(tiny_hub):
    with launched_app(tiny_hub, video_max_mb=1, video_budget_s=5) as launched:
        yield launched


@pytest.fixture(scope="module")
def clip(tmp_path_factory, photos) -> Path:
    frame = np.asarray(photos["astronaut"].resize((320, 240)))
    return write_clip(tmp_path_factory.mktemp("clips") / "street.mp4", [np.roll(frame, 6 * i, 1) for i in range(8)])


def test_a_clip_gives_a_video_the_browser_plays_its_detections_and_a_frame_for_the_detect_tab(app, clip):
    _, url = app
    client = Client(url, verbose=False)
    played, line, detections, frame = client.predict(handle_file(str(clip)), 0.3, "", api_name="/detect_video")
    with av.open(played["video"] if isinstance(played, dict) else played) as written:
        stream = written.streams.video[0]
        assert stream.codec_context.name == "h264" and sum(1 for _ in written.decode(stream)) == 8
    data = json.loads(Path(detections).read_text())
    assert data["clip"] == "street.mp4" and data["threshold"] == 0.3 and data["video"]["frames"] == 8
    assert data["frames"][0]["frame"] == 0 and data["processed_frames"] == len(data["frames"]) >= 2
    assert data["runtime"]
    assert "street.mp4: 8 frames of 320x240 at 10 frames/s · DETR on every" in line, line
    assert not SERVER_PATH.search(line)
    assert frame["maximum"] == 7 and frame["interactive"] is True  # (gradio_client leaves out the button's update)

    image = client.predict(5, api_name="/video_frame")  # (gradio_client leaves out the Tabs' update)
    assert Path(image).name == "street-frame-5.png"
    out = client.predict(
        handle_file(image), "", 0.3, [], 100, False, 0.5, "mean", "last", "where it looks", 0.55, api_name="/detect"
    )
    assert out[0] is not None  # the Detect tab runs on the handed frame


def test_a_threshold_moved_after_a_run_redraws_the_clip_from_the_kept_detections(app, clip):
    _, url = app
    client = Client(url, verbose=False)
    before = client.predict(0.2, api_name="/redraw_video")  # no run yet in this session: nothing changes
    assert all(out in (None, {"__type__": "update"}) for out in before)  # left as they are (no video, no line)
    _, line, at07, _ = client.predict(handle_file(str(clip)), 0.7, "", api_name="/detect_video")
    played, redrawn, at03 = client.predict(0.3, api_name="/redraw_video")
    assert redrawn.startswith(line.strip().rstrip(".")[:40]) and "threshold 0.30: drawn again" in redrawn, redrawn
    assert "the model did not run again" in redrawn and not SERVER_PATH.search(redrawn)
    with av.open(played["video"] if isinstance(played, dict) else played) as written:
        assert sum(1 for _ in written.decode(written.streams.video[0])) == 8
    kept07, kept03 = json.loads(Path(at07).read_text()), json.loads(Path(at03).read_text())
    assert kept03["threshold"] == 0.3 and kept03["stride"] == kept07["stride"]
    fresh = json.loads(Path(client.predict(handle_file(str(clip)), 0.3, "", api_name="/detect_video")[2]).read_text())
    if fresh["stride"] == kept03["stride"]:  # (the stride is timed per run) the same frames: the same detections
        assert kept03["frames"] == fresh["frames"]
    assert sum(map(len, (f["detections"] for f in kept03["frames"]))) >= sum(
        map(len, (f["detections"] for f in kept07["frames"]))
    )
    try:  # out of range: Gradio's slider check or ours, one line either way; the app keeps serving
        _, bad, _ = client.predict(1.5, api_name="/redraw_video")
    except Exception as exc:  # noqa: BLE001 - gradio_client's AppError carries Gradio's message
        bad = str(exc)
    assert ("1.5" in bad or "threshold" in bad) and "Traceback" not in bad, bad
    assert client.predict(0.5, api_name="/redraw_video")[1].count("threshold 0.50") == 1


def test_bad_clips_get_one_line_and_the_app_keeps_serving(app, clip, tmp_path):
    _, url = app
    client = Client(url, verbose=False)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    _, line, detections, _ = client.predict(handle_file(str(text)), 0.7, "", api_name="/detect_video")
    assert "notes.mp4 could not be read as a video" in line and detections is None
    assert "\n" not in line.strip() and not SERVER_PATH.search(line)
    big = tmp_path / "big.mp4"
    big.write_bytes(clip.read_bytes() + bytes(2 * 2**20))  # over the 1 MB the app was given
    with pytest.raises(Exception, match="the clip is larger than 1 MB"):
        client.predict(handle_file(str(big)), 0.7, "", api_name="/detect_video")
    _, line, _, _ = client.predict(handle_file(str(clip)), 0.7, "", api_name="/detect_video")
    assert "8 frames" in line  # still serving


def test_an_rtdetr_model_runs_on_a_clip(app, clip, tiny_rtdetr):
    """The Detect tab's picker holding an RT-DETR model: the clip runs through it (issue 23 item 3)."""
    _, url = app
    client = Client(url, verbose=False)
    played, line, detections, frame = client.predict(handle_file(str(clip)), 0.3, tiny_rtdetr, api_name="/detect_video")
    assert "street.mp4: 8 frames of 320x240 at 10 frames/s · RT-DETR on every" in line and "PyTorch" in line, line
    data = json.loads(Path(detections).read_text())
    assert data["model"] == tiny_rtdetr and data["processed_frames"] == len(data["frames"]) >= 2
    assert data["frames"][0]["detections"], "the tiny RT-DETR finds something at 0.3"
    with av.open(played["video"] if isinstance(played, dict) else played) as written:
        assert sum(1 for _ in written.decode(written.streams.video[0])) == 8
