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
from dataclasses import replace

from . import hub, preprocess
from .errors import UnsupportedModelError
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
