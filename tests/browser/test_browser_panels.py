"""The Classify tab's panels in a real browser (headless system Chromium, Playwright, tiny checkpoints): the ViT
comparison grid (and a click on a thumbnail making it the main map), the Swin stage view, and the ViT sanity panel
with its three curves. Screenshots go to artifacts/screenshots/classify_*.png (look at them).
"""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a launched app driven in Chromium

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.test_browser import CAT, ROOT, SHOTS, browser_page  # noqa: E402 - skips this module without Chromium
from tests.support.apps import launched_app  # noqa: E402

SLOW = 120_000  # ms: the comparison and randomisation runs on a shared 2-core machine


@pytest.fixture(scope="module")
def page(tiny_hub):
    with launched_app(tiny_hub) as (_, url), browser_page(url, 1500, 1100, SLOW) as page:
        page.locator("#classify-photo input[type=file]").set_input_files(CAT)
        for family in ("vit", "swin"):
            expect(page.locator(f"#{family}-overlay img")).to_be_visible()
        yield page


def test_vit_comparison_grid_and_click(page):
    page.get_by_text("All methods side by side").first.click()
    page.get_by_role("button", name="Compare all methods").first.click()
    expect(page.locator("#vit-compare-text")).to_contain_text("Spearman")  # the maps and the matrix first
    expect(page.locator("#vit-compare-text")).to_contain_text("Fewest patches to delete")  # then the curves' areas
    thumbs = page.locator("#vit-compare button.thumbnail-item")
    assert thumbs.count() == 6
    expect(page.locator("#vit-agreement img")).to_be_visible()
    page.locator("#vit-compare").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "classify_compare_vit.png"), full_page=True)
    thumbs.nth(2).click()  # CLS attention
    expect(page.locator("#vit-caption")).to_contain_text("CLS attention")
    page.screenshot(path=str(SHOTS / "classify_compare_vit_clicked.png"), full_page=True)


def test_swin_stage_view(page):
    page.get_by_text("What each stage sees").click()
    page.get_by_role("button", name="Show the four stages").click()
    expect(page.locator("#swin-stages-text")).to_contain_text("patch merging")
    expect(page.locator("#swin-stages img")).to_be_visible()
    page.locator("#swin-stages").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "classify_stages_swin.png"), full_page=True)


def test_vit_sanity_panel_three_curves(page):
    page.get_by_text("Sanity check: is the map faithful?").first.click()
    expect(page.get_by_role("button", name="Run the deletion test").first).to_be_visible()
    for chart in ("deletion", "insertion", "randomisation"):  # no empty boxes before the test has run
        expect(page.locator(f"#vit-{chart}")).to_be_hidden()
    page.get_by_role("button", name="Run the deletion test").first.click()
    expect(page.locator("#vit-deletion img")).to_be_visible()
    expect(page.locator("#vit-insertion img")).to_be_visible()
    page.get_by_role("button", name="Run the randomisation test").first.click()
    expect(page.locator("#vit-randomisation-text")).to_contain_text("Spearman")
    expect(page.locator("#vit-randomisation img")).to_be_visible()
    page.locator("#vit-deletion").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "classify_sanity_vit.png"), full_page=True)


def test_a_new_photo_clears_the_panels(page):
    expect(page.locator("#vit-compare button.thumbnail-item")).to_have_count(6)
    page.locator("#classify-photo input[type=file]").set_input_files(str(ROOT / "assets" / "examples" / "coffee.png"))
    expect(page.locator("#vit-compare button.thumbnail-item")).to_have_count(0)  # not the cat's maps any more
    expect(page.locator("#swin-stages img")).to_have_count(0)
    expect(page.locator("#vit-randomisation img")).to_have_count(0)
    for result in ("vit-compare", "vit-agreement", "vit-deletion", "swin-stages"):  # emptied: they take no room
        expect(page.locator(f"#{result}")).to_be_hidden()


def test_the_export_downloads_show_once_made(page):
    page.locator("#classify-tab button.label-wrap", has_text="Export").click()
    expect(page.get_by_role("button", name="Export results").first).to_be_visible()
    expect(page.locator("#classify-files")).to_be_hidden()  # no empty file box before the export
    page.get_by_role("button", name="Export results").first.click()
    expect(page.locator("#classify-files")).to_contain_text(re.compile(r"\.classify\s*\.json"))  # "x.classify .json"
