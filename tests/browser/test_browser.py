"""The app in a real browser: headless Chromium (the system package) driven by Playwright, on tiny checkpoints.

Upload an example and see the labels and overlays; click a class for its own map; in the Detect tab move the
threshold slider and see the box count change, click a detection and see its attention map, click the photo for
encoder attention; run the webcam tab on Chromium's fake camera until annotated frames arrive, then freeze a frame
into the Detect tab, with the engine (the app's default precision, fast) and frames/s in its status line.
Screenshots go to artifacts/screenshots/ (look at them).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a launched app driven in Chromium

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no system Chromium (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api")
pytest.importorskip("timm")
pytest.importorskip("transformers")

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.support.apps import launched_app, wait_until  # noqa: E402
from tests.support.bf16 import fast_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CAT = str(ROOT / "assets" / "examples" / "chelsea.png")
ASTRONAUT = str(ROOT / "assets" / "examples" / "astronaut.png")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
ENGINE = re.compile(r"OpenVINO \S+ (bf16|f32) on cpu \(fast\)")  # the app's default precision on this CPU
SLOW = 60_000  # ms: first use loads a model on a shared 2-core machine


@pytest.fixture(scope="module")
def url(tiny_hub, tmp_path_factory):
    """The app at its default precision, fast (the tiny models are converted once, into an engine cache of this
    module's own), so that the browser sees what a visitor of the real app sees."""
    pytest.importorskip("openvino")
    engine_cache = str(tmp_path_factory.mktemp("engine"))
    with launched_app(tiny_hub, env={"VTDEMO_ENGINE_CACHE": engine_cache}, precision="fast") as (_, address):
        yield address


@contextlib.contextmanager
def browser_page(url: str, width: int = 1400, height: int = 1000, timeout_ms: int = SLOW, **context_args):
    """The app at `url` in a fresh headless system Chromium (every browser test module opens its page this way)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": width, "height": height}, **context_args)
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        page.goto(url, wait_until="load")
        try:
            yield page
        finally:
            context.close()
            browser.close()


@pytest.fixture(scope="module")
def page(url):
    with browser_page(url, permissions=["camera"]) as page:
        expect(page.get_by_text("see what vision transformers see")).to_be_visible()
        yield page


def _count(page) -> int:
    text = page.locator("#detect-count").inner_text()
    match = re.search(r"(\d+) of 100 queries kept", text)
    return int(match.group(1)) if match else -1


def test_classify_shows_labels_and_overlays(page):
    page.locator("#classify-photo input[type=file]").set_input_files(CAT)
    for family in ("vit", "swin"):
        expect(page.locator(f"#{family}-label")).to_contain_text("%", timeout=SLOW)  # first use converts the model
        expect(page.locator(f"#{family}-overlay img")).to_be_visible(timeout=SLOW)
        expect(page.locator(f"#{family}-caption")).to_contain_text("rollout")
        expect(page.locator(f"#{family}-status")).to_contain_text(ENGINE)
    rows = page.locator("#vit-label .confidence-set, #vit-label button")
    assert rows.count() >= 5
    page.screenshot(path=str(SHOTS / "classify.png"), full_page=True)

    second = rows.nth(1)
    name = second.inner_text().split("\n")[0].strip()
    second.click()
    expect(page.locator("#vit-caption")).to_contain_text("Gradient rollout (one class) for")
    expect(page.locator("#vit-caption")).to_contain_text(name)
    expect(page.locator("#vit-caption")).to_contain_text("computed on the exact fp32 PyTorch model")
    page.locator("#swin-overlay img").click(position={"x": 60, "y": 60})
    expect(page.locator("#swin-caption")).to_contain_text("Window around a clicked point")
    page.screenshot(path=str(SHOTS / "classify_class_and_window.png"), full_page=True)


def test_detect_threshold_click_and_point(page):
    page.get_by_role("tab", name="Detect").click()
    # the tab offers the photo already classified (the cat) and detects in it; then the astronaut replaces it
    expect(page.locator("#detect-count")).to_contain_text("of 100 queries kept", timeout=SLOW)
    cat = page.locator("#detect-boxes img").first.get_attribute("src")
    page.locator("#detect-photo input[type=file]").set_input_files(ASTRONAUT)
    expect(page.locator("#detect-boxes img").first).not_to_have_attribute("src", cat or "", timeout=SLOW)
    expect(page.locator("#detect-status")).to_contain_text(fast_line("detr"))
    expect(page.locator("#detect-boxes .legend-item").first).to_be_visible()
    before = _count(page)
    assert before >= 1
    page.screenshot(path=str(SHOTS / "detect.png"), full_page=True)

    track = page.locator("#detect-threshold input[type=range]")
    box = track.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.7, y)  # the thumb sits at 0.7
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=8)
    page.mouse.up()
    expect(page.locator("#detect-count")).not_to_contain_text(f"{before} of 100 queries kept")
    # the drag's last re-render may still be on its way: the count and the box view agree once it has landed
    assert wait_until(lambda: page.locator("#detect-boxes .legend-item").count() == _count(page), 30)
    after = _count(page)
    assert after > before, (before, after)  # a lower threshold keeps more boxes
    page.screenshot(path=str(SHOTS / "detect_threshold.png"), full_page=True)

    item = page.locator("#detect-boxes .legend-item").nth(1)
    label = item.inner_text().strip()  # "2 bottle 0.95"
    item.click()
    cls, score = label.split(" ", 1)[1].rsplit(" ", 1)
    expect(page.locator("#detect-caption")).to_contain_text(f"({cls} {score})")
    expect(page.locator("#detect-attention img")).to_be_visible()
    page.locator("#detect-attention").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "detect_detection_map.png"), full_page=True)

    page.locator("#detect-attention img").click(position={"x": 80, "y": 60})
    expect(page.locator("#detect-caption")).to_contain_text("Encoder self-attention at")
    page.screenshot(path=str(SHOTS / "detect_encoder_map.png"), full_page=True)


def test_webcam_streams_annotated_frames_and_freezes(page):
    page.get_by_role("tab", name="Webcam").click()
    from vtdemo import live
    from vtdemo.ui.config import live_default

    size, _ = live_default("fast")  # this CPU's default at precision fast (320, or 256 without AVX-512)
    h, w = live.canvas(size)
    expect(page.locator("#webcam-why")).to_contain_text(f"{w}×{h} px")
    expect(page.locator("#webcam-why")).to_contain_text("Why this size: it is the largest that keeps the picture close")
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#webcam-in").get_by_text("Record", exact=True).click()  # the button's aria-label is "capture photo"
    stats = page.locator("#webcam-stats")
    expect(stats).to_contain_text("frames/s processed", timeout=SLOW)
    first = stats.inner_text()
    deadline = time.time() + 30
    while stats.inner_text() == first and time.time() < deadline:
        time.sleep(0.5)
    assert stats.inner_text() != first  # frames keep arriving
    time.sleep(3)  # let the FPS figure settle over a few seconds
    expect(page.locator("#webcam-out img")).to_be_visible()
    page.screenshot(path=str(SHOTS / "webcam.png"), full_page=True)
    fps = float(re.search(r"([\d.]+) frames/s", stats.inner_text()).group(1))
    frames = int(re.search(r"frame (\d+)", stats.inner_text()).group(1))
    print(f"\nwebcam (tiny DETR, fake camera): {fps:.1f} processed frames/s after {frames} frames")
    assert frames >= 3
    text = stats.inner_text()  # the engine that ran the frames, and the one fixed input shape it saw
    assert fast_line("detr").search(text) and f"DETR input {w}×{h} (fixed)" in text
    assert fps > 0
    footer = page.locator("#footer-runtime").inner_text()
    assert "precision fast: OpenVINO" in footer and "gradient methods on the exact fp32 PyTorch model" in footer

    number = page.locator("#webcam-threshold input[type=number]")  # the threshold, changed while streaming
    number.fill("0")
    number.press("Enter")
    expect(stats).to_contain_text("100 boxes", timeout=30_000)  # threshold 0 keeps all 100 queries
    page.screenshot(path=str(SHOTS / "webcam_threshold_0.png"), full_page=True)
    number.fill("0.7")
    number.press("Enter")

    page.get_by_role("button", name="Freeze: explain this frame").click()
    expect(page.get_by_role("tab", name="Detect")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#detect-count")).to_contain_text("of 100 queries kept")
    page.screenshot(path=str(SHOTS / "webcam_frozen_in_detect.png"), full_page=True)


def test_how_it_works_has_figures(page):
    page.get_by_role("tab", name="How it works").click()
    expect(page.get_by_text("ViT: an image as a sequence of patches")).to_be_visible()
    expect(page.get_by_text("Swin: attention in windows, then shifted windows")).to_be_visible()
    expect(page.get_by_text("DETR: detection as set prediction")).to_be_visible()
    assert page.locator("img").count() >= 3
    page.screenshot(path=str(SHOTS / "how_it_works.png"), full_page=True)
