"""The app's HTTP API is a contract: every `api_name`, its positional parameters (kinds, count, order) and its
outputs stay as they were when the app was cut into one module per tab (the list below was read from the served
`/config` before that change). A new endpoint or parameter is a deliberate change of this list.
"""

from __future__ import annotations

import pytest

pytest.importorskip("timm")
pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")

from tests.support.apps import launched_app  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched on the tiny checkpoints: its start-up and a model run per test

#: api_name -> (input component kinds without gr.State, output kinds without gr.State, visibility)
EXPECTED = {
    "load_example": (["dataset"], ["image"], "undocumented"),
    "classify_vit": (
        ["image", "dropdown", "dropdown", "slider"],
        ["label", "image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "public",
    ),
    "explain_vit": (
        ["dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown", "slider"],
        ["image", "markdown", "markdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "public",
    ),
    "deletion_vit": ([], ["image", "markdown"], "public"),
    "class_map_vit": (
        ["slider"],
        ["image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "undocumented",
    ),
    "classify_swin": (
        ["image", "dropdown", "dropdown", "slider"],
        ["label", "image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "public",
    ),
    "explain_swin": (
        ["dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown", "slider"],
        ["image", "markdown", "markdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "public",
    ),
    "deletion_swin": ([], ["image", "markdown"], "public"),
    "class_map_swin": (
        ["slider"],
        ["image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "undocumented",
    ),
    "point_map_swin": (
        ["slider"],
        ["image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "undocumented",
    ),
    "export_classify": ([], ["file"], "public"),
    "load_example_1": (["dataset"], ["image"], "undocumented"),
    "detect": (
        [
            "image",
            "dropdown",
            "slider",
            "dropdown",
            "slider",
            "checkbox",
            "slider",
            "dropdown",
            "dropdown",
            "radio",
            "slider",
        ],
        [
            "annotatedimage",
            "markdown",
            "dataframe",
            "markdown",
            "dropdown",
            "dropdown",
            "image",
            "markdown",
            "dropdown",
        ],
        "public",
    ),
    "rerender": (
        ["slider", "dropdown", "slider", "checkbox", "slider"],
        ["annotatedimage", "markdown", "dataframe", "dropdown"],
        "public",
    ),
    "detection_click": (["dropdown", "dropdown", "radio", "slider"], ["image", "markdown", "dropdown"], "undocumented"),
    "detection_row": (["dropdown", "dropdown", "radio", "slider"], ["image", "markdown", "dropdown"], "undocumented"),
    "detection_map": (["dropdown", "dropdown", "dropdown", "radio", "slider"], ["image", "markdown"], "public"),
    "encoder_click": (
        ["dropdown", "dropdown", "radio", "slider"],
        ["image", "markdown", "number", "number"],
        "undocumented",
    ),
    "encoder_map": (["number", "number", "dropdown", "dropdown", "radio", "slider"], ["image", "markdown"], "public"),
    "attention_view": (["dropdown", "dropdown", "radio", "slider"], ["image", "markdown"], "public"),
    "fill_ground_truth": ([], ["dataframe"], "public"),
    "load_ground_truth": (["file"], ["dataframe"], "public"),
    "match": (["dataframe"], ["image", "dataframe", "markdown"], "public"),
    "export_detect": (["slider"], ["file"], "public"),
    # (+ the checkbox of the live map: where the best detection looks, on every frame)
    "webcam": (["image", "slider", "dropdown", "dropdown", "checkbox"], ["image", "markdown"], "public"),
    "freeze": ([], ["image", "tabs"], "public"),
    "end_session": ([], [], "private"),
    # added for the first visit: a start button, the Detect tab offering the classified photo, a clicked
    # detection's map scrolled into view (browser-side only)
    "try_cat": ([], ["tabs", "image"], "private"),
    "offer_photo": (["image", "image"], ["image"], "private"),
    "detection_click_scroll": ([], [], "private"),
    "detection_row_scroll": ([], [], "private"),
    "crop_note": (["checkbox"], ["markdown"], "private"),
    "heading_vit": ([], ["image"], "private"),
    "heading_swin": ([], ["image"], "private"),
    # added when the Detect tab's layer picker began to be built from the run (a private follow-up of /detect)
    "detect_layers": ([], ["dropdown"], "private"),
    # added with the relevance of a clicked detection (Chefer, Gur & Wolf, ICCV 2021)
    "relevance_map": (["radio", "slider"], ["image", "markdown"], "public"),
    # added with the Classify columns' input size choice (the size is a gr.State: /classify_* keep their parameters)
    "resize_vit": (
        ["dropdown", "checkbox", "slider"],
        ["label", "image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "public",
    ),
    "resize_swin": (
        ["dropdown", "slider"],
        ["label", "image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "public",
    ),
    "sizes_vit": ([], ["dropdown", "checkbox"], "private"),
    "sizes_swin": ([], ["dropdown"], "private"),
    # added with the ViT column's high-norm artefact inspector (Darcet et al., ICLR 2024)
    "artefacts_vit": (["dropdown"], ["image", "markdown", "dropdown"], "public"),
    "artefacts_refresh_vit": ([], ["dropdown", "image", "markdown", "checkbox"], "private"),
    "artefacts_refresh_vit_1": ([], ["dropdown", "image", "markdown", "checkbox"], "private"),
    "mask_outliers_vit": (
        ["checkbox", "slider"],
        ["image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "public",
    ),
    # added with the Classify panels: every method side by side (a click on a thumbnail shows it), the insertion
    # and randomisation sanity checks, and what each Swin stage sees
    "compare_vit": ([], ["gallery", "image", "markdown"], "public"),
    "compare_pick_vit": (
        ["slider"],
        ["image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "undocumented",
    ),
    "insertion_vit": ([], ["image"], "public"),
    "randomisation_vit": ([], ["image", "markdown"], "public"),
    "compare_swin": ([], ["gallery", "image", "markdown"], "public"),
    "compare_pick_swin": (
        ["slider"],
        ["image", "markdown", "markdown", "dropdown", "dropdown", "radio", "slider", "dropdown", "dropdown"],
        "undocumented",
    ),
    "insertion_swin": ([], ["image"], "public"),
    "randomisation_swin": ([], ["image", "markdown"], "public"),
    "stages_swin": ([], ["image", "markdown"], "public"),
    # the ViT column's self-supervised views (DINO heads and masks, DINOv2 feature colours, registers)
    "dino_heads_vit": ([], ["image", "markdown"], "public"),
    "dino_features_vit": (["image"], ["image", "markdown"], "public"),
    "dino_registers_vit": ([], ["image", "markdown"], "public"),
    # the panels' views are cleared when a new photo (or model) is classified
    "clear_panels_vit": (
        [],
        ["image", "image", "markdown", "image", "markdown", "gallery", "image", "markdown", "image", "markdown"],
        "private",
    ),
    "clear_panels_swin": (
        [],
        ["image", "image", "markdown", "image", "markdown", "gallery", "image", "markdown", "image", "markdown"],
        "private",
    ),
    # added with the Masks view of a panoptic DETR (its segments, and a segment's query's attention)
    "masks": (["slider"], ["image", "html", "dropdown"], "public"),
    "masks_detect": (["slider"], ["image", "html", "dropdown"], "private"),
    "segment_map": (
        ["dropdown", "dropdown", "dropdown", "radio", "slider"],
        ["image", "markdown", "image", "dropdown", "dropdown"],
        "public",
    ),
    # added with the Video tab (a clip in, DETR on its frames; a frame handed to the Detect tab)
    "detect_video": (["video", "slider", "dropdown"], ["video", "markdown", "file", "slider", "button"], "public"),
    "video_frame": (["slider"], ["image", "tabs"], "public"),
    "redraw_video": (["slider"], ["video", "markdown", "file"], "public"),
    "segment_click": (
        ["dropdown", "dropdown", "radio", "slider"],
        ["image", "markdown", "image", "dropdown", "dropdown"],
        "undocumented",
    ),
}


def served_api(url: str) -> dict:
    config = httpx.get(f"{url}config", timeout=30).json()
    kinds = {c["id"]: c["type"] for c in config["components"]}
    out = {}
    for dep in config["dependencies"]:
        if dep.get("api_name"):
            ins = [kinds[i] for i in dep["inputs"] if kinds[i] != "state"]
            outs = [kinds[i] for i in dep["outputs"] if kinds[i] != "state"]
            out[dep["api_name"]] = (ins, outs, dep.get("api_visibility"))
    return out


def test_every_endpoint_keeps_its_parameters_and_outputs(tiny_hub):
    with launched_app(tiny_hub) as (_, url):
        served = served_api(url)
    assert set(served) == set(EXPECTED), (sorted(set(served) - set(EXPECTED)), sorted(set(EXPECTED) - set(served)))
    for name, want in EXPECTED.items():
        assert served[name] == want, name
