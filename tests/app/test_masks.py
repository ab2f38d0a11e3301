"""The Masks view of the Detect tab, on a tiny panoptic checkpoint (transformers DetrForSegmentation format, COCO
panoptic ids and names; `tiny_models.write_tiny_panoptic`) and on the plain tiny DETR.

Checked: the segments the view shows equal the library's panoptic post-processing of a fresh float32 forward (itself
checked against transformers in tests/parity/test_detr_panoptic.py) at several thresholds, with no model call after the
first; the legend's things / stuff against the COCO panoptic category list (panopticapi), with the area shares; a
click on a segment (or its pick) gives that segment's query's decoder cross-attention and the relevance view works
for it; hostile values are refused in one line; a plain DETR says that masks need a panoptic checkpoint.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from tests.app.test_app import ASTRONAUT, VIEW, in_event  # noqa: E402, F401
from tests.app.test_hostile import call  # noqa: E402
from tests.support.apps import counting_forward, launched_app  # noqa: E402
from tests.support.tiny_models import COCO_PANOPTIC_STUFF, PANOPTIC_REPO  # noqa: E402
from vtdemo import loader, pipeline  # noqa: E402
from vtdemo.images import load_image  # noqa: E402
from vtdemo.labels import coco  # noqa: E402
from vtdemo.postprocess_panoptic import coco_stuff_ids, segments_of_output  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched on the tiny checkpoints: its start-up and a model run per test


@pytest.fixture(scope="module")
def app(tiny_hub, tiny_panoptic):
    with launched_app(tiny_hub) as (vt, url):
        yield vt, url


@pytest.fixture(scope="module")
def client(app):
    return Client(app[1], verbose=False, download_files=False)


def _reference(threshold: float):
    """The library's post-processing of a fresh float32 forward (full `pred_masks`, no cache), stuff fused."""
    loaded = loader.load(PANOPTIC_REPO, "cpu")
    image = load_image(ASTRONAUT)
    run = pipeline.run_detr(loaded, image)
    return segments_of_output(run.output, image.size, threshold=threshold, fuse=coco_stuff_ids(250)), image.size


def _legend(html: str) -> dict[str, list[tuple[str, float]]]:
    """The legend's "thing" and "stuff" lists: (name, area %) per entry."""
    out = {}
    for kind in ("thing", "stuff"):
        block = re.search(rf"<ul class='vt-legend-{kind}'[^>]*>(.*?)</ul>", html).group(1)
        out[kind] = [(name, float(area)) for name, area in re.findall(r"</span>([^<]+?) · [0-9.]+ · ([0-9.]+)%", block)]
    return out


def test_segments_equal_the_library_and_rethreshold_without_a_model_call(app, in_event):  # noqa: F811
    tab = app[0].detect
    loaded = loader.load(PANOPTIC_REPO, "cpu")
    calls, restore = counting_forward(loaded)
    try:
        state = tab.detect(ASTRONAUT, PANOPTIC_REPO, 0.7, [], 100, False, 0.5, *VIEW)[tab.state]
        assert state.run.masks is not None and state.run.output.pred_masks is None  # only the object queries kept
        seen = {}
        for t in (0.7, 0.5, 0.9, 0.7):
            out = tab.masks.render(state, t)
            seen[t] = state.panoptic
            assert out[tab.masks.image] is not None and out[tab.masks.image].size == state.canvas.size
        assert calls["n"] == 1
    finally:
        restore()
    for t, got in seen.items():
        expected, _ = _reference(t)
        assert torch.equal(got.segmentation, expected.segmentation), t
        assert [(s.id, s.label_id, s.queries, s.area) for s in got.segments] == [
            (s.id, s.label_id, s.queries, s.area) for s in expected.segments
        ]
    assert len(seen[0.5].segments) >= len(seen[0.7].segments) >= len(seen[0.9].segments)


def test_legend_splits_things_and_stuff_as_coco_panoptic(client):
    _detect = client.predict(handle_file(ASTRONAUT), PANOPTIC_REPO, 0.7, [], 100, False, 0.5, *VIEW, api_name="/detect")
    assert "tiny-detr-panoptic" in _detect[3]
    image, legend, _ = client.predict(0.7, api_name="/masks")
    assert image is not None
    expected, (w, h) = _reference(0.7)
    labels = loader.load(PANOPTIC_REPO, "cpu").labels
    things = [s for s in expected.segments if s.label_id not in COCO_PANOPTIC_STUFF]
    stuff = [s for s in expected.segments if s.label_id in COCO_PANOPTIC_STUFF]
    assert things and stuff  # the tiny model's photo has both
    shown = _legend(legend)
    assert [name for name, _ in shown["stuff"]] == [COCO_PANOPTIC_STUFF[s.label_id] for s in stuff]
    numbered, count = [], {}
    for s in things:  # things are numbered per class, in segment order
        count[s.label_id] = count.get(s.label_id, 0) + 1
        numbered.append(f"{coco()[s.label_id]} {count[s.label_id]}")
    assert [name for name, _ in shown["thing"]] == numbered
    areas = [a for _, a in shown["thing"] + shown["stuff"]]
    assert areas == pytest.approx([100 * s.area / (w * h) for s in things + stuff], abs=0.051)
    assert all(labels[s.label_id] != "N/A" for s in expected.segments)


def test_a_segment_gives_its_querys_attention_and_relevance(client, app, in_event):  # noqa: F811
    expected, _ = _reference(0.7)
    stuff = next(s for s in expected.segments if s.label_id in COCO_PANOPTIC_STUFF)
    client.predict(handle_file(ASTRONAUT), PANOPTIC_REPO, 0.7, [], 100, False, 0.5, *VIEW, api_name="/detect")
    client.predict(0.7, api_name="/masks")
    attn, caption, masks, pick, _ = client.predict(stuff.queries[0], *VIEW, api_name="/segment_map")
    pick = pick.get("value") if isinstance(pick, dict) else pick  # an update of the segment list's value
    assert attn is not None and masks is not None and pick == stuff.queries[0]
    assert f"Decoder cross-attention of query {stuff.queries[0]}" in caption
    assert COCO_PANOPTIC_STUFF[stuff.label_id] in caption
    image, caption = client.predict("class", 0.5, api_name="/relevance_map")
    assert image is not None and f"Relevance of query {stuff.queries[0]}" in caption
    for bad in (999, "abc", 1.5):
        with pytest.raises(AppError, match="not in the list of choices"):
            client.predict(bad, *VIEW, api_name="/segment_map")
    for value in (math.nan, "abc", 2.0):
        kind, text = call(app[1], "masks", [value], "masks-hostile")
        assert kind == "error" and text.startswith("Confidence threshold must be") and "\n" not in text
    kind, outputs = call(app[1], "segment_click", list(VIEW), "masks-hostile")  # no click data: a hint, no change
    assert kind == "complete" and "Click a segment" in outputs[1]

    # a click on the Masks image (display pixels) -> the segment under it -> its query's cross-attention
    from vtdemo.ui.components import Click

    tab = app[0].detect
    state = tab.detect(ASTRONAUT, PANOPTIC_REPO, 0.7, [], 100, False, 0.5, *VIEW)[tab.state]
    tab.masks.render(state, 0.7)
    thing = next(s for s in state.panoptic.segments if s.isthing)
    ys, xs = torch.nonzero(state.panoptic.segmentation == thing.id, as_tuple=True)
    x, y = float(xs[len(xs) // 2]), float(ys[len(ys) // 2])
    s = state.canvas.scale
    out = tab.masks.segment_clicked(state, *VIEW, Click(None, {"index": [x * s + 0.5 * s, y * s + 0.5 * s]}))
    query = thing.queries[0]
    assert f"query {query}" in out[tab.caption] and state.query == query
    run = state.run
    by_hand = run.output.decoder_cross_attn[-1][0, :, query].float().mean(0).view(run.feature_size)  # head mean
    torch.testing.assert_close(state.relevance, by_hand / by_hand.max())  # shown scaled to [0, 1] by its maximum
    out = tab.masks.segment_clicked(state, *VIEW, Click(None, {"index": [float("nan"), 3]}))
    assert list(out) == [tab.caption] and "Click a segment" in out[tab.caption]


def test_plain_detr_says_masks_need_the_panoptic_model(client):
    out = client.predict(handle_file(ASTRONAUT), "", 0.7, [], 100, False, 0.5, *VIEW, api_name="/detect")
    assert "of 100 queries kept" in out[1]  # the default flow is untouched
    image, legend, pick = client.predict(0.7, api_name="/masks")
    assert image is None and "\n" not in legend
    assert "need a panoptic model: pick facebook/detr-resnet-50-panoptic" in legend
    assert pick.get("choices") == [] and pick.get("value") is None  # an empty segment list
    attn, caption, *_ = client.predict(None, *VIEW, api_name="/segment_map")
    assert "need a panoptic model" in caption and "\n" not in caption
