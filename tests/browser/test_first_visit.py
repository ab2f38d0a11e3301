"""The first visit: the app exactly as `python app.py` starts it, driven in headless Chromium as a person does.

The app runs as its own process (`python app.py`, no flags: default precision, default limits, default models),
offline, on a Hub cache that holds the tiny checkpoints (tests/support/tiny_models.py) under the default repo ids; the
exact tier sets VTDEMO_PRECISION=exact, as an operator would. In every tab the test uploads the examples, drags
every slider with the mouse, clicks every button, opens every panel, picks every method and every class of the
top 5, clicks detections and the photo; and, after each step, checks what a visitor would see:

- no error toast, no "Unexpected error", no server path, upload hash or operator variable in any text;
- the output the step should fill is filled;
- the page goes quiet: no request to the queue for 3 s after the last input settles (a dragged slider once sent
  requests forever).

It also makes the newcomer's mistakes (a text file named .jpg, a 12000x12000 PNG, a nonsense model id, every
button before a photo): one message each, the page usable afterwards. Screenshots of every step go to
artifacts/first-visit/<precision>/ (CI keeps that folder; look at them). Timings of the steps a visitor waits for
are written to artifacts/first-visit/<precision>/timings.json (docs/performance.md reports them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no system Chromium (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api")
pytest.importorskip("openvino")

from playwright.sync_api import expect, sync_playwright  # noqa: E402

expect.set_options(timeout=15_000)  # a view re-render waits behind a model call on a shared 2-core machine

from tests.support.apps import free_port, wait_until  # noqa: E402
from tests.support.hubcache import repo_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "artifacts" / "first-visit"
EXAMPLES = sorted(p for p in (ROOT / "assets" / "examples").iterdir() if p.suffix in (".png", ".jpg"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SLOW = 90_000  # ms: a first use loads (and at precision fast converts) a model on a shared 2-core machine
QUIET_S = 3.0
#: What no visitor may read: a server folder, an upload's hash folder, a long hex id, an operator's variable.
SERVER_TEXT = re.compile(r"/tmp/|/root/|/home/|gradio/[0-9a-f]{16,}|\b[0-9a-f]{40,}\b|HF_HUB|VTDEMO_|\.cache/")


# ------------------------------------------------------------------------------------------------- the app


def _default_hub(tiny_hub, tiny_panoptic, folder: Path) -> Path:
    """A Hub cache with the tiny repos under the app's default repo ids (and the panoptic one under its own)."""
    from vtdemo import families

    cache = folder / "hub"
    for family, default in (
        ("vit", families.DEFAULT_VIT),
        ("swin", families.DEFAULT_SWIN),
        ("detr", families.DEFAULT_DETR),
    ):
        shutil.copytree(repo_dir(tiny_hub.cache, tiny_hub.repos[family]), repo_dir(cache, default))
    shutil.copytree(repo_dir(tiny_hub.cache, tiny_panoptic), repo_dir(cache, "facebook/detr-resnet-50-panoptic"))
    return cache


@contextlib.contextmanager
def python_app_py(env: dict[str, str], log: Path):
    """`python app.py` in its own process; yields its URL once it answers, and stops it afterwards."""
    import httpx

    port = free_port()
    full = {**os.environ, **env, "VTDEMO_PORT": str(port), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"

        def up() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            assert wait_until(up, 120), "the app did not start: " + log.read_text()[-3000:]
            yield url, time.perf_counter() - started
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


class Visit:
    """A page of the app with what it sent to the queue, and the checks made after every step."""

    def __init__(self, page, folder: Path) -> None:
        self.page, self.folder, self.sent, self.step = page, folder, [], 0
        self.timings: dict[str, float] = {}
        page.on("request", lambda r: self.sent.append(time.monotonic()) if "/queue/join" in r.url else None)

    def settle(self, what: str, limit_s: float = 60.0) -> None:
        """Wait until nothing was sent to the queue for QUIET_S seconds; fail if that never happens."""
        end = time.monotonic() + limit_s
        while True:
            last = self.sent[-1] if self.sent else 0.0
            if time.monotonic() - last >= QUIET_S:
                return
            assert time.monotonic() < end, f"{what}: the page kept sending requests ({len(self.sent)} so far)"
            time.sleep(0.2)

    def check(self, what: str, warnings: int = 0) -> str:
        """After a step: settled, no error, no server text; a screenshot. Returns the page's visible text."""
        self.settle(what)
        text = self.page.evaluate("document.body.innerText")
        assert "Unexpected error" not in text, (what, text[:2000])
        found = SERVER_TEXT.search(text)
        assert found is None, (what, text[max(0, found.start() - 200) : found.end() + 200])
        errors = self.page.locator(".toast-body.error")
        assert errors.count() == 0, (what, errors.all_inner_texts())
        toasts = self.page.locator(".toast-body.warning")
        assert toasts.count() <= warnings, (what, toasts.all_inner_texts())
        self.close_toasts()
        self.step += 1
        name = re.sub(r"[^a-z0-9]+", "_", what.lower()).strip("_")[:60]
        self.page.screenshot(path=str(self.folder / f"{self.step:02d}_{name}.png"), full_page=True)
        return text

    def close_toasts(self) -> None:
        close_toasts(self.page)

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name, exact=True).click()

    def timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.perf_counter() - started, 2)


def drag(page, slider_id: str, to: float) -> None:
    """Drag a slider's thumb with the mouse from where it is to fraction `to` of its track."""
    track = page.locator(f"#{slider_id} input[type=range]")
    track.scroll_into_view_if_needed()
    lo, hi = (float(track.get_attribute(a) or 0) for a in ("min", "max"))
    value = float(track.input_value())  # the live value (the attribute is only the initial one)
    box = track.bounding_box()
    assert box is not None, slider_id
    y = box["y"] + box["height"] / 2
    start = box["x"] + 8 + (box["width"] - 16) * (value - lo) / (hi - lo)
    page.mouse.move(start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + 8 + (box["width"] - 16) * to, y, steps=12)
    page.mouse.up()


def type_model(page, picker_id: str, model: str) -> None:
    """Type a repo id into a model picker and leave it (Enter would pick the highlighted choice instead)."""
    box = page.locator(f"#{picker_id} input")
    box.scroll_into_view_if_needed()
    box.click()
    box.fill(model)
    box.blur()


def choose(page, dropdown_id: str, option: str | None = None) -> list[str]:
    """Open a dropdown, pick `option` (or none: just read the offer and close it); returns what it offered."""
    box = page.locator(f"#{dropdown_id} input")
    box.scroll_into_view_if_needed()
    box.click()
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    offered = [o.split("\n")[-1].strip() for o in options.all_inner_texts()]  # "✓\nname" for the chosen one
    if option is None:
        page.keyboard.press("Escape")
        box.blur()  # as a person moves on: Gradio's dropdown opens on focus, so a click on a focused one does nothing
    else:  # typed and Enter, as a keyboard user does: a click on the list can miss while it re-renders
        box.fill(option)
        page.keyboard.press("Enter")
    return offered


def close_toasts(page) -> None:
    for button in page.locator(".toast-close").all():
        with contextlib.suppress(Exception):
            button.click(timeout=2000)


def press_every_button(page, within: str) -> set[str]:
    """Click each visible, enabled, labelled button under `within` once (tab headers, accordion headers and the
    image tools aside); returns their labels and the toasts they raised."""
    pressed: set[str] = set()
    toasts: list[str] = []
    for button in page.locator(f"{within} button:visible").all():
        try:
            name = button.inner_text(timeout=2000).strip()
            if not name or "label-wrap" in (button.get_attribute("class", timeout=2000) or "") or name in pressed:
                continue
            if name.startswith(("Drop", "Add row", "Add column", "Delete", "+", "⋮")):
                continue  # an upload area opens the file chooser; a table's own editing menu
            if button.get_attribute("role", timeout=2000) == "tab" or not button.is_enabled(timeout=2000):
                continue
            button.click(timeout=5000)
            pressed.add(name)
            page.wait_for_timeout(500)
            toasts.extend(page.locator(".toast-body").all_inner_texts())
            close_toasts(page)  # a toast may cover the next button
        except Exception:  # noqa: BLE001 - a button that a previous click removed or hid
            continue
    return pressed, toasts


def open_accordion(page, title: str, within: str = "body") -> None:
    label = page.locator(within).locator("button.label-wrap", has_text=title).first
    label.scroll_into_view_if_needed()
    if "open" not in (label.get_attribute("class") or ""):
        label.click()


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["fast", "exact"])
def visit(request, tiny_hub, tiny_panoptic, tmp_path_factory):
    precision = request.param
    folder = OUT / precision
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    work = tmp_path_factory.mktemp(f"first-visit-{precision}")
    env = {"HF_HUB_CACHE": str(_default_hub(tiny_hub, tiny_panoptic, work)), "VTDEMO_ENGINE_CACHE": str(work / "eng")}
    if precision == "exact":
        env["VTDEMO_PRECISION"] = "exact"
    with python_app_py(env, folder / "app.log") as (url, start_s), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(SLOW)
        t0 = time.perf_counter()
        page.goto(url, wait_until="load")
        expect(page.locator("#classify-photo")).to_be_visible()
        v = Visit(page, folder)
        v.browser, v.url = browser, url
        v.timings["app start to process answering (s)"] = round(start_s, 2)
        v.timings["page load to usable (s)"] = round(time.perf_counter() - t0, 2)
        try:
            yield v
        finally:
            (folder / "timings.json").write_text(json.dumps(v.timings, indent=2))
            browser.close()


# ------------------------------------------------------------------------------------------------- the visit


def test_buttons_before_a_photo_say_what_to_do(visit):
    """Every button of the Classify and Detect tabs before any photo: a hint, never an error."""
    page = visit.page
    visit.check("first page")
    for title in ("Explanation settings", "Sanity check", "All methods side by side", "Artefacts", "What each stage"):
        for column in ("#vit-column", "#swin-column"):
            if page.locator(column).locator("button.label-wrap", has_text=title).count():
                open_accordion(page, title, column)
    open_accordion(page, "Export", "#classify-tab")
    pressed, toasts = press_every_button(page, "#classify-tab")
    assert not any("rror" in t for t in toasts), toasts
    assert {"Run the deletion test", "Compare all methods", "Show token norms"} <= pressed, pressed
    visit.check("classify buttons before a photo")
    visit.tab("Detect")
    open_accordion(page, "Set matching")
    open_accordion(page, "Export", "#detect-tab")
    pressed, toasts = press_every_button(page, "#detect-tab")
    assert not any("rror" in t for t in toasts), toasts
    assert {"Use the detections", "Match", "Show its relevance"} <= pressed, pressed
    visit.check("detect buttons before a photo")
    visit.tab("Classify")


def test_each_example_classifies(visit):
    page = visit.page
    for i, example in enumerate(EXAMPLES):
        started = time.perf_counter()
        page.locator("#classify-tab .gallery-item, #classify-tab [data-testid='example'] img").nth(i).click()
        for family in ("vit", "swin"):
            expect(page.locator(f"#{family}-label")).to_contain_text("%", timeout=SLOW)
            expect(page.locator(f"#{family}-caption")).not_to_be_empty(timeout=SLOW)
        expect(page.locator("#vit-overlay img")).to_be_visible()
        if i == 0:
            visit.timed("first classify, both columns (s)", started)
        visit.check(f"classify example {example.stem}")


def test_classify_sliders_methods_and_classes(visit):
    page = visit.page
    open_accordion(page, "Explanation settings", "#vit-column")
    open_accordion(page, "Explanation settings", "#swin-column")
    for family in ("vit", "swin"):
        for slider, to in (("discard", 0.4), ("opacity", 0.8)):
            before = page.locator(f"#{family}-overlay img").get_attribute("src")
            drag(page, f"{family}-{slider}", to)
            visit.check(f"{family} drag {slider}")
            assert page.locator(f"#{family}-overlay img").get_attribute("src") != before, (family, slider)
        offered = choose(page, f"{family}-method")
        for label in offered:
            choose(page, f"{family}-method", label)
            expect(page.locator(f"#{family}-caption")).to_contain_text(label.split(" (")[0], timeout=SLOW)
            visit.check(f"{family} method {label}")
        choose(page, f"{family}-method", offered[0])
        rows = page.locator(f"#{family}-label button, #{family}-label .confidence-set")
        for k in range(min(5, rows.count())):
            name = rows.nth(k).inner_text().split("\n")[0].strip()
            rows.nth(k).click()
            expect(page.locator(f"#{family}-caption")).to_contain_text(name, timeout=SLOW)
            expect(page.locator(f"#{family}-overlay")).to_contain_text(f"Where it looked for “{name}”")
            visit.check(f"{family} class {k + 1}")
        choose(page, f"{family}-method", "Grad-CAM (one class)")  # another class-specific method: the class stays
        expect(page.locator(f"#{family}-caption")).to_contain_text(f"Grad-CAM (one class) for {name}", timeout=SLOW)
        visit.check(f"{family} the chosen class survives a method switch")
    aspect = page.get_by_label("keep the photo's aspect ratio")
    aspect.check()
    expect(page.locator("#vit-caption")).to_contain_text("aspect ratio", timeout=SLOW)  # at once, no other click
    expect(page.locator("#crop-note")).to_contain_text("ViT sees the whole photo")
    visit.check("vit keep the photo's aspect ratio")
    aspect.uncheck()
    expect(page.locator("#crop-note")).to_contain_text("its center crop")
    expect(page.locator("#vit-caption")).not_to_contain_text("aspect ratio", timeout=SLOW)
    visit.check("vit square crop again")
    page.locator("#swin-overlay img").click(position={"x": 60, "y": 60})
    expect(page.locator("#swin-caption")).to_contain_text("Window around a clicked point")
    visit.check("swin click the photo")


def test_classify_panels(visit):
    page = visit.page
    for family in ("vit", "swin"):
        open_accordion(page, "Sanity check", f"#{family}-column")
        page.locator(f"#{family}-column button", has_text="Run the deletion test").click()
        expect(page.locator(f"#{family}-sanity-text")).not_to_be_empty(timeout=SLOW)
        expect(page.locator(f"#{family}-deletion img")).to_be_visible()
        visit.check(f"{family} deletion test")
        page.locator(f"#{family}-column button", has_text="Run the randomisation test").click()
        expect(page.locator(f"#{family}-randomisation-text")).not_to_be_empty(timeout=SLOW)
        expect(page.locator(f"#{family}-randomisation img")).to_be_visible()
        visit.check(f"{family} randomisation test")
        open_accordion(page, "All methods side by side", f"#{family}-column")
        started = time.perf_counter()
        page.locator(f"#{family}-column button", has_text="Compare all methods").last.click()
        expect(page.locator(f"#{family}-compare-text")).to_contain_text("Fewest patches to delete", timeout=SLOW)
        visit.check(f"{family} compare all methods")
        if family == "vit":
            visit.timed("compare all methods, ViT (s)", started)
    open_accordion(page, "What each stage sees", "#swin-column")
    page.locator("#swin-column button", has_text="Show the four stages").click()
    expect(page.locator("#swin-stages img")).to_be_visible(timeout=SLOW)
    expect(page.locator("#swin-stages-text")).to_contain_text("patch merging")
    visit.check("swin stages")
    open_accordion(page, "Artefacts: high-norm tokens", "#vit-column")
    page.locator("#vit-norm-show").click()
    expect(page.locator("#vit-norms img")).to_be_visible(timeout=SLOW)
    expect(page.locator("#vit-norms-text")).to_contain_text("Block 2 of 2")
    visit.check("vit token norms")
    page.get_by_label("mask outlier tokens out of the rollout").check()
    expect(page.locator("#vit-caption")).to_contain_text("outlier tokens masked out", timeout=SLOW)
    expect(page.locator("#vit-overlay img")).to_be_visible()
    visit.check("vit mask outliers")
    page.get_by_label("mask outlier tokens out of the rollout").uncheck()
    visit.check("vit unmask outliers")


def test_detect_threshold_drag_goes_quiet(visit):
    page = visit.page
    visit.tab("Detect")
    started = time.perf_counter()
    expect(page.locator("#detect-count")).to_contain_text("queries kept", timeout=SLOW)  # the Classify tab's photo
    visit.timed("first detect (s)", started)
    visit.check("detect tab offers the classified photo")
    astronaut = next(i for i, p in enumerate(EXAMPLES) if p.stem == "astronaut")
    shown = page.locator("#detect-boxes img").first.get_attribute("src")
    page.locator("#detect-tab .gallery-item, #detect-tab [data-testid='example'] img").nth(astronaut).click()
    expect(page.locator("#detect-boxes img").first).not_to_have_attribute("src", shown or "", timeout=SLOW)
    visit.check("detect astronaut")
    for to in (0.29, 0.5, 0.1):
        started = time.perf_counter()
        drag(page, "detect-threshold", to)
        released = time.perf_counter()
        shown = float(page.locator("#detect-threshold input[type=number]").input_value())
        expect(page.locator("#detect-count")).to_contain_text(f"score ≥ {shown:.2f}")
        visit.timings[f"threshold drag to {to}: the mouse's 12 moves (s)"] = round(released - started, 2)
        visit.timed(f"threshold drag to {to}: mouse up to the final count shown (s)", released)
        visit.check(f"detect drag threshold to {to}")
    for slider, to in (("detect-max-det", 0.3), ("detect-nms-iou", 0.7), ("detect-opacity", 0.2)):
        drag(page, slider, to)
        visit.check(f"detect drag {slider}")
    page.get_by_label("Class-aware NMS (DETR needs none: try it and compare)").check()
    visit.check("detect nms on")


def test_detect_clicks_and_panels(visit):
    page = visit.page
    items = page.locator("#detect-boxes .legend-item")
    for k in range(min(3, items.count())):
        label = items.nth(k).inner_text().strip()
        items.nth(k).click()
        expect(page.locator("#detect-caption")).to_contain_text(label.split(" ", 1)[1].rsplit(" ", 1)[0])
        visit.check(f"detect click detection {k + 1}")
    expect(page.locator("#detect-attention img")).to_be_in_viewport()
    page.locator("#detect-attention img").click(position={"x": 60, "y": 50})
    expect(page.locator("#detect-caption")).to_contain_text("Encoder self-attention at")
    visit.check("detect click the photo")
    page.get_by_role("button", name="Show its relevance").click()
    expect(page.locator("#detect-caption")).to_contain_text("elevance", timeout=SLOW)
    visit.check("detect relevance")
    page.get_by_role("tab", name="Masks").click()
    expect(page.locator("#detect-masks-legend")).to_contain_text("pick facebook/detr-resnet-50-panoptic", timeout=SLOW)
    visit.check("masks view of a plain DETR")
    type_model(page, "detect-model", "facebook/detr-resnet-50-panoptic")
    expect(page.locator("#detect-masks-legend")).to_contain_text("segments", timeout=SLOW)
    expect(page.locator("#detect-masks img")).to_be_visible()
    visit.check("masks view of the panoptic DETR")
    type_model(page, "detect-model", "facebook/detr-resnet-50")
    expect(page.locator("#detect-masks-legend")).to_contain_text("pick facebook/detr-resnet-50-panoptic", timeout=SLOW)
    visit.check("back to the plain DETR")
    page.get_by_role("tab", name="Boxes").click()
    open_accordion(page, "Set matching")
    page.get_by_role("button", name="Use the detections", exact=True).click()
    visit.check("set matching: use the detections")
    page.get_by_role("button", name="Match", exact=True).click()
    visit.check("set matching: match")
    open_accordion(page, "Export", "#detect-tab")
    page.locator("#detect-tab button", has_text="Export results").click()
    expect(page.locator("#detect-tab a[download]").first).to_be_attached(timeout=SLOW)
    visit.check("detect export")


def test_webcam_and_how_it_works_tabs_open(visit):
    visit.tab("Webcam")
    visit.check("webcam tab")
    visit.tab("How it works")
    visit.check("how it works tab")
    visit.tab("Classify")


def test_newcomer_mistakes_one_message_each(visit, tmp_path):
    page = visit.page
    fake = tmp_path / "holiday photo.jpg"
    fake.write_text("a text file with a photo's name\n")
    page.locator("#classify-photo input[type=file]").set_input_files(str(fake))
    expect(page.locator("#vit-status")).to_contain_text("holiday photo.jpg: unsupported format", timeout=SLOW)
    assert page.locator(".toast-body.warning").count() == 1  # once for the tab, not once per column
    visit.check("text file named jpg", warnings=1)
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)
    page.locator("#classify-photo input[type=file]").set_input_files(str(huge))
    expect(page.locator("#vit-status")).to_contain_text("resize the photo to at most 40 megapixels", timeout=SLOW)
    visit.check("12000x12000 png", warnings=1)
    page.locator("#classify-tab .gallery-item, #classify-tab [data-testid='example'] img").first.click()
    expect(page.locator("#vit-label")).to_contain_text("%", timeout=SLOW)
    visit.check("a good photo after the bad ones")
    type_model(page, "vit-model", "nobody/no-such-model")
    expect(page.locator("#vit-status")).to_contain_text("was not loaded", timeout=SLOW)
    expect(page.locator("#vit-label")).to_contain_text("%")  # the previous result stays
    visit.check("nonsense model id", warnings=1)


def test_phone_width(visit):
    """At 390 px: every tab in sight (no overflow menu), the photo, then both results one above the other, then
    the examples; nothing wider than the screen."""
    context = visit.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.set_default_timeout(SLOW)
        page.goto(visit.url, wait_until="load")
        page.locator("#try-cat").click()
        for family in ("vit", "swin"):
            expect(page.locator(f"#{family}-label")).to_contain_text("%", timeout=SLOW)
        for name in ("Classify", "Detect", "Webcam", "How it works"):
            expect(page.get_by_role("tab", name=name, exact=True)).to_be_visible()
        top = {
            k: page.locator(sel).first.bounding_box()["y"]
            for k, sel in (
                ("photo", "#classify-photo"),
                ("vit", "#vit-label"),
                ("swin", "#swin-label"),
                ("examples", "#classify-tab .gallery-item, #classify-tab [data-testid='example'] img"),
            )
        }
        assert top["photo"] < top["vit"] < top["swin"] < top["examples"], top
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(visit.folder / "phone_390.png"), full_page=True)
    finally:
        context.close()
