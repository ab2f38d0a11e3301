"""The Classify tab in a real browser (headless Chromium, tiny checkpoints; the set-up of
tests/browser/test_browser.py): the ViT method dropdown offers AttnLRP, CP-LRP and Grad-CAM and each draws a map
without a warning; the input size choice re-runs at 448 px and the caption says so; the artefact inspector shows the
token norms and its switch re-draws the map with the outliers masked. Screenshots go to artifacts/screenshots/ (look
at them).
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a launched app driven in Chromium

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.test_browser import CAT, SHOTS, browser_page  # noqa: E402 - skips this module without Chromium
from tests.support.apps import launched_app  # noqa: E402

METHODS = ("AttnLRP (one class)", "CP-LRP (one class)", "Grad-CAM (one class)")


@pytest.fixture(scope="module")
def page(tiny_hub):
    with launched_app(tiny_hub) as (_, url), browser_page(url) as page:
        page.locator("#classify-photo input[type=file]").set_input_files(CAT)
        expect(page.locator("#vit-caption")).to_contain_text("rollout")
        page.locator("#vit-column button.label-wrap", has_text="Explanation settings").click()  # closed at first
        yield page


def _choose(page, combobox: str, option: str) -> list[str]:
    """Pick `option` in the ViT column's dropdown (it comes first); returns the options it offered."""
    page.get_by_role("combobox", name=combobox).first.click()
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    offered = options.all_inner_texts()
    page.get_by_role("option", name=option, exact=True).click()
    return offered


def test_vit_methods_include_lrp_and_gradcam_and_each_draws(page):
    for label in METHODS:
        offered = _choose(page, "Method", label)
        assert all(any(m in o for o in offered) for m in METHODS), offered
        expect(page.locator("#vit-caption")).to_contain_text(label)
        expect(page.locator("#vit-overlay img")).to_be_visible()
        expect(page.locator("#vit-status")).not_to_contain_text("⚠️")
    page.locator("#vit-overlay").screenshot(path=str(SHOTS / "classify_vit_gradcam.png"))


def test_input_size_and_the_artefact_inspector(page):
    _choose(page, "Method", "Attention rollout")
    expect(page.locator("#vit-caption")).to_contain_text("Attention rollout")
    _choose(page, "Input size", "448 px")
    caption = page.locator("#vit-caption")
    expect(caption).to_contain_text("trained at 224 px, running at 448 px (28x28 patches)")
    expect(page.locator("#vit-status")).to_contain_text("448x448px input")
    page.screenshot(path=str(SHOTS / "classify_input_size.png"), full_page=True)

    page.get_by_text("Artefacts: high-norm tokens").click()
    page.locator("#vit-norm-show").click()
    expect(page.locator("#vit-norms img")).to_be_visible()
    expect(page.locator("#vit-norms-text")).to_contain_text("Block 2 of 2")
    page.get_by_label("mask outlier tokens out of the rollout").check()
    expect(caption).to_contain_text("outlier tokens masked out")
    expect(page.locator("#vit-status")).not_to_contain_text("⚠️")
    page.locator("#vit-artefacts").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "classify_artefacts.png"), full_page=True)
    page.locator("#vit-artefacts").screenshot(path=str(SHOTS / "classify_artefacts_panel.png"))
