"""Image -> model input, exactly as each checkpoint's own reference prepares it.

Three recipes (timm's `transforms_factory.transforms_imagenet_eval`, transformers' image processors, DETR's
`DetrImageProcessor`):
- timm (`pretrained_cfg` of a timm `config.json`): resize the short side to `floor(size / crop_pct)` with PIL,
  center-crop `size`, scale to [0, 1], normalise. This is `timm.data.transforms_imagenet_eval` ("center" and "squash"
  crop modes).
- transformers ViT / DeiT / Swin (`preprocessor_config.json`): resize a uint8 tensor with torchvision (antialias on),
  optional center crop, then `(x - 255 * mean) / (255 * std)`: transformers 5's default torchvision backend.
- DETR (`preprocessor_config.json`, old `size`/`max_size` or new `shortest_edge`/`longest_edge` form): short side to
  800 unless the long side would pass 1333, torchvision bilinear, ImageNet mean/std; images of a batch are padded
  bottom-right with zeros and a pixel mask marks the real pixels.
- RT-DETR (`RTDetrImageProcessor`'s `preprocessor_config.json`): squash to 640x640 (its `size`; aspect not kept),
  torchvision bilinear with antialias, rescale by 1/255 and no normalisation unless the file sets `do_normalize`:
  the transformers recipe above with mean 0 and std 1 (`config_from_rtdetr`).

`for_input_size` derives the recipe for another model input size from a checkpoint's own (a square of another
side, or the photo's aspect ratio kept), for models that accept other sizes (ViT/DeiT).

Every recipe starts from an RGB `PIL.Image` (see `vtdemo.images.load_image`, which applies EXIF orientation and turns
any mode into RGB). The original size is kept by the caller for post-processing.

Cost is bounded by what the model needs, whatever the aspect ratio. Resizing the short side first and cropping after
would materialise the whole resized image: a 1x20000 PNG (100 bytes) becomes 248 x 4,960,000 pixels (3.7 GB) before a
224x224 crop. While the resized image is at most `MAX_RESIZE_FACTOR` times the crop, the references' own order is
followed exactly; beyond that (aspect ratios past ~7:1), only the part of the source that the crop shows is resampled,
straight to the crop size (`Image.resize(..., box=...)`: the same sampling grid, within one grey level of the
reference). DETR's rule keeps the long side at most 1333 and the short side at least 1 pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from .errors import ImageError, UnsupportedModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PIL_MODES = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_TV_MODES = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "lanczos": InterpolationMode.LANCZOS,
    "box": InterpolationMode.BOX,
    "hamming": InterpolationMode.HAMMING,
}
#: Largest resized image (in pixels, as a multiple of the crop) built before cropping; see the module docstring.
MAX_RESIZE_FACTOR = 8
# PIL's resample integers, as written in `preprocessor_config.json` files.
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class PreprocessConfig:
    """How to turn an RGB image into the model's input.

    mode: "timm" (PIL resize + center crop), "hf" (torchvision tensor resize, optional crop) or "detr".
    resize: timm/hf with `resize_short`: the short side length; hf squash: (height, width).
    crop: (height, width) of the center crop, or None.
    crop_pct: timm's crop fraction (kept to derive other input sizes; not used by the recipe itself).
    """

    mode: str
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: int | tuple[int, int] = 224
    resize_short: bool = False
    crop: tuple[int, int] | None = None
    shortest_edge: int = 800
    longest_edge: int | None = 1333
    crop_pct: float | None = None


def config_from_timm(pretrained_cfg: dict[str, Any]) -> PreprocessConfig:
    """From the `pretrained_cfg` of a timm `config.json` (input_size, crop_pct, crop_mode, interpolation, mean, std)."""
    _, h, w = pretrained_cfg.get("input_size", (3, 224, 224))
    crop_pct = float(pretrained_cfg.get("crop_pct") or 0.875)
    squash = pretrained_cfg.get("crop_mode", "center") == "squash"
    scale = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    return PreprocessConfig(
        mode="timm",
        interpolation=pretrained_cfg.get("interpolation", "bicubic"),
        mean=tuple(pretrained_cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(pretrained_cfg.get("std", IMAGENET_STD)),
        resize=scale if (squash or scale[0] != scale[1]) else scale[0],
        resize_short=not squash and scale[0] == scale[1],
        crop=(h, w),
        crop_pct=crop_pct,
    )


def _size_of(size: Any, default: int) -> dict[str, int]:
    if size is None:
        return {"height": default, "width": default}
    if isinstance(size, int):
        return {"height": size, "width": size}
    return dict(size)


def config_from_hf(pp: dict[str, Any], detr: bool = False) -> PreprocessConfig:
    """From a transformers `preprocessor_config.json` dict (ViT/DeiT/Swin image processors, or DETR's)."""
    interpolation = _RESAMPLE_NAMES.get(int(pp.get("resample", 2)), "bilinear")
    mean = tuple(pp.get("image_mean", IMAGENET_MEAN if detr else (0.5, 0.5, 0.5)))
    std = tuple(pp.get("image_std", IMAGENET_STD if detr else (0.5, 0.5, 0.5)))
    if detr:
        size = pp.get("size", 800)
        if isinstance(size, dict):
            shortest, longest = size.get("shortest_edge", 800), size.get("longest_edge")
        else:  # the old form: "size": 800, "max_size": 1333
            shortest, longest = int(size), pp.get("max_size", 1333)
        return PreprocessConfig(
            mode="detr",
            interpolation=interpolation,
            mean=mean,
            std=std,
            shortest_edge=int(shortest),
            longest_edge=None if longest is None else int(longest),
        )
    size = _size_of(pp.get("size"), 224)
    crop = None
    if pp.get("do_center_crop"):
        c = _size_of(pp.get("crop_size"), 224)
        crop = (c["height"], c["width"])
    if "shortest_edge" in size:
        return PreprocessConfig(
            mode="hf",
            interpolation=interpolation,
            mean=mean,
            std=std,
            resize=int(size["shortest_edge"]),
            resize_short=True,
            crop=crop,
        )
    return PreprocessConfig(
        mode="hf",
        interpolation=interpolation,
        mean=mean,
        std=std,
        resize=(int(size["height"]), int(size["width"])),
        crop=crop,
    )


def config_from_rtdetr(pp: dict[str, Any] | None) -> PreprocessConfig:
    """From an `RTDetrImageProcessor` `preprocessor_config.json` dict (None: its defaults): squash to `size`
    (640x640), bilinear, x / 255, normalised only when `do_normalize` is true. Runs through `classifier_input`."""
    pp = pp or {}
    if pp.get("do_resize", True) is False or pp.get("do_pad"):
        raise UnsupportedModelError("an RT-DETR processor without resizing, or with padding, is not supported")
    factor = float(pp.get("rescale_factor", 1 / 255)) if pp.get("do_rescale", True) else 1.0
    if abs(factor * 255 - 1) > 1e-6:
        raise UnsupportedModelError(f"an RT-DETR processor rescaling by {factor} is not supported (only 1/255)")
    size = pp.get("size") or {"height": 640, "width": 640}
    if not isinstance(size, dict) or "height" not in size or "width" not in size:
        raise UnsupportedModelError(f"an RT-DETR processor with size {size!r} is not supported (height and width)")
    height, width = int(size["height"]), int(size["width"])
    if not (32 <= height <= 4096 and 32 <= width <= 4096) or height % 32 or width % 32:
        raise UnsupportedModelError(f"an RT-DETR processor size {width}x{height} is not supported (multiples of 32)")
    normalise = bool(pp.get("do_normalize", False))
    return PreprocessConfig(
        mode="hf",
        interpolation=_RESAMPLE_NAMES.get(int(pp.get("resample", 2)), "bilinear"),
        mean=tuple(pp.get("image_mean", IMAGENET_MEAN)) if normalise else (0.0, 0.0, 0.0),
        std=tuple(pp.get("image_std", IMAGENET_STD)) if normalise else (1.0, 1.0, 1.0),
        resize=(height, width),
        resize_short=False,
    )


def trained_input_size(cfg: PreprocessConfig) -> tuple[int, int]:
    """(height, width) of the model input the checkpoint's own recipe produces (classifiers)."""
    if cfg.crop is not None:
        return cfg.crop
    if isinstance(cfg.resize, int):
        return cfg.resize, cfg.resize
    return cfg.resize[0], cfg.resize[1]


def _multiple(n: float, m: int) -> int:
    return max(m, int(round(n / m)) * m)


def for_input_size(
    cfg: PreprocessConfig,
    image_size: tuple[int, int],
    size: int | None = None,
    keep_aspect: bool = False,
    multiple: int = 1,
    max_aspect: float = 3.0,
) -> PreprocessConfig:
    """The recipe `cfg` adapted to another model input size. Nothing asked (size None, keep_aspect False): `cfg`.

    image_size: the photo's (width, height); size: the short side of the model input in pixels (default: the
    trained one), rounded to a multiple of `multiple` (the patch size); keep_aspect: see the whole photo at its
    aspect ratio instead of a square.
    - square (keep_aspect False): the checkpoint's own recipe at side `size`. timm: short side to
      floor(size / crop_pct), center crop size x size (= timm's eval transform with input_size (3, size, size));
      transformers: the resize scaled by size / trained size, then the crop (if any) at size x size.
    - keep_aspect: no crop; the photo is resized to (h, w) with the short side `size` and the long side
      size * long / short (both rounded to multiples of `multiple`), the long side at most `max_aspect` times the
      short one (a longer panorama is squeezed to that). timm: = its eval transform with input_size (3, h, w),
      crop_pct 1 and crop_mode "squash". The map then covers the whole photo.
    """
    if size is None and not keep_aspect:
        return cfg
    if cfg.mode not in ("timm", "hf"):
        raise ValueError(f"not a classifier preprocessing mode: {cfg.mode}")
    th, tw = trained_input_size(cfg)
    side = _multiple(size if size is not None else min(th, tw), multiple)
    if keep_aspect:
        w, h = image_size
        ratio = min(max(h, w) / min(h, w), max_aspect)
        long = _multiple(side * ratio, multiple)
        out = (side, long) if h <= w else (long, side)
        return replace(cfg, resize=out, resize_short=False, crop=out if cfg.mode == "timm" else None)
    rh, rw = (cfg.resize, cfg.resize) if isinstance(cfg.resize, int) else cfg.resize
    crop = None if cfg.crop is None else (side, side)
    if cfg.mode == "timm":
        scale = math.floor(side / (cfg.crop_pct or th / rh))
        return replace(cfg, resize=scale if cfg.resize_short else (scale, scale), crop=crop)
    if cfg.resize_short:
        return replace(cfg, resize=int(round(rh * side / th)), crop=crop)
    return replace(cfg, resize=(int(round(rh * side / th)), int(round(rw * side / tw))), crop=crop)


def _normalise_uint8(x: torch.Tensor, mean: Sequence[float], std: Sequence[float], fused: bool) -> torch.Tensor:
    """x: [3, H, W] uint8 -> float32 normalised. `fused` computes (x - 255m) / (255s) as transformers does;
    otherwise x / 255 first, as torchvision's ToTensor + Normalize (timm) do. The two differ in the last bit."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    if fused:
        return (x.float() - m * 255.0) / (s * 255.0)
    return (x.float().div(255.0) - m) / s


def _to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] uint8."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]


def _short_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    """(height, width) with the short side = `short`, the long side scaled and truncated (torchvision's rule)."""
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def detr_size(h: int, w: int, shortest: int, longest: int | None) -> tuple[int, int]:
    """DETR's resize rule: short side to `shortest` unless the long side would exceed `longest`.

    As transformers' `get_size_with_aspect_ratio`.
    """
    raw = None
    if longest is not None and max(h, w) / min(h, w) * shortest > longest:
        raw = longest * min(h, w) / max(h, w)
        shortest = max(1, int(round(raw)))  # a 1x10000 image: 0.13 px would round to an empty input
    fits = longest is None or max(h, w) <= longest  # the reference would return a 1x20000 image as it is
    if fits and ((h <= w and h == shortest) or (w <= h and w == shortest)):
        return h, w
    scale = raw if raw is not None else shortest
    if w < h:
        return int(scale * h / w), shortest
    return shortest, int(scale * w / h)


def _center_crop(x: torch.Tensor, crop: tuple[int, int], rounding: bool) -> torch.Tensor:
    """x: [C, H, W] -> [C, ch, cw]; pads with zeros if the crop is larger.

    timm rounds the offset, transformers truncates.
    """
    ch, cw = crop
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        pad = [
            (cw - w) // 2 if cw > w else 0,
            (ch - h) // 2 if ch > h else 0,
            (cw - w + 1) // 2 if cw > w else 0,
            (ch - h + 1) // 2 if ch > h else 0,
        ]
        x = TF.pad(x, pad, fill=0)
        h, w = x.shape[-2:]
    top = int(round((h - ch) / 2.0)) if rounding else int((h - ch) / 2.0)
    left = int(round((w - cw) / 2.0)) if rounding else int((w - cw) / 2.0)
    return x[..., top : top + ch, left : left + cw]


def _resize_hw(h: int, w: int, cfg: PreprocessConfig) -> tuple[int, int]:
    """(height, width) after the resize step: the short side to `cfg.resize`, or exactly `cfg.resize` (squash)."""
    size = cfg.resize
    if cfg.resize_short and isinstance(size, int):
        return _short_side_size(h, w, size)
    if not cfg.resize_short and not isinstance(size, int):
        return int(size[0]), int(size[1])
    raise ValueError(f"resize={size!r} does not fit resize_short={cfg.resize_short}")


def input_region(image_size: tuple[int, int], cfg: PreprocessConfig) -> tuple[float, float, float, float]:
    """The part of the original image a classifier actually sees, as (x0, y0, x1, y1) original pixels.

    image_size: (width, height). A center crop (timm's crop_pct, DeiT's crop_size) cuts the borders off; squash
    resizing sees everything. Explanation maps cover exactly this box.
    """
    w, h = image_size
    if cfg.mode == "detr" or cfg.crop is None:
        return (0.0, 0.0, float(w), float(h))
    rh, rw = _resize_hw(h, w, cfg)
    ch, cw = cfg.crop
    rounding = cfg.mode == "timm"
    top = round((rh - ch) / 2.0) if rounding else int((rh - ch) / 2.0)
    left = round((rw - cw) / 2.0) if rounding else int((rw - cw) / 2.0)
    sx, sy = w / rw, h / rh  # resized -> original pixels
    x0, y0 = max(0.0, left * sx), max(0.0, top * sy)
    return (x0, y0, min(float(w), (left + cw) * sx), min(float(h), (top + ch) * sy))


def _too_big(size: tuple[int, int], crop: tuple[int, int] | None) -> bool:
    """Would a short-side resize to `size` (h, w) build more than MAX_RESIZE_FACTOR crops' worth of pixels (without
    a crop: more than MAX_RESIZE_FACTOR squares of the short side, i.e. an aspect ratio past MAX_RESIZE_FACTOR:1)?"""
    final = crop[0] * crop[1] if crop is not None else min(size) ** 2
    return size[0] * size[1] > MAX_RESIZE_FACTOR * final


def _crop_box_resize(
    image: Image.Image, size: tuple[int, int], crop: tuple[int, int], rounding: bool, interpolation: str
) -> torch.Tensor:
    """Resize to `size` (h, w) then center-crop `crop` (h, w), computed as one resize of the source box the crop
    shows, straight to the crop size: [3, ch, cw] uint8. Used only where the resized image would be huge."""
    w, h = image.size
    (rh, rw), (ch, cw) = size, crop
    ch_in, cw_in = min(ch, rh), min(cw, rw)  # a crop larger than the image pads, as `_center_crop` does
    top = int(round((rh - ch_in) / 2.0)) if rounding else int((rh - ch_in) / 2.0)
    left = int(round((rw - cw_in) / 2.0)) if rounding else int((rw - cw_in) / 2.0)
    sx, sy = w / rw, h / rh  # resized -> source pixels
    box = (left * sx, top * sy, (left + cw_in) * sx, (top + ch_in) * sy)
    part = image.resize((cw_in, ch_in), _PIL_MODES[interpolation], box=box)
    return _center_crop(_to_uint8_tensor(part), crop, rounding)  # pads if the crop is larger


def classifier_input(image: Image.Image, cfg: PreprocessConfig) -> torch.Tensor:
    """RGB image -> [1, 3, h, w] float32 for a ViT/DeiT/Swin classifier. Bounded cost for any aspect ratio."""
    w, h = image.size
    size = _resize_hw(h, w, cfg)
    if cfg.mode not in ("timm", "hf"):
        raise ValueError(f"not a classifier preprocessing mode: {cfg.mode}")
    if cfg.resize_short and _too_big(size, cfg.crop):
        if cfg.crop is None:  # a resize_short recipe without a crop: the input itself would be this large
            raise ImageError(
                f"a {w}x{h} image is too elongated for this model's preprocessing (it would become "
                f"{size[1]}x{size[0]} pixels); crop it to an aspect ratio of at most "
                f"{MAX_RESIZE_FACTOR}:1"
            )
        x = _crop_box_resize(image, size, cfg.crop, cfg.mode == "timm", cfg.interpolation)
        return _normalise_uint8(x, cfg.mean, cfg.std, fused=cfg.mode == "hf").unsqueeze(0)
    if cfg.mode == "timm":
        resized = image.resize((size[1], size[0]), _PIL_MODES[cfg.interpolation])
        x = _to_uint8_tensor(resized)
        if cfg.crop is not None:
            x = _center_crop(x, cfg.crop, rounding=True)
        return _normalise_uint8(x, cfg.mean, cfg.std, fused=False).unsqueeze(0)
    x = TF.resize(_to_uint8_tensor(image), list(size), interpolation=_TV_MODES[cfg.interpolation], antialias=True)
    if cfg.crop is not None:
        x = _center_crop(x, cfg.crop, rounding=False)
    return _normalise_uint8(x, cfg.mean, cfg.std, fused=True).unsqueeze(0)


def detr_inputs(images: Sequence[Image.Image], cfg: PreprocessConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB images -> (pixel_values [B, 3, Hmax, Wmax] float32, pixel_mask [B, Hmax, Wmax] bool, True = real pixel).

    Each image is resized by DETR's rule, normalised, and padded at the bottom and right with zeros.
    """
    tensors = []
    for image in images:
        x = _to_uint8_tensor(image)
        size = detr_size(x.shape[-2], x.shape[-1], cfg.shortest_edge, cfg.longest_edge)
        x = TF.resize(x, list(size), interpolation=_TV_MODES[cfg.interpolation], antialias=True)
        tensors.append(_normalise_uint8(x, cfg.mean, cfg.std, fused=True))
    H = max(t.shape[-2] for t in tensors)
    W = max(t.shape[-1] for t in tensors)
    pixel_values = torch.zeros(len(tensors), 3, H, W)
    pixel_mask = torch.zeros(len(tensors), H, W, dtype=torch.bool)
    for i, t in enumerate(tensors):
        pixel_values[i, :, : t.shape[-2], : t.shape[-1]] = t
        pixel_mask[i, : t.shape[-2], : t.shape[-1]] = True
    return pixel_values, pixel_mask
