"""The defects a first visit found at the app's default precision (fast), each through the app's own API.

- "What each stage sees" on a fast Swin: the compiled graph has no stages to hook, so the panel must run on the
  exact model (it failed with `'FastModel' object has no attribute 'layers'`).
- The artefact inspector and "mask outlier tokens" on a fast ViT: a fast run reports no patch grid (the panel said
  "needs a ViT run (with its block outputs)" and the mask emptied the map).
- Messages: a file is named by its own name (never the upload folder), once per problem (not once per column); a
  too-large photo says how large a photo may be; a model that cannot be loaded keeps the previous result and says
  so in words a visitor can act on (no environment variable, no cache folder).

The slider drag that looped is a browser matter: `tests/browser/test_first_visit.py` drags every slider with the
mouse and waits for the page to go quiet.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("openvino")
pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from tests.support.apps import launched_app  # noqa: E402
from vtdemo import loader  # noqa: E402
from vtdemo.explain import artefacts, stages  # noqa: E402
from vtdemo.explain.runs import run_classifier  # noqa: E402

pytestmark = pytest.mark.slow  # the app at precision fast: conversions, 5-20 s a test

ROOT = Path(__file__).resolve().parents[2]
CAT = str(ROOT / "assets" / "examples" / "chelsea.png")
SERVER_PATH = re.compile(r"/tmp/|gradio/[0-9a-f]{20,}|[0-9a-f]{40,}|HF_HUB|VTDEMO_|\.cache")


@pytest.fixture(scope="module")
def app(tiny_hub, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("engine"))
    with launched_app(tiny_hub, env={"VTDEMO_ENGINE_CACHE": cache}, precision="fast") as (vt, url):
        vt.repos = tiny_hub.repos
        yield vt, url


@pytest.fixture
def client(app):
    return Client(app[1], verbose=False, download_files=False)


def _image_path(value) -> str:
    return value["path"] if isinstance(value, dict) else value


def test_stage_view_works_on_a_fast_swin_and_shows_the_exact_models_stages(client, app):
    client.predict(handle_file(CAT), "", "swin-rollout", 0.5, api_name="/classify_swin")
    image, text = client.predict(api_name="/stages_swin")
    assert image is not None and "Unexpected error" not in text and "patch merging" in text
    # the same variance shares as the stages of the exact model on the same input (timm-parity-tested module)
    exact = loader.load(app[0].repos["swin"], "cpu")
    expected = stages.stage_pca(exact.model, run_classifier(exact, Image.open(CAT).convert("RGB")).x)
    for s in expected:
        assert f"{s.grid[0]}x{s.grid[1]} ({s.channels} ch)" in text
    assert f"{sum(expected[0].explained):.0%}" in text


def test_artefact_inspector_and_mask_work_on_a_fast_vit(client, app):
    client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    image, text, _ = client.predict("last", api_name="/artefacts_vit")
    assert image is not None and "⚠" not in text, text
    assert text.startswith("**Block 2 of 2**")  # the tiny ViT has two blocks
    # the panel's median norm is the norm of the exact model's own block output (read on the same input here)
    exact = loader.load(app[0].repos["vit"], "cpu")
    run = run_classifier(exact, Image.open(CAT).convert("RGB"))
    median = float(artefacts.inspect(run)["norms"][-1].median())
    assert f"median norm {median:.3g}" in text
    overlay, caption, status = client.predict(True, 0.5, api_name="/mask_outliers_vit")[:3]
    assert overlay is not None and caption and "⚠" not in status, (caption, status)


def test_a_text_file_named_jpg_is_named_by_its_own_name_once(client, tmp_path):
    fake = tmp_path / "holiday photo.jpg"
    fake.write_text("not a photo at all, just some words\n")
    vit = client.predict(handle_file(str(fake)), "", "rollout", 0.5, api_name="/classify_vit")[3]
    swin = client.predict(handle_file(str(fake)), "", "swin-rollout", 0.5, api_name="/classify_swin")[3]
    assert "holiday photo.jpg: unsupported format (text or HTML, not an image)" in vit
    assert not SERVER_PATH.search(vit), vit
    assert swin == ""  # one message for the tab: the photo's problem is said once, in the first column


def test_a_huge_photo_says_how_large_a_photo_may_be(client, tmp_path):
    huge = tmp_path / "panorama.png"
    Image.new("1", (12000, 12000)).save(huge)  # 144 megapixels, a few hundred kB as PNG
    text = client.predict(handle_file(str(huge)), "", "rollout", 0.5, api_name="/classify_vit")[3]
    assert "panorama.png: 12000x12000 = 144 megapixels is too large: resize the photo to at most 40 megapixels" in (
        text
    )
    assert not SERVER_PATH.search(text), text


def test_a_model_that_cannot_be_loaded_keeps_the_previous_result(client, app):
    first = client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    assert first[0]["label"]
    out = client.predict(handle_file(CAT), "nobody/no-such-model", "rollout", 0.5, api_name="/classify_vit")
    status = out[3]
    assert "'nobody/no-such-model' was not loaded" in status
    assert f"Still showing {app[0].repos['vit']}" in status
    assert "Pick one of the models in the list" in status
    assert not SERVER_PATH.search(status), status
    detected = client.predict(
        handle_file(CAT), "", 0.5, [], 100, False, 0.5, "mean", "last", "where it looks", 0.55, api_name="/detect"
    )
    assert detected[0] is not None
    out = client.predict(
        handle_file(CAT), "nobody/no-such-detr", 0.5, [], 100, False, 0.5, "mean", "last", "where it looks", 0.55,
        api_name="/detect",
    )  # fmt: skip
    assert "'nobody/no-such-detr' was not loaded" in out[3] and f"Still showing {app[0].repos['detr']}" in out[3]


def test_first_conversion_progress_names_no_folder(app, tmp_path, monkeypatch):
    """The progress text of a first conversion is for the visitor: the engine cache's folder stays in the log."""
    monkeypatch.setenv("VTDEMO_ENGINE_CACHE", str(tmp_path / "fresh-engine"))
    said: list[str] = []

    def progress(value, desc=None, **_):
        if desc:
            said.append(desc)

    loader.clear_cache()
    services = app[0].services
    loaded = services.load(app[0].repos["vit"], "vit", progress)
    assert loaded.precision == "fast"
    assert any("Preparing the fast engine" in text for text in said), said
    assert not any(SERVER_PATH.search(text) or str(tmp_path) in text for text in said), said
    assert np.isfinite(loaded.model(run_classifier(loaded, Image.open(CAT).convert("RGB")).x).logits).all()


def test_no_view_listens_to_a_slider_change(tiny_hub):
    """A slider's `change` also fires when the page itself sets its value, so a re-render that listens to it can
    start itself again (a dragged threshold once sent requests forever): every slider listener is `input`."""
    from vtdemo.ui.app import create_app
    from vtdemo.ui.config import AppConfig

    vt = create_app(AppConfig(**{f"{k}_model": v for k, v in tiny_hub.repos.items()}, precision="exact"))
    config = vt.demo.get_config_file()
    kinds = {c["id"]: c["type"] for c in config["components"]}
    sliders = {i for i, t in kinds.items() if t == "slider"}
    assert len(sliders) >= 8  # threshold, max detections, NMS IoU, opacities, discards, the webcam's threshold
    triggers = [(block, event) for dep in config["dependencies"] for block, event in dep["targets"]]
    changed = [(kinds[b], b) for b, e in triggers if b in sliders and e == "change"]
    assert not changed, changed
    assert any(b in sliders and e == "input" for b, e in triggers)


def test_masks_of_a_panoptic_detr_at_the_default_precision(client, tiny_panoptic):
    """The fast graphs return boxes and attention only: a panoptic DETR picked at precision fast runs exact, so the
    Masks view shows its segments (it said "Masks need a panoptic model" for the panoptic model itself)."""
    astronaut = str(ROOT / "assets" / "examples" / "astronaut.png")
    view = ("mean", "last", "where it looks", 0.55)
    out = client.predict(handle_file(astronaut), tiny_panoptic, 0.5, [], 100, False, 0.5, *view, api_name="/detect")
    assert "of 20 queries kept" in out[1] and "(exact)" in out[3], out[3]
    image, legend, _ = client.predict(0.5, api_name="/masks")
    assert image is not None and "segments</b> cover" in legend, legend
