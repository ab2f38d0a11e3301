"""A folder of images as an evaluation input: listing, labels, a progress bar, results streamed to JSONL, resume.

- Images: every file under the folder (recursively, hidden files and folders skipped) whose suffix is one of
  `IMAGE_SUFFIXES`, in sorted order of their path relative to the folder (POSIX separators). That relative path is
  the image's name in the results and in a labels file.
- Labels (optional): either a JSON object `{"name": class_index, ...}` or text lines `name class_index` (the
  ImageNet validation style, e.g. `ILSVRC2012_val_00000001.JPEG 65`; blank lines and `#` comments ignored). A name
  is matched as the relative path first, then as the file's base name. Every image evaluated must have a label in
  0..K-1, else the run fails at once with a one-line reason; labels for files that are not in the folder are allowed.
- Results: one JSON object per line, written and flushed as soon as each image is done, so an interrupted run keeps
  everything written. `resume=True` reads the file back, drops a truncated last line, and skips every
  (image, method) pair already there; without it an existing non-empty file is refused.
- A missing or unreadable image is reported on stderr, one line, and skipped.

The progress bar is tqdm's (rate and ETA) on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ImageError, VtdemoError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm"})

Record = dict[str, Any]


def list_images(folder: str | os.PathLike, limit: int | None = None) -> list[str]:
    """Relative POSIX paths of the images under `folder` (recursive, sorted, hidden entries skipped), the first
    `limit` of them when given."""
    root = Path(folder)
    if not root.is_dir():
        raise VtdemoError(f"--images {folder}: not a folder")
    names = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_file() or not path.exists():  # a dangling link is listed and reported as missing later
            names.append(rel.as_posix())
    names.sort()
    if not names:
        raise VtdemoError(f"--images {folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return names[:limit] if limit is not None else names


def _parse_labels(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VtdemoError(f"--labels {path}: cannot read it ({exc})") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VtdemoError(f"--labels {path}: not valid JSON ({exc})") from None
        return dict(data)
    out: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise VtdemoError(f"--labels {path}: line {number} is not 'file_name class_index': {line!r}")
        out[parts[0]] = parts[1]
    return out


def read_labels(path: str | os.PathLike, names: Sequence[str], num_classes: int) -> dict[str, int]:
    """The class index of every image in `names` from a labels file (format above); one-line error on a mismatch."""
    path = Path(path)
    raw = _parse_labels(path)
    by_base: dict[str, Any] = {}
    for key, value in raw.items():
        by_base.setdefault(Path(str(key)).name, value)
    labels: dict[str, int] = {}
    missing = []
    for name in names:
        value = raw.get(name, by_base.get(Path(name).name))
        if value is None:
            missing.append(name)
            continue
        try:
            index = int(value)
            if isinstance(value, float) or str(value).strip() != str(index):
                raise ValueError
        except (TypeError, ValueError):
            raise VtdemoError(f"--labels {path}: the label of {name} is {value!r}, not a class index") from None
        if not 0 <= index < num_classes:
            raise VtdemoError(
                f"--labels {path}: the label of {name} is {index}, outside 0..{num_classes - 1} (the model's classes)"
            )
        labels[name] = index
    if missing:
        raise VtdemoError(
            f"--labels {path} does not match the images: no label for {len(missing)} of {len(names)} "
            f"(first: {missing[0]})"
        )
    return labels


class JsonlSink:
    """Results file: one JSON object per line, each flushed when written. `done` holds the keys already there."""

    def __init__(self, path: str | os.PathLike, resume: bool, key: Callable[[Record], tuple]) -> None:
        self.path = Path(path)
        self.key = key
        self.done: set[tuple] = set()
        self.records: list[Record] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            if not resume:
                raise VtdemoError(f"--out {self.path} already exists: pass --resume to continue it, or remove it")
            self._read_back()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def _read_back(self) -> None:
        """Load the complete lines; cut off a truncated or broken last line (an interrupted write)."""
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            self.records.append(record)
            self.done.add(self.key(record))
            good += len(line)
        if good < len(data):
            log.warning("%s: dropping a truncated last line (%d bytes)", self.path, len(data) - good)
            with self.path.open("r+b") as f:
                f.truncate(good)

    def write(self, records: Iterable[Record]) -> None:
        for record in records:
            self._file.write(json.dumps(record) + "\n")
            self.records.append(record)
            self.done.add(self.key(record))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class MemorySink(JsonlSink):
    """Same interface, nothing written (no --out)."""

    def __init__(self, key: Callable[[Record], tuple]) -> None:
        self.key = key
        self.done = set()
        self.records = []

    def write(self, records: Iterable[Record]) -> None:
        for record in records:
            self.records.append(record)
            self.done.add(self.key(record))

    def close(self) -> None:
        pass


def report_skip(message: str) -> None:
    """One line on stderr for an image that could not be used (above the progress bar)."""
    from tqdm import tqdm

    tqdm.write(f"skipped: {message}", file=sys.stderr)


@dataclass
class RunStats:
    evaluated: int = 0
    resumed: int = 0
    skipped: list[str] = field(default_factory=list)


def progress(total: int, desc: str) -> Any:
    """A tqdm bar (rate, ETA) on stderr; call `.update(n)` and `.close()`."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


Item = tuple[str, Any, list[str]]  # (name, RGB image, the parts still missing for it)


def run_local(
    names: Sequence[str],
    folder: str | os.PathLike,
    parts: Sequence[str],
    work: Callable[[list[Item]], list[Record]],
    sink: JsonlSink,
    desc: str = "evaluate",
    batch_size: int = 1,
) -> RunStats:
    """Evaluate the images `batch_size` at a time: `work([(name, rgb_image, missing_parts), ...])` -> records,
    written as each batch is done.

    parts: the per-image keys (methods) each image must end up with; an image whose parts are all in `sink.done`
    is skipped (resume). Unreadable images are reported and skipped.
    """
    from ..images import load_image

    stats = RunStats()
    root = Path(folder)
    bar = progress(len(names), desc)
    batch: list[Item] = []

    def flush() -> None:
        if batch:
            sink.write(work(batch))
            stats.evaluated += len(batch)
            bar.update(len(batch))
            batch.clear()

    try:
        for name in names:
            missing = [p for p in parts if (name, p) not in sink.done]
            if not missing:
                stats.resumed += 1
                bar.update(1)
                continue
            try:
                image = load_image(root / name)
            except ImageError as exc:
                report_skip(str(exc))
                stats.skipped.append(name)
                bar.update(1)
                continue
            batch.append((name, image, missing))
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:
        bar.close()
    return stats
