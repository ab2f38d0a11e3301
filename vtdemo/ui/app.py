"""The whole app: five tabs (Classify, Detect with its set-matching panel, Webcam, Video, How it works) assembled into one
`gr.Blocks`, and what Gradio 6 takes in `launch()`.

`create_app(config)` returns a `VtdemoApp` (the Blocks, the shared `Services` and the tab objects) without loading
any model (each loads on first use); `VtdemoApp.launch()` starts it with `launch_options(config)`. Every event has an
`api_name`, so the app is also a `gradio_client` API; events driven by clicks are undocumented twins of a documented
endpoint that takes plain values (e.g. `/detection_map` takes a query index).

Concurrency: model calls share the "model" group and hold one of `config.concurrency` model slots (1 on a 2-core
CPU); a visitor's model download runs beside them, out of the slot (`config.downloads` at once, one per session,
`vtdemo.fetching`), so other visitors' runs on loaded models go on; re-renders from
the cache run in a "view" group of their own so they never wait behind someone else's model call; webcam streams
have their own group. The queue holds at most `config.queue_size` waiting requests; beyond that a request is
refused at once: the browser shows Gradio's "This application is currently busy. Please try again.",
`gradio_client` raises `QueueError("Queue is full! Please try again.")` (Gradio's wording; it has no setting).

Memory: each photo's run is cached in a `gr.State` of the visitor's session; `demo.unload` releases a session's runs
as soon as Gradio notices the session is gone, all runs together stay within `config.cache_mb`, and a run unused for
an hour is dropped (see `vtdemo.ui.sessions`). Gradio keeps ~0.3 MB of component state per session for the last
`config.max_sessions` sessions (`state_session_capacity`; Gradio's default of 10000 would be ~3 GB). Files the app
writes into Gradio's cache (box views, exports) are deleted by Gradio an hour after they were written.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .. import pipeline
from ..assets import example_photos, examples_dir
from . import howto
from .classify.tab import ClassifyTab
from .common import COLORBAR_CSS, Services, hold_model_slots, image_limits
from .components import BOX_FILES
from .config import AppConfig
from .detect.matching import MatchingPanel
from .detect.tab import DetectTab
from .video import VideoTab
from .webcam import WebcamTab

EXAMPLES = examples_dir()  # the checkout's assets/examples, or the installed package's copy

INTRO = """# vtdemo · see what vision transformers see
Upload a photo (or pick an example). **Classify** compares ViT and Swin and shows where each looked; **Detect** finds
objects with DETR or RT-DETR and shows what each detection attended to (with a panoptic DETR, its **Masks** view
shows each segment, things vs stuff); **Webcam** runs the detector live and **Video** on a clip; **How it works**
explains the models in one picture each. Models load on first use (the first run takes longer)."""

START = (
    "**New here?** Try the cat: two transformers name what they see and show where they looked. "
    "The **How it works** tab explains each picture and every term in one line."
)

GLOSSARY = """### Words used in this app, in one line each
- **Attention rollout**: follows the attention from the class token back through every layer (multiplying the
  layers' attention, with the skip connections counted) to show which patches fed the answer.
- **Head fusion**: each layer has several attention *heads*; mean, max or min says how they are combined into one.
- **Discard lowest**: drops that fraction of the weakest attention links before the layers are multiplied (a sharper map).
- **Gradient rollout**: rollout weighted by how much each attention link raised the chosen class (class-specific).
- **Grad-CAM**: the last layer's features weighted by the class's gradient (a classic CNN method, here on tokens).
- **AttnLRP / CP-LRP**: layer-wise relevance propagation: the class score is split backwards, layer by layer, onto the
  pixels; AttnLRP also passes it through the attention, CP-LRP treats the attention as fixed.
- **Deletion / insertion area**: delete the most relevant patches first (or insert them into a blank photo) and
  measure the class probability; a faithful map makes it fall (rise) fast: a small deletion area, a large insertion one.
- **Spearman**: how similarly two maps rank the patches, from -1 (opposite) to 1 (same order).
- **Randomisation test**: if a map hardly changes when the model's weights are randomised, it does not explain the model.
- **Precision**: *fast* runs an optimised engine at reduced precision; *exact* runs the reference float32 model. Maps
  that need gradients always run exact.
- **Query (DETR)**: one of DETR's 100 learned slots; each proposes at most one object.
- **Cross-attention / encoder attention (DETR)**: where a detection looked in the image / where one image position looked.
"""

CSS = (
    """
.vt-caption p { font-size: 0.92em; color: var(--body-text-color-subdued); margin: 0; }
.vt-status p { font-size: 0.85em; margin: 0; }
.vt-count p { font-size: 1.05em; margin: 0; }
footer { margin-top: 0.5em; }
.vt-thumbs .caption-label { display: none !important; }
.vt-start { align-items: center; }
.vt-details { display: inline; }
.vt-details summary { display: inline; cursor: pointer; text-decoration: underline dotted; }
/* a panel's result (a chart, a grid of maps) takes no room until its button has filled it: Gradio draws an empty
   image or gallery as a large box with an icon, which reads as something that failed to load. While its event runs
   the box shows (its status tracker, `.wrap`, is then not `.hide`), with the progress on it. */
.vt-result:has(.empty):has(.wrap.hide) { display: none !important; }
/* a phone: the photo, then both results (ViT above Swin, same scale), then the examples and the export */
@media (max-width: 720px) {
  #classify-photo-col { display: contents !important; }
  #classify-photo-col > * { order: 3; flex: 1 1 100% !important; min-width: 100% !important; }
  #classify-photo-col > #classify-photo { order: 0; }
  #vit-column { order: 1; }
  #swin-column { order: 2; }
}
"""
    + COLORBAR_CSS
)


def example_paths() -> list[str]:
    return [str(p) for p in example_photos()]


def _howto_tab() -> None:
    figures = howto.figures()
    for text, key in (
        (howto.VIT_TEXT, "vit"),
        (howto.SWIN_TEXT, "swin"),
        (howto.DETR_TEXT, "detr"),
        (howto.RTDETR_TEXT, "rtdetr"),
    ):
        gr.Markdown(text)
        gr.Image(value=figures[key], show_label=False, interactive=False, format="png", buttons=[], container=False)
    gr.Markdown(GLOSSARY, elem_id="glossary")


def offer_photo(classified: str | None, current: str | None) -> Any:
    """Opening the Detect tab: the Classify tab's photo, when the Detect tab has none yet."""
    return classified if classified and not current else gr.skip()


@dataclass
class VtdemoApp:
    """The Blocks and what they are made of (scripts and tests reach the tabs' handlers through it)."""

    demo: gr.Blocks
    services: Services
    classify: ClassifyTab
    detect: DetectTab
    webcam: WebcamTab
    warming: threading.Thread | None = field(default=None, init=False)  # the warm-up, when the config asks for one

    def launch(self, **overrides: Any) -> Any:
        """`demo.launch()` with the app's options; with `warm_up` (on a Space by default) the configured models are
        prepared in a background thread once the server listens (`Services.warm_up`)."""
        if self.services.config.warms_up and self.warming is None:
            self.warming = threading.Thread(target=self._warm_up, name="vtdemo-warm-up", daemon=True)
            self.warming.start()
        return self.demo.launch(**{**launch_options(self.services.config), **overrides})

    def _warm_up(self, wait_s: float = 300.0) -> None:
        """Once the server listens (it may block the main thread from then on), prepare the configured models; if it
        never starts (e.g. its port is taken), nothing."""
        deadline = time.monotonic() + wait_s
        while not getattr(self.demo, "is_running", False):
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)
        self.services.warm_up()


def log_to_console() -> None:
    """vtdemo's own log lines (INFO and up: the model budget at start-up, loads, evictions, an operator's remedy) on
    the console of `python app.py` / `vtdemo serve`, once; other libraries' loggers are left as they are (httpx
    would log every request)."""
    ours = logging.getLogger("vtdemo")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)


def create_app(config: AppConfig | None = None) -> VtdemoApp:
    """The whole app. Loads no model: each one loads on first use and stays cached (`vtdemo.loader`), or, with
    `warm_up` (on a Space by default), in the background once `launch` has the server listening."""
    log_to_console()
    config = config or AppConfig()
    services = Services(config)
    examples, limits = example_paths(), image_limits(config)
    with gr.Blocks(title="vtdemo: what vision transformers see", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False, elem_classes="vt-start"):
            gr.Markdown(START, elem_classes="vt-caption")
            start = gr.Button("Try the cat", size="sm", variant="primary", scale=0, min_width=140, elem_id="try-cat")
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # on a phone every tab stays in sight
            with gr.Tab("Classify", id="classify", elem_id="classify-tab"):
                classify = ClassifyTab(services, examples, limits)
            with gr.Tab("Detect", id="detect", elem_id="detect-tab") as detect_tab:
                detect = DetectTab(services, examples, limits)
                MatchingPanel(services, detect)
                detect.export_section()
                detect.wire()
            with gr.Tab("Webcam", id="webcam", elem_id="webcam-tab"):
                webcam = WebcamTab(services, detect, tabs, limits)
            with gr.Tab("Video", id="video", elem_id="video-tab"):
                VideoTab(services, detect, tabs)
            with gr.Tab("How it works", id="howto", elem_id="howto-tab"):
                _howto_tab()
        gr.Markdown(
            f"Running on **{services.device.type.upper()}** · precision {pipeline.precision_summary(config.precision, services.device)}"
            f" · models: {config.vit_model}, "
            f"{config.swin_model}, {config.detr_model}, {config.rtdetr_model} (any supported repo id or folder can be typed in the "
            "pickers) · example photos from scikit-image (CC0 / public domain) · every action is also an "
            "API (*Use via API* below).",
            elem_classes="vt-caption",
            elem_id="footer-runtime",
        )
        detect_tab.select(  # the Detect tab offers the photo already classified (if it has none of its own)
            offer_photo,
            inputs=[classify.image, detect.image],
            outputs=detect.image,
            api_name="offer_photo",
            api_visibility="private",
        )
        cat = next((p for p in examples if "chelsea" in p), examples[0] if examples else None)
        start.click(
            lambda: (gr.Tabs(selected="classify"), cat),
            outputs=[tabs, classify.image],
            api_name="try_cat",
            api_visibility="private",
        )
        demo.unload(services.end_session)  # the session is over: release its cached runs now (not an hour later)
    demo.temp_file_sets.append(BOX_FILES)  # the Detect view's box files expire with Gradio's own (`delete_cache`)
    hold_model_slots(demo)  # every model call holds one of `config.concurrency` slots; downloads step out of it
    # the "model" group admits the slots' holders and the downloads beside them (other events are light)
    demo.queue(default_concurrency_limit=config.concurrency + config.downloads, max_size=config.queue_size)
    return VtdemoApp(demo=demo, services=services, classify=classify, detect=detect, webcam=webcam)


def upload_limit(config: AppConfig) -> int:
    """Gradio's one upload limit, in bytes: the larger of the photos' and the video clips' (each input checks its
    own: `SafeImage`, `SafeVideo`)."""
    from gradio.utils import _parse_file_size

    return max(_parse_file_size(config.max_file_size) or 20 * 2**20, config.video_max_mb * 2**20)


def launch_options(config: AppConfig) -> dict[str, Any]:
    """Keyword arguments for `demo.launch()` (Gradio 6 takes theme and css here).

    `show_error=True`: the handlers turn every failure into one line of their own (an unexpected one is logged with
    its traceback and shown as "Unexpected error (...)"), so what reaches the page is always a sentence, never a
    traceback; and Gradio's own refusals before a handler runs (a file that was not uploaded, a value outside a
    dropdown's choices) are shown with their reason instead of a bare "Error".

    `allowed_paths`: the example photos, which "Try the cat" returns as a path: Gradio serves a returned file only
    from the working directory, the temp directory or these, so without it the button showed "Error" whenever the
    app was started from another directory (`python /path/to/app.py`, the installed `vtdemo serve`)."""
    return dict(
        allowed_paths=[str(EXAMPLES)],
        server_name=config.server_name,
        server_port=config.server_port,
        share=config.share,
        max_file_size=upload_limit(config),
        show_error=True,
        state_session_capacity=config.max_sessions,
        theme=gr.themes.Soft(primary_hue="orange", secondary_hue="sky"),
        css=CSS,
    )
