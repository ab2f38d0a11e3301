"""The ViT column's self-supervised views in a real browser (headless system Chromium, Playwright) on a tiny DINOv2
with registers' partner at the app's default precision (fast): each button clicked with the mouse, each view shown
with its caption, a second photo uploaded for the shared PCA. Screenshots go to artifacts/screenshots/dino_*.png.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a launched app driven in Chromium
pytest.importorskip("playwright.sync_api")

from playwright.sync_api import expect  # noqa: E402

from tests.app.test_dino_views import CLASSIFIER, dino_hub  # noqa: E402,F401 - the fixture
from tests.browser.test_browser import CAT, ROOT, SHOTS, browser_page  # noqa: E402
from tests.support.apps import launched_app  # noqa: E402

SLOW = 120_000  # ms: a second model loads (and converts) for the registers view on a shared 2-core machine


def test_each_view_by_mouse(dino_hub):  # noqa: F811 - the fixture
    with (
        launched_app(dino_hub, vit_model=CLASSIFIER, precision="fast") as (_, url),
        browser_page(url, 1440, 1000, SLOW) as page,
    ):
        page.locator("#classify-photo input[type=file]").set_input_files(CAT)
        expect(page.locator("#vit-overlay img")).to_be_visible(timeout=SLOW)
        page.get_by_text("What a self-supervised ViT sees").click()
        for button, words, shot in (
            ("Heads and DINO masks", "DINO's mask", "heads"),
            ("Patch features as colours", "principal components", "features"),
            ("With and without registers", "Without registers", "registers"),
        ):
            page.get_by_role("button", name=button).click()
            expect(page.locator("#vit-dino-text")).to_contain_text(words, timeout=SLOW)
            expect(page.locator("#vit-dino img")).to_be_visible(timeout=SLOW)
            page.locator("#vit-dino").scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / f"dino_{shot}.png"))
        second = str(ROOT / "assets" / "examples" / "astronaut.png")
        page.locator("#vit-dino-second input[type=file]").set_input_files(second)
        page.get_by_role("button", name="Patch features as colours").click()
        expect(page.locator("#vit-dino-text")).to_contain_text("One PCA is fitted on both photos", timeout=SLOW)
        page.screenshot(path=str(SHOTS / "dino_two_photos.png"))
        assert page.locator(".toast-body.error").count() == 0
