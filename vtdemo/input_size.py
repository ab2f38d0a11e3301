"""Run a loaded classifier at another input size than it was trained at (finer maps, or a coarser quick look).

`at_input_size(loaded, size)` returns a new `LoadedModel` whose model holds the same weights, rebuilt for the new
token grid, and whose preprocessing produces `size x size` inputs; the loaded model itself is not changed (it is
shared through `vtdemo.hub`'s cache, and its `config.img_size` stays the size it was trained at). Implemented for
Swin V1 and V2 (`vtdemo.models.swin.with_input_size`, `vtdemo.models.swinv2.with_input_size`, which follow timm's
`create_model(..., img_size=S)`); `sizes(loaded)` lists the sizes a model accepts. The preprocessing keeps the
checkpoint's rule at the new size: for timm files, the repo's own `pretrained_cfg` with `input_size` replaced
(what timm's `resolve_data_config` does: resize the short side to floor(S / crop_pct), crop S x S); for
transformers files, the squash resize goes to (S, S).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from . import checks, hub, preprocess
from .engine import exact_model
from .errors import InputError, UnsupportedModelError
from .explain.runs import MAX_PATCHES, ClassifierRun, run_classifier
from .hub import LoadedModel
from .preprocess import PreprocessConfig


def sizes(loaded: LoadedModel, largest: int = 1024) -> list[int]:
    """Square input sizes (pixels) up to `largest` that `at_input_size` accepts for this model."""
    module = _module(loaded)
    return module.allowed_sizes(loaded.config, largest)


def at_input_size(loaded: LoadedModel, size: int) -> LoadedModel:
    """The same model at `size x size` input pixels. Raises `UnsupportedModelError` naming the sizes it accepts."""
    if size == loaded.config.img_size:
        return loaded
    module = _module(loaded)
    model = module.with_input_size(loaded.model, int(size))
    return LoadedModel(
        id=loaded.id,
        family=loaded.family,
        format=loaded.format,
        model=model,
        config=model.cfg,
        labels=loaded.labels,
        device=loaded.device,
        preprocess=_preprocess_at(loaded, int(size)),
    )


def _preprocess_at(loaded: LoadedModel, size: int) -> PreprocessConfig:
    """timm files: the checkpoint's own `pretrained_cfg` with `input_size` set to the new size (so timm's
    floor(size / crop_pct) rule applies exactly); transformers files: `scale_preprocess`."""
    if loaded.format == "timm":
        config = hub.read_json(
            hub.fetch_file(hub.parse_model_id(loaded.id), "config.json"),  # type: ignore[arg-type]
            f"config.json of {loaded.id}",
        )
        return preprocess.config_from_timm({**config.get("pretrained_cfg", {}), "input_size": [3, size, size]})
    return scale_preprocess(loaded.preprocess, loaded.config.img_size, size)


def scale_preprocess(pp: PreprocessConfig, old: int, new: int) -> PreprocessConfig:
    """A transformers-style preprocessing for `old` px inputs, for `new` px: a squash resize goes to (new, new); a
    resize + crop keeps its ratio (rounded)."""

    def scaled(value: int) -> int:
        return int(math.floor(value * new / old + 0.5))

    crop = (new, new) if pp.crop is not None else None
    if isinstance(pp.resize, tuple):
        resize: int | tuple[int, int] = (new, new) if pp.crop is None else (scaled(pp.resize[0]), scaled(pp.resize[1]))
    else:
        resize = scaled(pp.resize) if pp.crop is not None else new
    return replace(pp, resize=resize, crop=crop)


def _module(loaded: LoadedModel):  # noqa: ANN202 - a model module (swin or swinv2)
    if loaded.family != "swin":
        raise UnsupportedModelError(
            f"{loaded.id}: running at another input size is implemented for Swin models only "
            f"(this one is {loaded.family})"
        )
    from .models import swin, swinv2

    return swinv2 if isinstance(loaded.model, swinv2.SwinTransformerV2) else swin


# ------------------------------------------------------------------------------------ an input size as a run parameter
# A ViT runs at any multiple of its patch (`vtdemo.explain.runs.run_classifier` resamples its position embeddings); a
# Swin is rebuilt for the size (`at_input_size`), and the two most recent rebuilt Swins are kept here.

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


def trained_side(loaded: LoadedModel) -> int:
    """The short side (px) of the input the checkpoint's own preprocessing gives."""
    return min(preprocess.trained_input_size(loaded.preprocess))


def offered_sizes(loaded: LoadedModel) -> list[int]:
    """The sizes the dropdown offers besides the trained one (ViT: `RATIOS` of it in multiples of the patch, at
    most `MAX_PATCHES` patches; Swin: the sizes its window geometry allows, up to `SWIN_LARGEST` times it)."""
    trained = trained_side(loaded)
    if loaded.family == "vit":
        patch = int(loaded.config.patch_size)
        found = {max(2 * patch, math.floor(trained * r / patch + 0.5) * patch) for r in RATIOS}
        return sorted(s for s in found if s != trained and (s // patch) ** 2 <= MAX_PATCHES)
    return [s for s in sizes(_exact(loaded), SWIN_LARGEST * trained) if s != trained]


def parse(loaded: LoadedModel, value: Any, keep_aspect: Any = False) -> SizeChoice:
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
        allowed = sizes(_exact(loaded), SWIN_LARGEST * trained)
        size = checks.whole(value, "the input size", 1, 10 * max(allowed))  # bounded: a huge number is not echoed whole
        if size not in allowed:
            raise InputError(f"{loaded.id} runs at {', '.join(map(str, allowed))} px only, not {size}")
    return SizeChoice(None if size == trained else size, aspect)


def _exact(loaded: LoadedModel) -> LoadedModel:
    """The fp32 PyTorch model (a Swin is rebuilt for another size from its exact module)."""
    return exact_model(loaded)


_RESIZED: OrderedDict[tuple[str, str, int], LoadedModel] = OrderedDict()
_RESIZED_MAX = 2  # Swin models rebuilt for another size, kept (each holds a copy of the weights)


_BASES: dict[int, LoadedModel] = {}  # id(resized model) -> the loaded model it was rebuilt from, while it lives


def base_of(loaded: LoadedModel) -> LoadedModel:
    """The model as loaded (trained size) behind a run's model, which may be a Swin rebuilt for another size."""
    return _BASES.get(id(loaded), loaded)


def _swin_at(loaded: LoadedModel, size: int) -> LoadedModel:
    key = (loaded.id, str(loaded.device), size)
    if key not in _RESIZED:
        resized = at_input_size(_exact(loaded), size)
        _BASES[id(resized)] = loaded
        weakref.finalize(resized, _BASES.pop, id(resized), None)
        _RESIZED[key] = resized
        while len(_RESIZED) > _RESIZED_MAX:
            _RESIZED.popitem(last=False)
    _RESIZED.move_to_end(key)
    return _RESIZED[key]


def run_at(loaded: LoadedModel, image: Image.Image, choice: SizeChoice) -> ClassifierRun:
    """One forward pass with attention at the chosen size (`run_classifier`)."""
    if choice.trained:
        return run_classifier(loaded, image)
    if loaded.family == "vit":
        return run_classifier(loaded, image, choice.size, choice.keep_aspect)
    assert choice.size is not None
    return run_classifier(_swin_at(loaded, choice.size), image)


def size_note(loaded: LoadedModel, run: ClassifierRun) -> str | None:
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
