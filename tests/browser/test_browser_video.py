"""The Video tab in a real browser (headless system Chromium, Playwright), at the app's default precision (fast), on the
tiny DETR: upload a clip, click "Detect in the video", and check that Chromium itself **plays** the annotated video
(its <video> element decodes frames: H.264 in mp4, issue 22 item 5), that the per-frame JSON is offered, that a
threshold dragged after the run draws the clip again (from the kept detections) and goes quiet, that the frame
slider can be dragged with the mouse, and that "Explain this frame" hands that frame to the Detect tab. Screenshots
go to artifacts/screenshots/video_*.png (look at them).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.browser.test_browser import SHOTS, SLOW, browser_page
from tests.support.apps import launched_app, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

pytest.importorskip("av")
from playwright.sync_api import expect  # noqa: E402

from tests.unit.test_video import write_clip  # noqa: E402

FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory, photos):
    """A 12-frame 320x240 H.264 clip of the astronaut photo panning (written with PyAV, not with our writer)."""
    frame = np.asarray(photos["astronaut"].resize((320, 240)))
    path = tmp_path_factory.mktemp("clips") / "pan.mp4"
    return write_clip(path, [np.roll(frame, 10 * i, axis=1) for i in range(FRAMES)])


@pytest.fixture(scope="module")
def page(tiny_hub, tmp_path_factory):
    pytest.importorskip("openvino")
    engine_cache = str(tmp_path_factory.mktemp("engine"))
    with (
        launched_app(tiny_hub, env={"VTDEMO_ENGINE_CACHE": engine_cache}, precision="fast") as (_, url),
        browser_page(url) as page,
    ):
        expect(page.get_by_text("see what vision transformers see")).to_be_visible()
        yield page


def _played(page) -> dict:
    """What Chromium's own <video> element says about the annotated clip once it has played a little."""
    return page.evaluate(
        """async () => {
            const v = document.querySelector('#video-out video');
            if (!v) return {found: false};
            v.muted = true;
            try { await v.play(); } catch (e) { return {found: true, error: String(e)}; }
            await new Promise(r => setTimeout(r, 800));
            v.pause();
            return {found: true, error: v.error ? v.error.code : null, width: v.videoWidth, height: v.videoHeight,
                    duration: v.duration, time: v.currentTime, ready: v.readyState};
        }"""
    )


def test_a_clip_plays_in_the_browser_and_a_dragged_frame_goes_to_the_detect_tab(page, clip):
    page.get_by_role("tab", name="Video").click()
    expect(page.locator("#video-why")).to_contain_text("Explain this frame")
    page.locator("#video-in input[type=file]").set_input_files(str(clip))
    expect(page.locator("#video-in video")).to_be_attached(timeout=SLOW)  # the upload shows the clip
    page.locator("#video-run").click()
    status = page.locator("#video-status")
    # the first run converts the tiny DETR for the fast engine (~30 s on a busy 2-core machine), then the clip
    expect(status).to_contain_text(f"pan.mp4: {FRAMES} frames of 320x240", timeout=4 * SLOW)
    assert not re.search(r"/tmp/|gradio/[0-9a-f]{16,}", status.inner_text())  # no server path in the line
    expect(page.locator("#video-out video")).to_be_attached(timeout=SLOW)

    played = _played(page)
    assert played["found"] and played["error"] is None, played
    assert (played["width"], played["height"]) == (320, 240), played  # decoded by the browser: not a blank player
    assert played["duration"] > 0.5 and played["time"] > 0, played
    expect(page.locator("#video-json")).to_contain_text("pan-detections")  # the name, shown as "pan-detections .json"
    page.screenshot(path=str(SHOTS / "video_result.png"), full_page=True)

    # the threshold dragged with the mouse after the run: the clip is drawn again from the kept detections, once
    threshold = page.locator("#video-threshold input[type=range]")
    threshold.scroll_into_view_if_needed()
    box = threshold.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.7, y)  # the thumb sits at 0.7
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.95, y, steps=6)
    page.mouse.up()
    expect(status).to_contain_text("drawn again from the kept detections", timeout=SLOW)
    settled = page.locator("#video-threshold input[type=number]").input_value()
    expect(status).to_contain_text(f"threshold {float(settled):.2f}: drawn again", timeout=SLOW)
    line = status.inner_text()
    page.wait_for_timeout(3000)
    assert status.inner_text() == line  # quiet: no further redraws after the drag
    played = _played(page)
    assert played["found"] and played["error"] is None and played["width"] == 320, played
    page.screenshot(path=str(SHOTS / "video_redrawn.png"), full_page=True)

    track = page.locator("#video-frame input[type=range]")  # drag the frame slider with the mouse to the end
    track.scroll_into_view_if_needed()  # below the fold at 1400x1000: mouse coordinates are the viewport's
    box = track.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 1, y, steps=8)
    page.mouse.up()
    number = page.locator("#video-frame input[type=number]")
    assert wait_until(lambda: number.input_value() == str(FRAMES - 1), 10), number.input_value()

    page.locator("#video-explain").click()
    expect(page.get_by_role("tab", name="Detect")).to_have_attribute("aria-selected", "true", timeout=SLOW)
    expect(page.locator("#detect-count")).to_contain_text("queries kept", timeout=SLOW)
    photo = page.locator("#detect-photo img").first
    assert f"pan-frame-{FRAMES - 1}.png" in (photo.get_attribute("src") or ""), photo.get_attribute("src")
    page.screenshot(path=str(SHOTS / "video_frame_in_detect.png"), full_page=True)
