"""Small variants of Gradio components the app needs (same front-ends as the originals).

- `SafeImage`: the one door for every image input (uploads, pasted images, example clicks and webcam frames). It
  opens nothing itself: it hands over the path of a file *inside Gradio's upload folder or the app's examples* (any
  other path is refused with "not an uploaded file", whether or not it exists, and nothing is read), or the raw bytes
  of a `data:` URL (at most the upload limit), so that every image, good or bad, is read by
  `vtdemo.images.load_image`: format allow-list, the pixel limit checked from the header before decoding, and a
  one-line reason for anything it cannot use. (Gradio 6 checks "was this uploaded?" only for payloads that carry
  `meta`; an `ImageData` payload `{"path": ...}` without it would otherwise reach the component.)
- `SafeVideo`: the door for video clips: an uploaded file's path (inside Gradio's upload folder, within the size
  limit) and nothing else; Gradio's own FFmpeg conversion of uploads is skipped (`vtdemo.video` reads the clip).
- `Slider`, `Number`, `Checkbox`, `MultiChoice`: the stock components, but a value sent through the API that is not
  a finite number in range, not a boolean, or not a list of names (a plain string counts as a one-element list) is
  refused with one line naming the parameter and what is allowed (stock Gradio gives a bare "Error", or lets NaN in).
- `Click`: the data of a `.select()` event, which may be absent when an API client calls the endpoint directly.
- `BoxImage`: a `gr.AnnotatedImage` that accepts a `BoxView` and writes each box's mask once per run, small, and
  reuses it: re-thresholding a 1280x720 photo then costs a few milliseconds instead of one full-size PNG per box
  (which is what `gr.AnnotatedImage.postprocess` writes). Its files stay where they are until Gradio's own cache
  expiry (`delete_cache` in `vtdemo.ui.app`), also when the same visitor runs another photo: a client may still
  be downloading the previous result. They live in one folder of Gradio's upload folder (`box_folder()`) that the
  app declares a static path: Gradio then serves them as they are, without its per-file checks on every output
  (about ten `realpath` calls per file, on the event loop: 100-300 ms for a threshold change that shows 60 boxes,
  measured, during which no other visitor's event moves); `BoxImage` enters them in `BOX_FILES`, a set the app
  hands to Gradio with its blocks' temporary files, so that the cache expiry still deletes them (a component's own
  `temp_files` would not do: Gradio post-processes an update with a per-session copy of the component, whose set it
  does not know).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.components.annotated_image import AnnotatedImageData, Annotation
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder
from PIL import Image

from .. import checks
from ..errors import InputError

log = logging.getLogger(__name__)

MASK_MAX = 480  # long side of the box masks; the browser stretches them over the photo


NOT_UPLOADED = "not an uploaded file: upload the image (or pick an example) and try again"
CLIP_NOT_UPLOADED = "not an uploaded file: upload the clip and try again"


def _inside(path: str, folders: Sequence[Path]) -> bool:
    """Is `path` inside one of `folders`, lexically and after resolving symbolic links? Reads no file content."""
    lexical = Path(os.path.abspath(path))
    if not any(lexical.is_relative_to(f) for f in folders):
        return False  # decided before touching the file system at all
    real = Path(os.path.realpath(lexical))
    return any(real.is_relative_to(Path(os.path.realpath(f))) for f in folders)


class SafeImage(gr.Image):
    """`gr.Image` that hands over an uploaded file's path or a data URL's bytes, never opening either itself (see the
    module docstring). `allowed` are the folders (besides Gradio's upload folder) whose files may be used, e.g. the
    examples; `max_bytes` bounds a data URL. Set them with `safe_image` (Gradio builds the front-end's settings from
    `gr.Image.__init__`'s own parameters, so this class adds none)."""

    allowed: tuple[Path, ...] = ()
    max_bytes: int = 20 * 2**20

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload: Any) -> str | bytes | None:  # type: ignore[override]
        if payload is None:
            return None
        url = payload.url or ""
        if url.startswith("data:"):
            return self._data_url(url)
        if payload.path is None:
            return None
        folders = (Path(os.path.abspath(get_upload_folder())), *self.allowed)
        if not isinstance(payload.path, str) or not _inside(payload.path, folders):
            log.warning("refused an image input outside the upload folder")
            raise refusal(NOT_UPLOADED)
        if os.path.getsize(payload.path) > self.max_bytes:  # the upload limit is the video's when that is larger
            raise refusal(f"the image is larger than {self.max_bytes / 2**20:.0f} MB: upload a smaller file")
        return payload.path

    def _data_url(self, url: str) -> bytes:
        """The bytes of a base64 `data:` URL (what the browser sends for pasted images and webcam frames)."""
        header, _, body = url.partition(",")
        if ";base64" not in header or len(body) > self.max_bytes * 4 // 3 + 4:
            raise refusal(f"the image data is not base64 or larger than {self.max_bytes // 2**20} MB")
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise refusal("the image data is not valid base64") from None


def safe_image(allowed: Sequence[str | Path] = (), max_bytes: int = 20 * 2**20, **kwargs: Any) -> SafeImage:
    """A `SafeImage` (type "filepath") that also accepts files inside `allowed` and data URLs up to `max_bytes`."""
    kwargs.setdefault("type", "filepath")
    image = SafeImage(**kwargs)
    image.allowed = tuple(Path(os.path.abspath(a)) for a in allowed)
    image.max_bytes = int(max_bytes)
    return image


class SafeVideo(gr.Video):
    """`gr.Video` that hands over the path of an uploaded clip (inside Gradio's upload folder, at most `max_bytes`)
    and nothing else, converting nothing (no FFmpeg run on the server before the app's own checks: the clip is read
    by `vtdemo.video`, which checks its header first). Set with `safe_video`."""

    max_bytes: int = 100 * 2**20

    def get_block_name(self) -> str:
        return "video"

    def preprocess(self, payload: Any) -> str | None:  # type: ignore[override]
        if payload is None:
            return None
        path = getattr(payload, "path", None)
        folders = (Path(os.path.abspath(get_upload_folder())),)
        if not isinstance(path, str) or not _inside(path, folders):
            log.warning("refused a video input outside the upload folder")
            raise refusal(CLIP_NOT_UPLOADED)
        if os.path.getsize(path) > self.max_bytes:
            raise refusal(f"the clip is larger than {self.max_bytes / 2**20:.0f} MB: upload a shorter or smaller one")
        return path


def safe_video(max_bytes: int, **kwargs: Any) -> SafeVideo:
    """A `SafeVideo` that accepts uploads up to `max_bytes`."""
    video = SafeVideo(**kwargs)
    video.max_bytes = int(max_bytes)
    return video


def upload_name(source: str | bytes | None, default: str = "pasted image") -> str:
    """The file name to show and to name exports after (a path's name; bytes have none)."""
    return Path(source).name if isinstance(source, str) else default


def refusal(text: str) -> gr.Error:
    """A visitor's (or a script's) input refused in one line: Gradio shows it, and logs no traceback for it (a
    client sending bad values is not a fault of the server, and its tracebacks would fill the log)."""
    return gr.Error(text, print_exception=False)


def _checked(check: Any) -> Any:
    """Run a `vtdemo.checks` function, turning its `InputError` into Gradio's visible one-line error."""
    try:
        return check()
    except InputError as exc:
        raise refusal(str(exc)) from None


class Slider(gr.Slider):
    """`gr.Slider` that refuses anything but a finite number within its range (NaN, "abc", null included)."""

    def get_block_name(self) -> str:
        return "slider"

    def preprocess(self, payload: Any) -> float:  # type: ignore[override]
        value = _checked(lambda: checks.number(payload, self.label or "the value", self.minimum, self.maximum))
        return super().preprocess(value)


class Number(gr.Number):
    """`gr.Number` that refuses anything but empty or a finite number within its range."""

    def get_block_name(self) -> str:
        return "number"

    def preprocess(self, payload: Any) -> float | int | None:  # type: ignore[override]
        if payload is None:
            return None
        value = _checked(lambda: checks.number(payload, self.label or "the value", self.minimum, self.maximum))
        return super().preprocess(value)


class Checkbox(gr.Checkbox):
    """`gr.Checkbox` that refuses anything but true / false (a string would otherwise count as 'on')."""

    def get_block_name(self) -> str:
        return "checkbox"

    def preprocess(self, payload: Any) -> bool:  # type: ignore[override]
        return _checked(lambda: checks.flag(payload, self.label or "the switch"))


class MultiChoice(gr.Dropdown):
    """A multiselect `gr.Dropdown` that takes a plain string as a one-element list and refuses non-names, and names
    not among its choices in one short line (stock Gradio echoes the value and lists every choice)."""

    def get_block_name(self) -> str:
        return "dropdown"

    def preprocess(self, payload: Any) -> Any:  # type: ignore[override]
        allowed = None if self.allow_custom_value else [str(c[1]) for c in self.choices]  # choices: (label, value)
        value = _checked(lambda: checks.names(payload, self.label or "the choice", allowed))
        return super().preprocess(value)


class Table(gr.Dataframe):
    """`gr.Dataframe` whose malformed payloads (rows of the wrong width, cells that are lists) are refused in one
    line naming the columns it needs, instead of Gradio's multi-line processing error."""

    def get_block_name(self) -> str:
        return "dataframe"

    def preprocess(self, payload: Any) -> Any:  # type: ignore[override]
        try:
            return super().preprocess(payload)
        except (ValueError, TypeError, KeyError, AttributeError):
            columns = ", ".join(str(h) for h in (self.headers or []))
            raise refusal(f"{self.label or 'the table'}: every row needs the columns {columns}") from None


class Click(gr.EventData):
    """The data of a `.select()` event: `index` and `value`, both None when the caller sent no event data (an API
    client calling a click endpoint directly), where `gr.SelectData` would fail before the handler runs."""

    def __init__(self, target: Any, data: Any) -> None:
        super().__init__(target, data)
        data = data if isinstance(data, dict) else {}
        self.index: Any = data.get("index")
        self.value: Any = data.get("value")


_STATIC: set[Path] = set()  # the box folders declared static in this process
BOX_FILES: set[str] = set()  # every file `BoxImage` returned: in each app's `demo.temp_file_sets` (vtdemo.ui.app)


def box_folder() -> Path:
    """Where `BoxCanvas` writes: `<Gradio's upload folder>/vtdemo/boxes`, nothing else (a static path of the app)."""
    return Path(get_upload_folder()) / "vtdemo" / "boxes"


@dataclass
class BoxCanvas:
    """One photo's files for `BoxImage`: the display copy and a mask per query, written on first use."""

    folder: Path
    size: tuple[int, int]  # (width, height) of the display copy
    scale: float  # display / original
    base: Path
    masks: dict[int, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, shown: Image.Image, scale: float) -> "BoxCanvas":
        root = box_folder()
        if root not in _STATIC:  # Gradio keeps a list and checks every entry for every file it returns
            gr.set_static_paths([root])
            _STATIC.add(root)
        folder = root / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        base = folder / "photo.jpg"
        shown.convert("RGB").save(base, quality=90)
        return cls(folder=folder, size=shown.size, scale=scale, base=base)  # files expire with Gradio's cache

    def mask(self, query: int, box: Sequence[float], color: tuple[int, int, int]) -> Path:
        """The RGBA mask of one box (original-image pixels), cached by query index."""
        path = self.masks.get(query)
        if path is not None and path.exists():
            return path
        w, h = self.size
        s = min(1.0, MASK_MAX / max(w, h))
        mw, mh = max(1, round(w * s)), max(1, round(h * s))
        k = s * self.scale  # original pixels -> mask pixels
        x0, y0, x1, y1 = (int(round(v * k)) for v in box)
        x0, x1 = min(max(x0, 0), mw - 1), min(max(x1, x0 + 1), mw)
        y0, y1 = min(max(y0, 0), mh - 1), min(max(y1, y0 + 1), mh)
        rgba = np.zeros((mh, mw, 4), dtype=np.uint8)  # [h, w, RGBA]
        rgba[y0:y1, x0:x1, :3] = color
        rgba[y0:y1, x0:x1, 3] = 40  # a light fill
        b = 2
        for sl in (
            (slice(y0, y1), slice(x0, min(x0 + b, x1))),
            (slice(y0, y1), slice(max(x1 - b, x0), x1)),
            (slice(y0, min(y0 + b, y1)), slice(x0, x1)),
            (slice(max(y1 - b, y0), y1), slice(x0, x1)),
        ):
            rgba[sl[0], sl[1], 3] = 255  # the outline
        path = self.folder / f"q{query}.png"
        Image.fromarray(rgba, "RGBA").save(path, compress_level=1)
        self.masks[query] = path
        return path


@dataclass
class BoxView:
    """What `BoxImage` shows: the canvas and, per box, (query, box in original pixels, colour, label)."""

    canvas: BoxCanvas
    boxes: list[tuple[int, Sequence[float], tuple[int, int, int], str]]


class BoxImage(gr.AnnotatedImage):
    """`gr.AnnotatedImage` fed with a `BoxView` (anything else goes to the original postprocess). Its files are served
    from `box_folder()`, a static path: Gradio neither checks nor copies them per output."""

    def get_block_name(self) -> str:
        return "annotatedimage"

    def postprocess(self, value: Any) -> AnnotatedImageData | None:  # type: ignore[override]
        if not isinstance(value, BoxView):
            return super().postprocess(value)
        canvas = value.canvas
        masks = [str(canvas.mask(q, box, color)) for q, box, color, _ in value.boxes]
        BOX_FILES.update([str(canvas.base), *masks])  # deleted by Gradio's cache expiry, as its own files
        annotations = [Annotation(image=FileData(path=m), label=b[3]) for m, b in zip(masks, value.boxes)]
        return AnnotatedImageData(image=FileData(path=str(canvas.base)), annotations=annotations)
