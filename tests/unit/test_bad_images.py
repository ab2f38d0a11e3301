"""Every kind of image a public app receives: a correct result or one clear `ImageError` line, never a traceback.

The corpus is generated here with Pillow (nothing downloaded). A property-based test then feeds random sizes, modes
and byte corruptions to reading and pre-processing: nothing but our own error type may escape.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vtdemo import preprocess
from vtdemo.errors import ImageError
from vtdemo.images import load_image

TIMM_CFG = preprocess.config_from_timm(
    dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.9, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
)
DETR_CFG = preprocess.config_from_hf({"size": {"shortest_edge": 800, "longest_edge": 1333}}, detr=True)


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(size=(64, 48)) -> Image.Image:
    """A small image with structure (a gradient and a square), so orientation and colour can be checked."""
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    arr[: h // 4, : w // 4] = (255, 255, 255)  # a white marker at the top-left
    return Image.fromarray(arr)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds one tiny IDAT (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


GOOD = {
    "rgba_png": lambda: encode(photo().convert("RGBA"), "PNG"),
    "la_png": lambda: encode(photo().convert("LA"), "PNG"),
    "palette_with_transparency": lambda: encode(photo().convert("P"), "PNG", transparency=0),
    "one_bit": lambda: encode(photo().convert("1"), "PNG"),
    "grayscale_jpeg": lambda: encode(photo().convert("L"), "JPEG"),
    "cmyk_jpeg": lambda: encode(photo().convert("CMYK"), "JPEG"),
    "sixteen_bit_png": lambda: encode(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20), "PNG"),
    "animated_gif": lambda: encode(photo(), "GIF", save_all=True, append_images=[photo().rotate(90)]),
    "animated_webp": lambda: encode(photo(), "WEBP", save_all=True, append_images=[photo().rotate(90)]),
    "one_pixel": lambda: encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
    "tall_3x2000": lambda: encode(Image.new("RGB", (3, 2000), (0, 128, 255)), "PNG"),
    "wide_2000x3": lambda: encode(Image.new("RGB", (2000, 3), (0, 128, 255)), "PNG"),
    "bmp": lambda: encode(photo(), "BMP"),
    "tiff": lambda: encode(photo(), "TIFF"),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_odd_but_valid_images_work(name):
    image = load_image(GOOD[name]())
    assert image.mode == "RGB" and image.width >= 1 and image.height >= 1
    x = preprocess.classifier_input(image, TIMM_CFG)
    assert x.shape == (1, 3, 224, 224) and torch.isfinite(x).all()
    values, mask = preprocess.detr_inputs([image], DETR_CFG)
    assert torch.isfinite(values).all() and mask.any()


def test_transparency_is_flattened_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert load_image(encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_uses_the_first_frame():
    first = load_image(GOOD["animated_gif"]())
    assert np.asarray(first)[:5, :5].mean() > 200  # the white marker of frame 0, not the rotated frame


def test_exif_rotation_is_applied():
    image = photo((64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    loaded = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (48, 64)  # portrait after rotation
    arr = np.asarray(loaded).astype(int)
    # the white marker was top-left; after a 90 degree clockwise turn it is top-right
    assert arr[:8, -8:].mean() > 200 and arr[:8, :8].mean() < 200


BAD = {
    "zero_bytes": (lambda: b"", "empty"),
    "html_named_jpg": (lambda: b"<!DOCTYPE html><html><body>hello</body></html>", "unsupported format"),
    "plain_text": (lambda: b"just some words in a file\n", "unsupported format"),
    "svg": (lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
    "heic_like": (lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "unsupported format"),
    "truncated_jpeg": (lambda: encode(photo((256, 256)), "JPEG")[:600], "truncated"),
    "truncated_png": (lambda: encode(photo((256, 256)), "PNG")[:300], "truncated"),
    "bomb_30000": (lambda: png_header_only(30000, 30000), "pixels"),
    "postscript_eps": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "PostScript"),
    "pdf": (lambda: b"%PDF-1.4\n1 0 obj << >> endobj\n", "unsupported format"),
    # real images in formats Pillow reads but we do not accept (the allow-list, not a failure to decode)
    "ppm_not_allowed": (lambda: encode(photo((16, 16)), "PPM"), "unsupported format"),
    "ico_not_allowed": (lambda: encode(photo((16, 16)), "ICO"), "unsupported format"),
    "tga_not_allowed": (lambda: encode(photo((16, 16)), "TGA"), "unsupported format"),
}


def test_allowed_formats_still_open():
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        assert load_image(encode(photo((16, 12)), fmt)).size == (16, 12), fmt


def test_postscript_never_reaches_ghostscript(monkeypatch):
    """Pillow's EPS plugin runs `gs` to rasterise; with the allow-list it is never even identified as EPS."""
    import subprocess

    from PIL import EpsImagePlugin

    ran = []
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: ran.append(a))
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    with pytest.raises(ImageError, match="PostScript"):
        load_image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    assert ran == []


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_images_give_one_clear_line(name):
    make, words = BAD[name]
    with pytest.raises(ImageError) as err:
        load_image(make())
    message = str(err.value)
    assert words.lower() in message.lower() and "\n" not in message


@pytest.mark.parametrize("side,declared", [(30000, "900"), (9000, "9000x9000 = 81")])
def test_bomb_is_rejected_before_decoding_with_the_limit(monkeypatch, side, declared):
    """30000^2 trips Pillow's own header check, 9000^2 only ours; both say the size and the limit, undecoded."""
    import PIL.ImageFile

    decoded = []
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(
        ImageError, match=f"{declared} megapixels is too large: resize the photo to at most 40 megapixels"
    ):
        load_image(png_header_only(side, side))
    assert not decoded


def test_pixel_limit_is_configurable(monkeypatch):
    monkeypatch.setenv("VTDEMO_MAX_PIXELS", "1000")
    with pytest.raises(ImageError, match="64x48 = 0.00307 megapixels is too large: resize the photo to at most 0.001 "):
        load_image(encode(photo((64, 48)), "PNG"))


def test_file_names_with_spaces_and_non_ascii(tmp_path):
    path = tmp_path / "mon chat été 猫.png"
    path.write_bytes(encode(photo(), "PNG"))
    assert load_image(path).size == (64, 48)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing ü.png")


@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((480, 641, 3), np.uint8),
        ((31, 17), np.uint8),
        ((20, 30, 4), np.uint8),
        ((25, 25, 3), np.float32),
        ((10, 10, 1), np.uint8),
    ],
)
def test_arrays_like_webcam_frames(shape, dtype):
    arr = (np.random.default_rng(0).random(shape) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    image = load_image(arr)
    assert image.mode == "RGB" and image.size == (shape[1], shape[0])


@pytest.mark.parametrize("shape", [(0, 10, 3), (10, 10, 2), (5,), (2, 2, 2, 3)])
def test_arrays_that_are_not_images(shape):
    with pytest.raises(ImageError):
        load_image(np.zeros(shape, dtype=np.uint8))


MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "I", "F"]
FORMATS = {
    "PNG": {"RGB", "RGBA", "L", "LA", "P", "1", "I;16"},
    "JPEG": {"RGB", "L", "CMYK"},
    "WEBP": {"RGB", "RGBA"},
    "GIF": {"P", "L"},
    "BMP": {"RGB", "L", "P", "1"},
    "TIFF": set(MODES),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    w=st.integers(1, 300),
    h=st.integers(1, 300),
    mode=st.sampled_from(MODES),
    fmt=st.sampled_from(sorted(FORMATS)),
    cut=st.floats(0, 1),
    flips=st.lists(st.integers(0, 10**6), max_size=8),
    seed=st.integers(0, 2**16),
)
def test_random_images_and_corruptions_only_raise_our_error(w, h, mode, fmt, cut, flips, seed):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(
        mode if mode in {"RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I", "F"} else "L"
    )
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    if image.mode not in FORMATS[fmt]:
        fmt = "TIFF" if image.mode in FORMATS["TIFF"] else "PNG"
    data = bytearray(encode(image, fmt))
    if cut < 0.5:  # corrupt half of the cases: truncate and flip bytes
        data = data[: max(1, int(len(data) * cut * 2))]
        for f in flips:
            data[f % len(data)] ^= 0xFF
    try:
        rgb = load_image(bytes(data))
    except ImageError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert rgb.mode == "RGB"
    x = preprocess.classifier_input(rgb, TIMM_CFG)
    assert x.shape == (1, 3, 224, 224) and torch.isfinite(x).all()


@pytest.mark.parametrize("mode,fmt", [("CMYK", "JPEG"), ("L", "JPEG"), ("1", "PNG"), ("P", "GIF")])
def test_mode_conversion_equals_pillows_own(mode, fmt):
    """Opaque modes: exactly what Pillow's own `.convert("RGB")` gives for the decoded file."""
    data = encode(photo().convert(mode), fmt)
    expected = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(np.asarray(load_image(data)), np.asarray(expected))


def test_sixteen_bit_is_stretched_to_the_full_8_bit_range():
    values = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    out = np.asarray(load_image(encode(Image.fromarray(values), "PNG")))
    # min-max by hand: (v - 1000) * 255 / 4000 -> 0, 63.75, 127.5, 255 (rounded half to even by numpy)
    assert out[..., 0].tolist() == [[0, 64], [128, 255]] and (out[..., 0] == out[..., 2]).all()
