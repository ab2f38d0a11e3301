"""RT-DETR in the Detect tab, in a real browser (headless system Chromium, Playwright), on a tiny RT-DETR.

Type an RT-DETR repo id into the model picker, upload a photo, drag the threshold slider with the mouse and see the
count change, click a detection and see where it looked (its sampling points), click the photo for AIFI's attention
at a point, and ask for its relevance (Grad-CAM on the encoder). Then the Webcam tab on Chromium's fake camera with
that RT-DETR: frames keep arriving at its fixed input, with the live map switched on by the mouse. Screenshots go to
artifacts/screenshots/rtdetr_*.png (look at them).
"""

from __future__ import annotations

import re

import pytest

from tests.browser.test_browser import ASTRONAUT, SHOTS, SLOW, browser_page
from tests.support.apps import launched_app, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

from playwright.sync_api import expect  # noqa: E402


def _count(page) -> int:
    match = re.search(r"(\d+) of 30 queries kept", page.locator("#detect-count").inner_text())
    return int(match.group(1)) if match else -1


@pytest.fixture(scope="module")
def page(tiny_hub, tiny_rtdetr):
    with launched_app(tiny_hub) as (_, url), browser_page(url, permissions=["camera"]) as page:
        expect(page.get_by_text("see what vision transformers see")).to_be_visible()
        yield page


def test_rtdetr_typed_threshold_dragged_detection_clicked(page, tiny_rtdetr):
    page.get_by_role("tab", name="Detect").click()
    picker = page.locator("#detect-model input")
    picker.click()
    expect(page.get_by_role("option", name="PekingU/rtdetr_r18vd", exact=True)).to_be_visible()  # suggested
    picker.fill(tiny_rtdetr)
    picker.press("Enter")
    page.locator("#detect-photo input[type=file]").set_input_files(ASTRONAUT)
    expect(page.locator("#detect-status")).to_contain_text(tiny_rtdetr, timeout=SLOW)
    expect(page.locator("#detect-count")).to_contain_text("of 30 queries kept", timeout=SLOW)
    before = _count(page)
    page.screenshot(path=str(SHOTS / "rtdetr_detect.png"), full_page=True)

    track = page.locator("#detect-threshold input[type=range]")
    box = track.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.7, y)  # the thumb sits at 0.7
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.05, y, steps=8)
    page.mouse.up()
    expect(page.locator("#detect-count")).not_to_contain_text(f"{before} of 30 queries kept")
    assert wait_until(lambda: page.locator("#detect-boxes .legend-item").count() == _count(page), 30)
    after = _count(page)
    assert after > before and after >= 2, (before, after)
    page.screenshot(path=str(SHOTS / "rtdetr_threshold.png"), full_page=True)

    item = page.locator("#detect-boxes .legend-item").nth(1)
    label = item.inner_text().strip()  # "2 person 0.41"
    item.click()
    cls, score = label.split(" ", 1)[1].rsplit(" ", 1)
    caption = page.locator("#detect-caption")
    expect(caption).to_contain_text(f"({cls} {score})")
    expect(caption).to_contain_text("looked")
    expect(caption).to_contain_text("decoder layer 2 of 2, every head")
    expect(page.locator("#detect-attention img")).to_be_visible()
    page.locator("#detect-attention").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "rtdetr_sampling_points.png"), full_page=True)

    page.locator("#detect-attention img").click(position={"x": 80, "y": 60})
    expect(caption).to_contain_text("AIFI self-attention at")
    page.screenshot(path=str(SHOTS / "rtdetr_aifi.png"), full_page=True)

    item.click()
    expect(caption).to_contain_text("looked")
    page.get_by_role("button", name="Show its relevance").click()
    expect(caption).to_contain_text("Grad-CAM", timeout=SLOW)
    page.screenshot(path=str(SHOTS / "rtdetr_relevance.png"), full_page=True)


def test_rtdetr_on_the_webcam_with_its_live_map(page, tiny_rtdetr):
    page.get_by_role("tab", name="Detect").click()
    picker = page.locator("#detect-model input")
    picker.fill(tiny_rtdetr)
    picker.press("Enter")
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#webcam-in").get_by_text("Record", exact=True).click()
    stats = page.locator("#webcam-stats")
    expect(stats).to_contain_text("frames/s processed", timeout=SLOW)
    expect(stats).to_contain_text("RT-DETR input 320×320 (fixed, squashed)")  # the tiny model's processor size

    def frame() -> int:
        match = re.search(r"frame (\d+)", stats.inner_text())
        return int(match.group(1)) if match else -1

    page.locator("#webcam-map").get_by_text("Show where the best detection looks").click()  # by mouse
    switched = frame()
    assert wait_until(lambda: frame() >= switched + 3, 60), stats.inner_text()  # frames go on with the map on
    assert "Error" not in stats.inner_text()
    expect(page.locator("#webcam-out img")).to_be_visible()
    page.screenshot(path=str(SHOTS / "rtdetr_webcam_map.png"), full_page=True)
    page.locator("#webcam-in").get_by_text("Stop", exact=True).click()
