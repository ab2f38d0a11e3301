"""Reading user images safely: any source -> an RGB `PIL.Image` in display orientation, or a clear `ImageError`.

Accepts a path, raw bytes, a `PIL.Image` or an HxW / HxWx{1,3,4} numpy array (what Gradio hands over). Applies the
EXIF orientation, takes the first frame of animations, flattens transparency onto white, converts every mode
(16-bit, CMYK, palette, 1-bit, LA, ...) to 8-bit RGB, and refuses images above a pixel limit *before* decoding
them (the header declares the size; Pillow's own bomb check is turned into our message).

Only the formats in `ALLOWED_FORMATS` are ever decoded (`Image.open(..., formats=...)`): Pillow would otherwise hand
EPS / PostScript to Ghostscript, a known code-execution surface, and parse dozens of rarely used formats.
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .settings import env_int

log = logging.getLogger(__name__)

#: Largest accepted image, in pixels (width x height). Override with VTDEMO_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 40_000_000

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray

#: The formats we decode (Pillow's names; "JPEG" also opens the multi-picture JPEGs (MPO) that phones write).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ALLOWED_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"


def max_pixels() -> int:
    return env_int("VTDEMO_MAX_PIXELS", DEFAULT_MAX_PIXELS, minimum=1)


def _name(src: ImageSource) -> str:
    """How a message names the image by default: a path as given (the CLI's user typed it)."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return {bytes: "uploaded bytes", np.ndarray: "array"}.get(type(src), "image")


def too_large(name: str, width: int | None, height: int | None, pixels: int) -> ImageError:
    """The refusal of an image above `max_pixels()`, in words a visitor can act on (the operator's setting,
    VTDEMO_MAX_PIXELS, is in the docs)."""
    size = f"{width}x{height} = " if width and height else ""
    return ImageError(
        f"{name}: {size}{pixels / 1e6:.3g} megapixels is too large: resize the photo to at most "
        f"{max_pixels() / 1e6:.3g} megapixels"
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparency is composited onto white; 16-bit and float images are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = ((arr - lo) * scale).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"array of shape {arr.shape} is not an image (expected HxW, HxWx3 or HxWx4)")
    if arr.size == 0:
        raise ImageError("the image is empty (0 pixels)")
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = arr.round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def load_image(src: ImageSource, name: str | None = None) -> Image.Image:
    """Open `src` and return an RGB image in display orientation; raise `ImageError` with a one-line reason.
    name: how the messages name the image (the app passes the file's own name: an upload's server folder is
    nobody's business); by default the path as given."""
    name = name or _name(src)
    if isinstance(src, np.ndarray):
        image = _from_array(src)
    elif isinstance(src, Image.Image):
        image = src
    else:
        if isinstance(src, (str, os.PathLike)):
            path = Path(src)
            if not path.is_file():
                raise ImageError(f"{name}: no such file")
            data = path.read_bytes()
        else:
            data = bytes(src)
        if not data:
            raise ImageError(f"{name}: the file is empty (0 bytes)")
        image = _open_bytes(data, name)
    limit = max_pixels()
    if image.width * image.height > limit:
        raise too_large(name, image.width, image.height, image.width * image.height)
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{name}: the image is empty (0 pixels)")
    try:
        if getattr(image, "n_frames", 1) > 1:
            log.info("%s is animated: using its first frame", name)
            image.seek(0)
        image = ImageOps.exif_transpose(image) or image
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data surfaces here
        raise ImageError(f"{name}: the image data is damaged or truncated ({exc})") from None


def _kind(data: bytes) -> str:
    """A few words on what a file that is not an allowed image looks like (for the error message only)."""
    head = data[:64].lstrip().lower()
    if head.startswith((b"%!ps", b"\xc5\xd0\xd3\xc6")):
        return "PostScript / EPS, which is never opened"
    if head.startswith(b"%pdf"):
        return "PDF, which is not an image format"
    if head.startswith(b"<svg") or b"<svg" in data[:512].lower():
        return "SVG, which is not supported"
    if head[:1] in (b"<", b"{") or head.isascii():
        return "text or HTML, not an image"
    return "not one of the accepted image formats"


def _open_bytes(data: bytes, name: str) -> Image.Image:
    """Decode the header only, check the declared size, then decode the pixels."""
    Image.init()  # registers every plugin once, so that each name in ALLOWED_FORMATS is known to `Image.open`
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: unsupported format ({_kind(data)}); use {ALLOWED_TEXT}") from None
    except Image.DecompressionBombError as exc:  # Pillow's own header check, above ~179 M pixels
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise too_large(name, None, None, int(found.group(1)) if found else 10**9) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: cannot read the image ({exc})") from None
    w, h = image.size
    if w * h > max_pixels():
        raise too_large(name, w, h, w * h)
    try:
        image.load()
    except Image.DecompressionBombError:
        raise too_large(name, w, h, w * h) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: the image data is damaged or truncated ({exc})") from None
    return image
