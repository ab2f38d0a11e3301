"""The Classify columns' input size choice and the ViT column's high-norm artefact inspector, through the API of a
launched app on the tiny checkpoints (gradio_client and raw calls) and at handler level.

Sizes: the offered sizes by hand; a re-run at 448 px puts the map on a 28x28 grid (the exported raw map), with the
caption naming both sizes; the photo's aspect ratio gives a 14x21 grid; a new photo keeps the chosen size; Swin runs
at the sizes its windows allow; hostile values are refused in one line. Inspector: a planted high-norm token is found
and the masked map equals `artefacts.masked_rollout` (hand-checked in tests/unit/test_artefacts.py) with that token
masked; a run without block outputs gets them from one exact pass.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from tests.app.test_hostile import assert_clear, call, upload  # noqa: E402
from tests.support.apps import launched_app  # noqa: E402
from vtdemo import loader, pipeline  # noqa: E402
from vtdemo.errors import InputError  # noqa: E402
from vtdemo.explain import artefacts, normalize_map  # noqa: E402
from vtdemo.explain import vit as ex  # noqa: E402
from vtdemo.ui.classify.views import ClassifyState  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched on the tiny checkpoints: its start-up and a model run per test

ROOT = Path(__file__).resolve().parents[2]
CAT = str(ROOT / "assets" / "examples" / "chelsea.png")  # 451x300
ASTRONAUT = str(ROOT / "assets" / "examples" / "astronaut.png")


@pytest.fixture(scope="module")
def app(tiny_hub):
    with launched_app(tiny_hub) as (vt, url):
        vt.repos = tiny_hub.repos
        yield vt, url


@pytest.fixture(scope="module")
def client(app):
    return Client(app[1], verbose=False, download_files=False)


def _raw_maps(client) -> dict[str, np.ndarray]:
    """The exported raw maps (.npy, the model's own grid) by family."""
    files = client.predict(api_name="/export_classify")
    paths = [f["path"] if isinstance(f, dict) else f for f in files]
    return {Path(p).name.split(".")[-3]: np.load(p) for p in paths if p.endswith(".npy")}


# ------------------------------------------------------------------------------------------------- sizes


def test_offered_sizes_and_refusals_by_hand(app):
    vit = loader.load(app[0].repos["vit"], "cpu")  # 224 px, patch 16
    swin = loader.load(app[0].repos["swin"], "cpu")  # 224 px, patch 4, window 7 in every stage
    # 224 * (1/2, 3/4, 9/7, 3/2, 12/7, 2) = 112, 168 -> 176 (10.5 patches rounds up), 288, 336, 384, 448
    assert pipeline.offered_sizes(vit) == [112, 176, 288, 336, 384, 448]
    # Swin-T geometry: stage 4 is S/32 tokens and must tile into 7x7 windows: 224 (7) and 448 (14) up to 2 x 224
    assert pipeline.offered_sizes(swin) == [448]
    assert (
        pipeline.parse_size(vit, "448") == pipeline.SizeChoice(448)
        and pipeline.parse_size(vit, "224") == pipeline.SizeChoice()
    )
    assert pipeline.parse_size(vit, "trained", True) == pipeline.SizeChoice(None, True)
    assert pipeline.parse_size(vit, 512) == pipeline.SizeChoice(512)  # 32x32 = 1024 patches, the most a run may have
    for value, says in (
        ("abc", "must be a number"),
        (math.nan, "finite number"),
        ("528", "from 32 to 512"),  # 33x33 patches
        (16, "from 32 to 512"),  # one patch
        ("300", "multiple of"),
        (224.5, "whole number"),
        ([448], "must be a number"),
    ):
        with pytest.raises(InputError, match=says):
            pipeline.parse_size(vit, value)
    with pytest.raises(InputError, match="true or false"):
        pipeline.parse_size(vit, "448", "yes")
    with pytest.raises(InputError, match="runs at 224, 448 px only"):
        pipeline.parse_size(swin, "336")
    with pytest.raises(InputError, match="ViT/DeiT models only"):
        pipeline.parse_size(swin, "448", True)


def test_a_bigger_size_puts_the_map_on_the_real_patch_grid(client, app):
    loaded = loader.load(app[0].repos["vit"], "cpu")
    out = client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    assert "Input size" not in out[2] and _raw_maps(client)["vit"].shape == (14, 14)

    out = client.predict("448", False, 0.5, api_name="/resize_vit")
    label, overlay, caption, status, method = out[:5]
    offered = [value for _, value in method["choices"]]  # the ViT LRP walks cover the trained size only
    assert method["value"] == "rollout" and "gradcam" in offered and not {"attn-lrp", "cp-lrp"} & set(offered)
    assert (
        "trained at 224 px, running at 448 px (28x28 patches): position embeddings interpolated, "
        "predictions may differ" in caption
    )
    assert "448x448px input" in status
    assert _raw_maps(client)["vit"].shape == (28, 28)
    overlay_path = overlay["path"] if isinstance(overlay, dict) else overlay
    assert Image.open(overlay_path).size == Image.open(CAT).size  # still drawn over the whole photo
    out = client.predict("gradcam", None, "mean", 0.0, "mean", None, 0.5, api_name="/explain_vit")
    assert "Grad-CAM" in out[1] and "running at 448 px" in out[1] and _raw_maps(client)["vit"].shape == (28, 28)
    with pytest.raises(Exception, match="not in the list of choices"):  # no longer offered at this size
        client.predict("attn-lrp", None, "mean", 0.0, "mean", None, 0.5, api_name="/explain_vit")
    client.predict("rollout", None, "mean", 0.0, "mean", None, 0.5, api_name="/explain_vit")
    expected = pipeline.run_classifier(loaded, Image.open(CAT).convert("RGB"), input_size=448)
    top = pipeline.predictions(loaded, expected.logits, 5)
    assert [c["label"] for c in label["confidences"]] == [p.label for p in top]  # the model ran at 448

    out = client.predict("trained", True, 0.5, api_name="/resize_vit")  # 451x300: short side 224, long 336.7 -> 336
    assert "running at 336x224 px (14x21 patches, the photo's aspect ratio)" in out[2]
    assert _raw_maps(client)["vit"].shape == (14, 21)

    client.predict("288", False, 0.5, api_name="/resize_vit")
    out = client.predict(handle_file(ASTRONAUT), "", "rollout", 0.5, api_name="/classify_vit")
    assert "running at 288 px (18x18 patches)" in out[2]  # a new photo runs at the chosen size
    out = client.predict("grad-rollout", None, "mean", 0.0, "mean", None, 0.5, api_name="/explain_vit")
    assert "running at 288 px" in out[1] and _raw_maps(client)["vit"].shape == (18, 18)

    out = client.predict("trained", False, 0.5, api_name="/resize_vit")
    assert "Input size" not in out[2] and _raw_maps(client)["vit"].shape == (14, 14)


def test_swin_runs_at_the_sizes_its_windows_allow(client):
    client.predict(handle_file(CAT), "", "swin-rollout", 0.5, api_name="/classify_swin")
    before = _raw_maps(client)["swin"].shape
    out = client.predict("448", 0.5, api_name="/resize_swin")
    assert "trained at 224 px, running at 448 px (112x112 patches of 4 px, 7x7 windows as trained)" in out[2]
    assert _raw_maps(client)["swin"].shape == (2 * before[0], 2 * before[1])
    out = client.predict("trained", 0.5, api_name="/resize_swin")
    assert "Input size" not in out[2] and _raw_maps(client)["swin"].shape == before


def test_bad_sizes_are_refused_in_one_line(app):
    _, url = app
    photo = upload(url, "chelsea.png", Path(CAT).read_bytes())
    session = "hostile-sizes"
    assert_clear(call(url, "resize_vit", ["448", False, 0.5], session), "upload a photo first")
    assert call(url, "classify_vit", [photo, "", "rollout", 0.5], session)[0] == "complete"
    assert call(url, "classify_swin", [photo, "", "swin-rollout", 0.5], session)[0] == "complete"
    for value, says in (
        (math.nan, "finite number"),
        ("abc", "must be a number"),
        ("300", "multiple of"),
        (10**9, "from 32 to 512"),
        (-16, "from 32 to 512"),
        ({"size": 448}, "must be a number"),
    ):
        assert_clear(call(url, "resize_vit", [value, False, 0.5], session), says)
    assert_clear(call(url, "resize_vit", ["448", "yes", 0.5], session), "true or false")
    assert_clear(call(url, "resize_vit", ["448", False, math.inf], session), "Opacity must be")
    assert_clear(call(url, "resize_swin", ["480", 0.5], session), "runs at 224, 448 px only")
    huge = assert_clear(call(url, "resize_swin", ["1e308", 0.5], session), "must be a number from 1 to")
    assert len(huge) <= 200  # not the 309 digits of the number echoed back
    assert call(url, "resize_vit", ["448", False, 0.5], session)[0] == "complete"  # and it still works


# ------------------------------------------------------------------------------------------------- inspector


def _column_and_state(app, photo=CAT) -> tuple[object, ClassifyState]:
    column = app[0].classify.vit
    loaded = loader.load(app[0].repos["vit"], "cpu")
    run = pipeline.run_classifier(loaded, Image.open(photo).convert("RGB"))
    state = ClassifyState(
        run=run, name="chelsea.png", method="rollout", predictions=pipeline.predictions(loaded, run.logits, 5)
    )
    return column, state


def test_inspector_finds_a_planted_high_norm_token_and_masks_it(app):
    column, state = _column_and_state(app)
    run = state.run
    assert run.grid == (14, 14) and run.tokens is not None
    planted = torch.zeros(14, 14, dtype=torch.bool)
    planted[3, 11] = True  # patch 3 * 14 + 11 = 53, token 54 (after CLS)
    run.tokens = [t.clone() for t in run.tokens]
    for t in run.tokens:
        t[1 + 53] *= 30.0  # a token ~30x the others' norm after every block: what the paper's artefacts look like
    out = column.inspector.inspect(state, "last")
    text = out[column.inspector.text]
    assert "**Block 2 of 2**" in text and "**1 high-norm outlier token**" in text and "(3, 11)" in text
    assert "Outliers per block: 1: 1 · 2: 1" in text and "CLS" in text
    assert out[column.inspector.image].size == Image.open(CAT).size
    shots = ROOT / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    out[column.inspector.image].save(shots / "classify_artefacts_planted.png")  # the ringed token: look at it
    assert column.inspector.inspect(state, "1")[column.inspector.text].startswith("**Block 1 of 2**")

    plain = normalize_map(ex.rollout(run.attentions).view(14, 14))
    column.inspector.masked(state, True, 0.5)
    expected = normalize_map(artefacts.masked_rollout(run.attentions, planted).view(14, 14))
    torch.testing.assert_close(state.relevance, expected)
    assert state.relevance[3, 11] == 0 and plain[3, 11] > 0
    assert (state.relevance - plain).abs().max() > 1e-3  # masking moved the map
    assert "outlier tokens masked out" in column.redraw(state)[column.caption]
    column.inspector.masked(state, False, 0.5)
    torch.testing.assert_close(state.relevance, plain)

    state.method = "cls-attention"  # the switch goes back to the rollout, which it applies to
    out = column.inspector.masked(state, True, 0.5)
    assert state.method == "rollout" and "masked out" in out[column.caption]


def test_inspector_without_block_outputs_runs_one_exact_pass(app):
    column, state = _column_and_state(app)
    tokens = [t.clone() for t in state.run.tokens]
    state.run.tokens = None  # what a fast-engine run keeps
    out = column.inspector.refresh(state)
    assert "kept no block outputs" in out[column.inspector.text] and out[column.inspector.image] is None
    out = column.inspector.inspect(state, "last")
    assert out[column.inspector.image] is not None and "Block 2 of 2" in out[column.inspector.text]
    for a, b in zip(state.run.tokens, tokens, strict=True):
        torch.testing.assert_close(a, b)


def test_inspector_through_the_api(client, app):
    _, url = app
    client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
    image, text, _ = client.predict("last", api_name="/artefacts_vit")
    assert image is not None and "Block 2 of 2" in text and "Outliers per block" in text
    out = client.predict(True, 0.5, api_name="/mask_outliers_vit")
    assert "outlier tokens masked out" in out[1]
    out = client.predict(False, 0.5, api_name="/mask_outliers_vit")
    assert "masked out" not in out[1]

    photo = upload(url, "chelsea.png", Path(CAT).read_bytes())
    session = "hostile-inspector"
    assert_clear(call(url, "artefacts_vit", ["last"], session), "upload a photo first")
    assert call(url, "classify_vit", [photo, "", "rollout", 0.5], session)[0] == "complete"
    for value in ("0", "3", "abc", math.nan, [1]):
        assert_clear(call(url, "artefacts_vit", [value], session), "the block must be")
    assert_clear(call(url, "mask_outliers_vit", ["yes", 0.5], session), "true or false")
    assert_clear(call(url, "mask_outliers_vit", [True, math.nan], session), "Opacity must be")


def test_the_method_list_follows_the_run(app):
    """At another input size the ViT LRP walks (trained geometry only) leave the method list; Grad-CAM stays."""
    from vtdemo.explain.api import methods_for_run

    loaded = loader.load(app[0].repos["vit"], "cpu")
    photo = Image.open(CAT).convert("RGB")
    trained = [m.name for m in methods_for_run(pipeline.run_classifier(loaded, photo))]
    bigger = [m.name for m in methods_for_run(pipeline.run_classifier(loaded, photo, input_size=448))]
    assert {"attn-lrp", "cp-lrp", "gradcam"} <= set(trained)
    assert set(trained) - set(bigger) == {"attn-lrp", "cp-lrp"} and "gradcam" in bigger


def test_a_flat_map_says_so(app):
    """A map with one value everywhere (e.g. Grad-CAM with no positive evidence) gets a caption saying it is flat."""
    import torch

    from vtdemo.ui.classify.views import EMPTY, caption

    _, state = _column_and_state(app)
    state.target = {"index": 0, "label": "tench", "score": 0.01}
    grid = state.run.patch_grid
    for flat in (torch.zeros(grid), torch.full(grid, 0.5)):
        state.relevance = flat
        assert caption(state).endswith(EMPTY)
    state.relevance = torch.zeros(grid)
    state.relevance[3, 4] = 1.0
    assert EMPTY not in caption(state)
