"""The Blocks tree: four tabs (Classify, Detect, Webcam, How it works) wired to `vtdemo.ui.handlers`.

`build_app(config)` returns the app without loading any model (each loads on first use); `launch_options(config)`
holds what Gradio 6 takes in `launch()` (theme, css, upload limit, host, port, share). Every event has an
`api_name`, so the app is also a `gradio_client` API; events driven by clicks (`SelectData`) are undocumented
twins of a documented endpoint that takes plain values (e.g. `/detection_map` takes a query index).

Concurrency: model calls share the "model" group (`config.concurrency` at once, 1 on a 2-core CPU); re-renders from
the cache run in a "view" group of their own so they never wait behind someone else's model call; webcam streams
have their own group. The queue holds at most `config.queue_size` waiting requests; beyond that a request is
refused at once instead of waiting without end: the browser shows Gradio's "This application is currently busy.
Please try again.", `gradio_client` raises `QueueError("Queue is full! Please try again.")`, and the HTTP API answers
503 "Queue is full. Max size is 32 and size is 32." (Gradio's wording; it has no setting to change it).

Memory: each photo's run is cached in a `gr.State` of the visitor's session; `demo.unload` releases a session's runs
as soon as Gradio notices the session is gone (its heartbeat stops), all runs together stay within
`config.cache_mb`, and a run unused for `STATE_TTL_S` is dropped (see `vtdemo.ui.sessions`). Gradio itself keeps
~0.3 MB of component state per session, even after it ends, for the last `config.max_sessions` sessions
(`state_session_capacity`; Gradio's default of 10000 would be ~3 GB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ..labels import coco
from . import howto, views
from .components import BoxImage, Checkbox, MultiChoice, Number, SafeImage, Slider, Table
from .config import LIVE_SIZES, AppConfig
from .handlers import Handlers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"

INTRO = """# vtdemo · see what vision transformers see
Upload a photo (or pick an example). **Classify** compares ViT and Swin and shows where each looked; **Detect** finds
objects with DETR and shows what each detection attended to; **Webcam** runs DETR live; **How it works** explains
the three models in one picture each. Models load on first use (the first run takes longer)."""

CSS = """
.vt-caption p { font-size: 0.92em; color: var(--body-text-color-subdued); margin: 0; }
.vt-status p { font-size: 0.85em; margin: 0; }
.vt-count p { font-size: 1.05em; margin: 0; }
footer { margin-top: 0.5em; }
"""

STATE_TTL_S = 3600  # a photo's cached run is dropped this long after its last use, even if the tab stays open
VIEW = dict(concurrency_id="view", concurrency_limit=4, trigger_mode="always_last", show_progress="hidden")
MODEL = dict(concurrency_id="model")


def image_limits(config: AppConfig) -> dict[str, Any]:
    """What every image input accepts besides uploads (the examples) and how large a data URL may be."""
    from gradio.utils import _parse_file_size

    return {"allowed": [EXAMPLES], "max_bytes": _parse_file_size(config.max_file_size) or 20 * 2**20}


def example_paths() -> list[str]:
    if not EXAMPLES.is_dir():
        return []
    return [str(p) for p in sorted(EXAMPLES.iterdir()) if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"}]


def _classifier_column(h: Handlers, config: AppConfig, family: str, image: gr.components.Component) -> dict:
    """One model's column in the Classify tab; returns its components (for export)."""
    title = {"vit": "ViT / DeiT", "swin": "Swin"}[family]
    default_method = views.method_choices(family)[0][1]
    with gr.Column(scale=1, min_width=320):
        gr.Markdown(f"### {title}")
        model = gr.Dropdown(choices=config.choices(family), value=config.choices(family)[0],
                            allow_custom_value=True, label="Model (repo id or folder)")
        hint = " (click a class for its own map)" if family in views.CLASS_METHOD else ""
        label = gr.Label(num_top_classes=5, label=f"Top 5{hint}", elem_id=f"{family}-label")
        overlay_label = "Where it looked" + (" (click a point)" if family == "swin" else "")
        overlay = gr.Image(label=overlay_label, interactive=False, format="jpeg", height=320,
                           buttons=["download", "fullscreen"], elem_id=f"{family}-overlay")
        caption = gr.Markdown(elem_classes="vt-caption", elem_id=f"{family}-caption")
        with gr.Accordion("Explanation settings", open=True):
            method = gr.Dropdown(choices=views.method_choices(family), value=default_method, label="Method")
            klass = gr.Dropdown(choices=[], label="Class", visible=False)
            with gr.Row():
                fusion = gr.Radio(["mean", "max", "min"], value="mean", label="Head fusion")
                discard = Slider(0.0, 0.95, value=0.0, step=0.05, label="Discard lowest")
            with gr.Row():
                head = gr.Dropdown(["mean"], value="mean", label="Head", visible=False, scale=1, min_width=90)
                block = gr.Dropdown([], label="Block", visible=False, scale=2)
            opacity = Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
        with gr.Accordion("Sanity check: is the map faithful?", open=False):
            gr.Markdown("Delete the patches the map marks as most relevant first and watch the class probability; "
                        "a faithful map makes it fall faster than deleting patches at random.",
                        elem_classes="vt-caption")
            check = gr.Button("Run the deletion test", size="sm")
            check_plot = gr.Image(label="Deletion curve", interactive=False, height=220, buttons=["download"],
                                  elem_id=f"{family}-deletion")
            check_text = gr.Markdown(elem_classes="vt-caption")
        status = gr.Markdown(elem_classes="vt-status", elem_id=f"{family}-status")
    state = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=h.forget)
    controls = [klass, fusion, discard, head, block]

    def classify(image_path, model_id, method_value, opacity_value, request: gr.Request,
                 progress=gr.Progress()):
        return h.classify(family, image_path, model_id, method_value, opacity_value, progress, request)

    gr.on([image.change, model.change], classify, inputs=[image, model, method, opacity],
          outputs=[label, overlay, caption, status, state, method, *controls], api_name=f"classify_{family}",
          show_progress="full", **MODEL)
    gr.on([method.input, klass.input, fusion.input, discard.change, head.input, block.input, opacity.change],
          h.explain, inputs=[state, method, klass, fusion, discard, head, block, opacity],
          outputs=[overlay, caption, status, state, *controls], api_name=f"explain_{family}", **VIEW)
    check.click(h.sanity_check, inputs=[state], outputs=[check_plot, check_text], api_name=f"deletion_{family}",
                **MODEL)
    select_outputs = [overlay, caption, status, state, method, *controls]
    label.select(h.class_clicked, inputs=[state, opacity], outputs=select_outputs,
                 api_name=f"class_map_{family}", api_visibility="undocumented", **VIEW)
    if family == "swin":
        overlay.select(h.point_clicked, inputs=[state, opacity], outputs=select_outputs,
                       api_name="point_map_swin", api_visibility="undocumented", **VIEW)
    return {"state": state, "label": label, "overlay": overlay}


def _classify_tab(h: Handlers, config: AppConfig) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            image = SafeImage(sources=["upload", "clipboard"], label="Photo", height=300, **image_limits(config),
                              elem_id="classify-photo")
            if example_paths():
                gr.Examples(examples=[[p] for p in example_paths()], inputs=[image], cache_examples=False,
                            label="Examples (CC0 / public domain)", examples_per_page=8)
            gr.Markdown("Maps are drawn over the part of the photo the model saw (its center crop); the dimmed "
                        "border was cut off.", elem_classes="vt-caption")
            with gr.Accordion("Export", open=False):
                export = gr.Button("Export results", size="sm")
                files = gr.File(label="Downloads: results JSON, overlays (PNG), raw maps (.npy)",
                                file_count="multiple", interactive=False)
        vit = _classifier_column(h, config, "vit", image)
        swin = _classifier_column(h, config, "swin", image)
    export.click(h.export_classify, inputs=[vit["state"], swin["state"]], outputs=files, api_name="export_classify",
                 **MODEL)


def _detect_tab(h: Handlers, config: AppConfig, tabs: gr.Tabs) -> dict[str, Any]:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            image = SafeImage(sources=["upload", "clipboard"], label="Photo", height=260, **image_limits(config),
                              elem_id="detect-photo")
            if example_paths():
                gr.Examples(examples=[[p] for p in example_paths()], inputs=[image], cache_examples=False,
                            label="Examples", examples_per_page=8)
            model = gr.Dropdown(choices=config.choices("detr"), value=config.choices("detr")[0],
                                allow_custom_value=True, label="Model (repo id or folder)")
            threshold = Slider(0.0, 1.0, value=0.7, step=0.01, label="Confidence threshold",
                                  elem_id="detect-threshold")
            classes = MultiChoice(choices=views.detection_classes(coco()), multiselect=True, value=[],
                                  label="Only these classes (empty: all)")
            max_det = Slider(1, 100, value=100, step=1, label="Max detections")
            with gr.Group():
                nms = Checkbox(value=False, label="Class-aware NMS (DETR needs none: try it and compare)")
                nms_iou = Slider(0.1, 0.95, value=0.5, step=0.05, label="NMS IoU")
            status = gr.Markdown(elem_classes="vt-status", elem_id="detect-status")
        with gr.Column(scale=2, min_width=420):
            count = gr.Markdown("Upload a photo to detect objects.", elem_classes="vt-count", elem_id="detect-count")
            boxes = BoxImage(label="Detections (click a label under the photo for its attention)",
                             elem_id="detect-boxes")
            table = gr.Dataframe(headers=views.DETECTION_HEADERS, interactive=False, label="Detections (click a row)",
                                 max_height=220, wrap=True, elem_id="detect-table")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=420):
            attn = gr.Image(label="Attention (click the photo: encoder self-attention at that point)",
                            interactive=False, format="jpeg", height=420, elem_id="detect-attention")
            caption = gr.Markdown(elem_classes="vt-caption", elem_id="detect-caption")
        with gr.Column(scale=1, min_width=260):
            pick = gr.Dropdown(choices=[], label="Detection", info="Decoder cross-attention of this query")
            with gr.Row():
                head = gr.Dropdown(["mean"], value="mean", label="Head")
                layer = gr.Dropdown(["last"] + [str(i) for i in range(1, 7)], value="last", label="Layer")
            direction = gr.Radio(["where it looks", "who looks at it"], value="where it looks",
                                 label="Encoder attention at a point")
            with gr.Row():
                px = Number(value=None, label="x", precision=0, minimum=0)
                py = Number(value=None, label="y", precision=0, minimum=0)
            point_btn = gr.Button("Encoder attention at (x, y)", size="sm")
            opacity = Slider(0.0, 1.0, value=0.55, step=0.05, label="Opacity")
    with gr.Accordion("Set matching: how DETR is trained", open=False):
        gr.Markdown("In training, DETR's 100 predictions are matched one-to-one to the real objects with the Hungarian "
                    "algorithm (cost = 1 × class + 5 × L1 box distance + 2 × GIoU); unmatched queries learn "
                    "*no object*. Enter ground-truth boxes (class name or COCO id, then x0, y0, x1, y1 in pixels), "
                    "or upload a JSON list `[[label, x0, y0, x1, y1], ...]` or COCO annotations.",
                    elem_classes="vt-caption")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                gt = Table(headers=views.GT_HEADERS, datatype=["str", "number", "number", "number", "number"],
                                  row_count=3, column_count=5, interactive=True,
                                  label="Ground-truth boxes")
                with gr.Row():
                    fill = gr.Button("Use the detections", size="sm")
                    match_btn = gr.Button("Match", variant="primary", size="sm")
                gt_file = gr.File(label="…or upload JSON", file_types=[".json"], type="filepath")
            with gr.Column(scale=1):
                match_img = gr.Image(label="Ground truth (dashed) and the query matched to each", interactive=False,
                                     format="jpeg", height=320)
                match_md = gr.Markdown()
                match_table = gr.Dataframe(headers=views.MATCH_HEADERS, interactive=False, label="Matching")
    with gr.Accordion("Export", open=False):
        export = gr.Button("Export results", size="sm")
        files = gr.File(label="Downloads: annotated PNG, results JSON (CLI schema), attention map (PNG, .npy)",
                        file_count="multiple", interactive=False)
    state = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=h.forget)

    def detect(image_path, model_id, thr, cls, mx, use_nms, iou, head_v, layer_v, direction_v, opacity_v,
               request: gr.Request, progress=gr.Progress()):
        return h.detect(image_path, model_id, thr, cls, mx, use_nms, iou, head_v, layer_v, direction_v, opacity_v,
                        progress, request)

    view = [head, layer, direction, opacity]
    gr.on([image.change, model.change], detect,
          inputs=[image, model, threshold, classes, max_det, nms, nms_iou, *view],
          outputs=[boxes, count, table, status, state, classes, pick, attn, caption, head],
          api_name="detect", show_progress="full", **MODEL)
    gr.on([threshold.change, classes.change, max_det.change, nms.input, nms_iou.change], h.rerender,
          inputs=[state, threshold, classes, max_det, nms, nms_iou], outputs=[boxes, count, table, state, pick],
          api_name="rerender", **VIEW)
    boxes.select(h.detection_clicked, inputs=[state, *view], outputs=[attn, caption, pick, state],
                 api_name="detection_click", api_visibility="undocumented", **VIEW)
    table.select(h.detection_clicked, inputs=[state, *view], outputs=[attn, caption, pick, state],
                 api_name="detection_row", api_visibility="undocumented", **VIEW)
    pick.input(h.detection_picked, inputs=[state, pick, *view], outputs=[attn, caption, state],
               api_name="detection_map", **VIEW)
    attn.select(h.point_clicked_detr, inputs=[state, *view], outputs=[attn, caption, px, py, state],
                api_name="encoder_click", api_visibility="undocumented", **VIEW)
    point_btn.click(h.encoder_at, inputs=[state, px, py, *view], outputs=[attn, caption, state],
                    api_name="encoder_map", **VIEW)
    gr.on([head.input, layer.input, direction.input, opacity.change], h.attention_view, inputs=[state, *view],
          outputs=[attn, caption, state], api_name="attention_view", **VIEW)
    fill.click(h.fill_ground_truth, inputs=[state], outputs=[gt], api_name="fill_ground_truth", **VIEW)
    gt_file.upload(h.load_ground_truth, inputs=[gt_file, state], outputs=[gt], api_name="load_ground_truth", **VIEW)
    match_btn.click(h.match, inputs=[state, gt], outputs=[match_img, match_table, match_md], api_name="match", **VIEW)
    export.click(h.export_detect, inputs=[state, opacity], outputs=files, api_name="export_detect", **MODEL)
    return {"image": image, "model": model}


def _webcam_tab(h: Handlers, config: AppConfig, detect: dict[str, Any], tabs: gr.Tabs) -> None:
    gr.Markdown(f"Live DETR on your camera. To keep up on a CPU, frames go to DETR at **{config.live_size} px** on "
                "their short side (photos use 800); change it below. A frame that arrives while another is being "
                "processed is dropped, so the picture never falls behind. **Freeze** sends the current frame to the "
                "Detect tab, at full resolution, for explanations. The model is the one picked in the Detect tab.",
                elem_classes="vt-caption")
    with gr.Row(equal_height=False):
        cam = SafeImage(sources=["webcam"], streaming=True, label="Camera", elem_id="webcam-in",
                        **image_limits(config), webcam_options=gr.WebcamOptions(mirror=False, constraints={
                           "video": {"width": {"ideal": 640}, "height": {"ideal": 480}}}))
        out = gr.Image(label="Live detections", streaming=True, interactive=False, format="jpeg", elem_id="webcam-out")
    with gr.Row(equal_height=False):
        threshold = Slider(0.0, 1.0, value=0.7, step=0.01, label="Confidence threshold", elem_id="webcam-threshold")
        size = gr.Dropdown(choices=list(LIVE_SIZES), value=config.live_size, label="DETR input short side (px)")
        freeze = gr.Button("Freeze: explain this frame", variant="secondary")
    stats = gr.Markdown("Click the camera, allow access, then press **Record**.", elem_classes="vt-count",
                        elem_id="webcam-stats")
    session = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=h.forget)
    cam.stream(h.live, inputs=[cam, threshold, size, detect["model"], session], outputs=[out, stats, session],
               stream_every=0.15, time_limit=config.webcam_limit, concurrency_limit=config.webcam_sessions,
               concurrency_id="webcam", api_name="webcam", show_progress="hidden")
    freeze.click(h.freeze, inputs=[session], outputs=[detect["image"], tabs], api_name="freeze", **VIEW)


def _howto_tab() -> None:
    figures = howto.figures()
    for text, key in ((howto.VIT_TEXT, "vit"), (howto.SWIN_TEXT, "swin"), (howto.DETR_TEXT, "detr")):
        gr.Markdown(text)
        gr.Image(value=figures[key], show_label=False, interactive=False, format="png", buttons=[],
                 container=False)


def build_app(config: AppConfig | None = None) -> gr.Blocks:
    """The whole app. Loads no model: each one loads on first use and stays cached (`vtdemo.hub.load`)."""
    config = config or AppConfig()
    h = Handlers(config)
    with gr.Blocks(title="vtdemo: what vision transformers see", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs() as tabs:
            with gr.Tab("Classify", id="classify"):
                _classify_tab(h, config)
            with gr.Tab("Detect", id="detect"):
                detect = _detect_tab(h, config, tabs)
            with gr.Tab("Webcam", id="webcam"):
                _webcam_tab(h, config, detect, tabs)
            with gr.Tab("How it works", id="howto"):
                _howto_tab()
        gr.Markdown(f"Running on **{h.device.type.upper()}** · models: {config.vit_model}, {config.swin_model}, "
                    f"{config.detr_model} (any supported repo id or folder can be typed in the pickers) · "
                    "example photos from scikit-image (CC0 / public domain) · every action is also an API "
                    "(*Use via API* below).", elem_classes="vt-caption")
        demo.unload(h.end_session)  # the session is over: release its cached runs now (not an hour later)
    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)
    demo.vtdemo_handlers = h  # for tests and benchmarks
    return demo


def launch_options(config: AppConfig) -> dict[str, Any]:
    """Keyword arguments for `demo.launch()` (Gradio 6 takes theme and css here).

    `show_error=True`: the handlers turn every failure into one line of their own (an unexpected one is logged with
    its traceback and shown as "Unexpected error (...)"), so what reaches the page is always a sentence, never a
    traceback; and Gradio's own refusals before a handler runs (a file that was not uploaded, a value outside a
    dropdown's choices) are shown with their reason instead of a bare "Error"."""
    return dict(server_name=config.server_name,
                server_port=config.server_port,
                share=config.share, max_file_size=config.max_file_size, show_error=True,
                state_session_capacity=config.max_sessions,
                theme=gr.themes.Soft(primary_hue="orange", secondary_hue="sky"), css=CSS)
