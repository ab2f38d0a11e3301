"""The Classify columns' "Input size" choice: run the model at another input size than it was trained at.

A ViT / DeiT runs at any multiple of its patch size: its absolute position embeddings are resampled to the new
patch grid (bicubic, as timm's `resample_abs_pos_embed`), and optionally at the photo's aspect ratio (a
non-square grid; `vtdemo.preprocess.for_input_size`). A Swin runs only at the sizes where every stage keeps the
window its relative-position bias was trained for (`vtdemo.input_size.sizes`; Swin-T: 224, 448, ...): there is
nothing to interpolate, there are more windows. Either way the map follows the real patch grid of the run, and the
caption says plainly at which size the model runs and at which it was trained (`size_note`).

The choice lives in a `gr.State` of the column (no API parameter of `/classify_vit` or `/classify_swin` changes):
a new photo or model runs at the chosen size when the model allows it (else at its trained size, saying so), and
`/resize_vit` / `/resize_swin` re-run the cached photo at a new size.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from .. import checks, hub, input_size, pipeline, preprocess
from ..errors import InputError, VtdemoError
from ..explain.api import methods_for_run
from ..explain.runs import MAX_PATCHES, ClassifierRun, run_classifier, with_block_outputs
from .classify_views import ClassifyState
from .common import MODEL, VIEW, fresh, message, session_of, status
from .components import Checkbox

if TYPE_CHECKING:
    from .classify_column import ClassifierColumn

TRAINED = "trained"
#: ViT sizes offered, as multiples of the trained size (224 px: 112, 176, 288, 336, 384, 448 at patch 16).
RATIOS = (0.5, 0.75, 9 / 7, 1.5, 12 / 7, 2.0)
#: Swin sizes offered: up to this multiple of the trained size (the attention of every block is kept).
SWIN_LARGEST = 2


@dataclass(frozen=True)
class SizeChoice:
    """An input size: `size` the short side in pixels (None = the trained size); `keep_aspect` (ViT only): the whole
    photo at its aspect ratio instead of the square center crop."""

    size: int | None = None
    keep_aspect: bool = False

    @property
    def trained(self) -> bool:
        return self.size is None and not self.keep_aspect


def trained_side(loaded: hub.LoadedModel) -> int:
    """The short side (px) of the input the checkpoint's own preprocessing gives."""
    return min(preprocess.trained_input_size(loaded.preprocess))


def offered_sizes(loaded: hub.LoadedModel) -> list[int]:
    """The sizes the dropdown offers besides the trained one (ViT: `RATIOS` of it in multiples of the patch, at
    most `MAX_PATCHES` patches; Swin: the sizes its window geometry allows, up to `SWIN_LARGEST` times it)."""
    trained = trained_side(loaded)
    if loaded.family == "vit":
        patch = int(loaded.config.patch_size)
        found = {max(2 * patch, math.floor(trained * r / patch + 0.5) * patch) for r in RATIOS}
        return sorted(s for s in found if s != trained and (s // patch) ** 2 <= MAX_PATCHES)
    return [s for s in input_size.sizes(_exact(loaded), SWIN_LARGEST * trained) if s != trained]


def choices(loaded: hub.LoadedModel | None) -> list[tuple[str, str]]:
    """(label, value) pairs for the dropdown."""
    if loaded is None:
        return [("trained size", TRAINED)]
    return [(f"trained size ({trained_side(loaded)} px)", TRAINED)] + [
        (f"{s} px", str(s)) for s in offered_sizes(loaded)
    ]


def parse(loaded: hub.LoadedModel, value: Any, keep_aspect: Any = False) -> SizeChoice:
    """A dropdown value ("trained" or a size in px) for this model -> SizeChoice; `InputError` in one line for
    anything it cannot run at (ViT: a multiple of the patch, 2 patches at least, at most `MAX_PATCHES`; Swin: one
    of `input_size.sizes`)."""
    aspect = checks.flag(keep_aspect, "keep the photo's aspect ratio")
    if aspect and loaded.family != "vit":
        raise InputError(f"{loaded.id}: keeping the photo's aspect ratio is supported for ViT/DeiT models only")
    if value in (None, "", TRAINED):
        return SizeChoice(None, aspect)
    trained = trained_side(loaded)
    if loaded.family == "vit":
        patch = int(loaded.config.patch_size)
        largest = math.isqrt(MAX_PATCHES) * patch
        size = checks.whole(value, "the input size", 2 * patch, largest)
        if size % patch:
            raise InputError(f"the input size must be a multiple of {loaded.id}'s patch size ({patch} px), not {size}")
    else:
        allowed = input_size.sizes(_exact(loaded), SWIN_LARGEST * trained)
        size = checks.whole(value, "the input size", 1)
        if size not in allowed:
            raise InputError(f"{loaded.id} runs at {', '.join(map(str, allowed))} px only, not {size}")
    return SizeChoice(None if size == trained else size, aspect)


def _exact(loaded: hub.LoadedModel) -> hub.LoadedModel:
    """The fp32 PyTorch model (a Swin is rebuilt for another size from its exact module)."""
    from ..engine import exact_model

    return exact_model(loaded)


_RESIZED: OrderedDict[tuple[str, str, int], hub.LoadedModel] = OrderedDict()
_RESIZED_MAX = 2  # Swin models rebuilt for another size, kept (each holds a copy of the weights)


_BASES: dict[int, hub.LoadedModel] = {}  # id(resized model) -> the loaded model it was rebuilt from, while it lives


def base_of(loaded: hub.LoadedModel) -> hub.LoadedModel:
    """The model as loaded (trained size) behind a run's model, which may be a Swin rebuilt for another size."""
    return _BASES.get(id(loaded), loaded)


def _swin_at(loaded: hub.LoadedModel, size: int) -> hub.LoadedModel:
    key = (loaded.id, str(loaded.device), size)
    if key not in _RESIZED:
        resized = input_size.at_input_size(_exact(loaded), size)
        _BASES[id(resized)] = loaded
        weakref.finalize(resized, _BASES.pop, id(resized), None)
        _RESIZED[key] = resized
        while len(_RESIZED) > _RESIZED_MAX:
            _RESIZED.popitem(last=False)
    _RESIZED.move_to_end(key)
    return _RESIZED[key]


def run_at(loaded: hub.LoadedModel, image: Image.Image, choice: SizeChoice) -> ClassifierRun:
    """One forward pass with attention at the chosen size (`run_classifier`)."""
    if choice.trained:
        return run_classifier(loaded, image)
    if loaded.family == "vit":
        return run_classifier(loaded, image, choice.size, choice.keep_aspect)
    assert choice.size is not None
    return run_classifier(_swin_at(loaded, choice.size), image)


def size_note(loaded: hub.LoadedModel, run: ClassifierRun) -> str | None:
    """The caption's line when the run is not at the trained size, e.g. "trained at 224 px, running at 448 px
    (28x28 patches): position embeddings interpolated, predictions may differ"; None at the trained size."""
    th, tw = preprocess.trained_input_size(loaded.preprocess)
    h, w = run.input_size
    if (h, w) == (th, tw):
        return None

    def px(a: int, b: int) -> str:
        return f"{a} px" if a == b else f"{b}x{a} px"

    if run.family == "vit":
        gh, gw = run.patch_grid
        aspect = ", the photo's aspect ratio" if h != w else ""
        return (
            f"trained at {px(th, tw)}, running at {px(h, w)} ({gh}x{gw} patches{aspect}): position embeddings "
            "interpolated, predictions may differ"
        )
    cfg = run.loaded.config
    grid = f"{h // cfg.patch_size}x{w // cfg.patch_size} patches of {cfg.patch_size} px"
    return (
        f"trained at {px(th, tw)}, running at {px(h, w)} ({grid}, {cfg.window_size}x{cfg.window_size} windows as "
        "trained): Swin has no position embeddings to interpolate, only more windows; predictions may differ"
    )


# ------------------------------------------------------------------------------------------------- the control


class SizeControls:
    """The "Input size" dropdown (and, for ViT, "keep the photo's aspect ratio") of one column, and its handlers."""

    def __init__(self, family: str) -> None:
        self.family = family
        with gr.Row():
            self.size = gr.Dropdown(
                choices=choices(None),
                value=TRAINED,
                allow_custom_value=True,  # checked by `parse` against the loaded model, not the build-time list
                label="Input size",
                elem_id=f"{family}-input-size",
                scale=2,
            )
            self.aspect = (
                Checkbox(value=False, label="keep the photo's aspect ratio", elem_id=f"{family}-keep-aspect", scale=1)
                if family == "vit"
                else None
            )
        self.state = gr.State(SizeChoice())

    def controls(self) -> list[Any]:
        return [self.size] + ([self.aspect] if self.aspect is not None else [])

    def wire(self, column: ClassifierColumn, classified: Any) -> None:
        """Hook into the column: refresh the choices after each classify; re-run on a new choice."""
        self.column = column
        classified.then(
            self.refresh,
            inputs=[column.state, self.state],
            outputs=[*self.controls(), self.state],
            api_name=f"sizes_{self.family}",
            api_visibility="private",
            **VIEW,
        )
        ins = [column.state, *self.controls(), column.opacity]
        self.resized = gr.on(
            [c.input for c in self.controls()],
            self.resize if self.aspect is not None else self.resize_square,
            inputs=ins,
            outputs=[
                column.label,
                column.overlay,
                column.caption,
                column.status,
                column.state,
                column.method,
                *column.controls,
                self.state,
            ],
            api_name=f"resize_{self.family}",
            show_progress="full",
            show_progress_on=[column.label, column.overlay],
            **MODEL,
        )

    def fit(self, loaded: hub.LoadedModel, choice: SizeChoice | None) -> tuple[SizeChoice, str | None]:
        """The choice if this model runs at it, else the trained size and why (a new model may not)."""
        choice = choice if isinstance(choice, SizeChoice) else SizeChoice()
        try:
            return parse(loaded, TRAINED if choice.size is None else str(choice.size), choice.keep_aspect), None
        except VtdemoError as exc:
            return SizeChoice(), f"{exc}; running at the trained size"

    @fresh
    def refresh(self, state: ClassifyState | None, choice: SizeChoice | None) -> dict:
        """After a classify: the sizes of the model now loaded, showing the size it ran at."""
        run = getattr(state, "run", None)
        if run is None:
            return {self.state: gr.skip()}  # no change ({} reads as a missing output)
        loaded = base_of(run.loaded)
        choice, _ = self.fit(loaded, choice)
        value = TRAINED if choice.size is None else str(choice.size)
        out: dict = {self.size: gr.Dropdown(choices=choices(loaded), value=value), self.state: choice}
        if self.aspect is not None:
            out[self.aspect] = choice.keep_aspect
        return out

    def resize_square(self, state: ClassifyState | None, size: Any, opacity: Any, request: gr.Request) -> dict:
        """`resize` for a column without the aspect switch (Swin)."""
        return self.resize(state, size, False, opacity, request)

    def resize(  # not `fresh`: it replaces its input run itself (`hold(replacing=...)`)
        self, state: ClassifyState | None, size: Any, keep_aspect: Any, opacity: Any, request: gr.Request
    ) -> dict:
        """Re-run the cached photo at another input size: top 5, map (on the new patch grid), caption with the note."""
        col = self.column
        state = col.s.cached(state)
        if state is None or state.run is None:
            return {col.status: status("Upload a photo first.", "info")}
        try:
            loaded = base_of(state.run.loaded)
            choice = parse(loaded, size, keep_aspect)
            run = run_at(loaded, state.run.image, choice)
            names = [m.name for m in methods_for_run(run)]  # the ViT LRP walks need the trained size
            new = ClassifyState(
                run=run,
                name=state.name,
                method=state.method if state.method in names else names[0],
                options=state.options,
                opacity=float(checks.number(opacity, "Opacity", 0.0, 1.0)),
                predictions=pipeline.predictions(run.loaded, run.logits, 5),
                size_note=size_note(loaded, run),
            )
            if new.options.mask_outliers and run.family == "vit":
                with_block_outputs(run)
            shown = col._render(new)
        except Exception as exc:  # noqa: BLE001 - one line for the user
            return {col.status: status(message(exc), "warn")}
        if not col.s.runs.hold(session_of(request), self.family, new, replacing=state):
            return {col.state: gr.skip()}  # a newer photo arrived meanwhile: it stays (see `fresh`)
        h, w = run.input_size
        return {
            col.label: {p.label: p.score for p in new.predictions},
            **shown,
            col.status: status(f"{loaded.id} · {loaded.family} · {w}x{h}px input"),
            col.state: new,
            col.method: gr.Dropdown(choices=[(m.label, m.name) for m in methods_for_run(run)], value=new.method),
            self.state: choice,
            **col._controls(new, new.method),
        }
