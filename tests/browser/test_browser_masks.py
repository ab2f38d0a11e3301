"""The Masks view in a real browser (headless system Chromium, Playwright), the app configured with a tiny panoptic
DETR (`--detr-model`): upload a photo in the Detect tab, open Masks, see the segments and the things / stuff legend,
click a segment and see its query's attention, move the threshold and see the legend follow. Screenshots go to
artifacts/screenshots/masks*.png (look at them)."""

from __future__ import annotations

import pytest

from tests.browser.test_browser import ASTRONAUT, SHOTS, SLOW, browser_page  # noqa: F401  (skips without Chromium)

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a launched app driven in Chromium

from playwright.sync_api import expect  # noqa: E402

from tests.support.apps import launched_app  # noqa: E402


@pytest.fixture(scope="module")
def page(tiny_hub, tiny_panoptic):
    with launched_app(tiny_hub, detr_model=tiny_panoptic) as (_, url), browser_page(url) as page:
        yield page


def test_masks_view_legend_and_segment_click(page):
    page.get_by_role("tab", name="Detect").click()
    page.locator("#detect-photo input[type=file]").set_input_files(ASTRONAUT)
    expect(page.locator("#detect-count")).to_contain_text("of 20 queries kept", timeout=SLOW)
    page.get_by_role("tab", name="Masks").click()
    legend = page.locator("#detect-masks-legend")
    expect(legend).to_contain_text("Things (countable objects)")
    expect(legend).to_contain_text("Stuff (amorphous regions)")
    expect(legend.locator(".vt-legend-stuff li").first).to_contain_text("%")
    image = page.locator("#detect-masks img")
    expect(image).to_be_visible()
    page.screenshot(path=str(SHOTS / "masks.png"), full_page=True)

    box = image.bounding_box()
    image.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.85})
    expect(page.locator("#detect-caption")).to_contain_text("Segment")
    expect(page.locator("#detect-caption")).to_contain_text("Decoder cross-attention of query")
    expect(page.locator("#detect-attention img")).to_be_visible()
    page.screenshot(path=str(SHOTS / "masks_segment_click.png"), full_page=True)

    before = legend.inner_text()
    track = page.locator("#detect-threshold input[type=range]")
    bar = track.bounding_box()
    y = bar["y"] + bar["height"] / 2
    page.mouse.move(bar["x"] + bar["width"] * 0.7, y)  # the thumb sits at 0.7
    page.mouse.down()
    page.mouse.move(bar["x"] + bar["width"] * 0.95, y, steps=8)
    page.mouse.up()
    expect(legend).not_to_have_text(before)
    page.screenshot(path=str(SHOTS / "masks_threshold.png"), full_page=True)

    # a plain DETR typed into the model picker: the boxes as before, the Masks view says what it needs in one line
    picker = page.get_by_role("combobox", name="Model (repo id or folder)")  # the visible one
    picker.fill("test/tiny-detr")
    picker.blur()  # a custom value (Enter would pick the highlighted choice "test/tiny-detr-panoptic")
    expect(page.locator("#detect-status")).to_contain_text("test/tiny-detr ·", timeout=SLOW)  # loads a model first
    # the plain DETR loads first
    expect(legend).to_contain_text("Masks need a panoptic model: pick facebook/detr-resnet-50-panoptic", timeout=SLOW)
    page.screenshot(path=str(SHOTS / "masks_plain_detr.png"), full_page=True)
    page.get_by_role("tab", name="Boxes").click()
    expect(page.locator("#detect-count")).to_contain_text("of 100 queries kept")
