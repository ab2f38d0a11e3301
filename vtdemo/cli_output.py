"""What the command line prints and saves: the table rows of `classify`, `detect` and `explain` (and of
`explain --method all`), the annotated detections and the explanation overlays written with `--save` / `--out`.
`vtdemo.cli` parses the arguments and runs the work; the JSON output is each result's `to_dict()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def classify_rows(result: Any) -> list[str]:
    lines = [f"{result.image}  ({result.model})"]
    for rank, p in enumerate(result.predictions, 1):
        lines.append(f"  {rank:>2}. {p.score:7.2%}  {p.label}  [{p.index}]")
    if not result.predictions:
        lines.append("  no classes: this is a feature model (no classifier head); `vtdemo explain` shows its maps")
    return lines


def detect_rows(result: Any, threshold: float) -> list[str]:
    w, h = result.size
    lines = [
        f"{result.image}  {w}x{h}  ({result.model}): {len(result.detections)} detections with score >= {threshold:g}"
    ]
    for det in result.detections:
        box = ", ".join(f"{v:7.1f}" for v in det.box)
        lines.append(f"  {det.score:6.3f}  {det.label:<16} [{box}]")
    return lines


def video_rows(result: Any, threshold: float) -> list[str]:
    """A video: what was read and written, and how often each class was seen on the processed frames."""
    from collections import Counter

    from .video import every

    seen: Counter[str] = Counter(d["label"] for f in result.per_frame for d in f["detections"])
    info = result.info
    lines = [
        f"{result.path}: {result.frames} frames of {info.width}x{info.height} at {info.fps:.1f} frames/s; "
        f"{result.detector} on {every(result.stride)} ({result.processed} frames, {result.seconds:.1f} s, "
        f"{result.engine}); "
        f"score >= {threshold:g}"
    ]
    for label, count in seen.most_common(10):
        lines.append(f"  {label:<16} {count} detection{'' if count == 1 else 's'}")
    return lines


def progress_line(fraction: float, text: str) -> None:
    """A video's progress on stderr, on one line rewritten in place."""
    import sys

    print(f"\r{text} ({fraction:.0%})", end="" if fraction < 1 else "\n", file=sys.stderr, flush=True)


def save_annotated(result: Any, directory: Path) -> Path:
    from . import render  # imported on use: `vtdemo --version` stays quick
    from .images import load_image

    directory.mkdir(parents=True, exist_ok=True)
    image = load_image(result.image)
    drawn = render.draw_boxes(
        image,
        [d.box for d in result.detections],
        [f"{d.label} {d.score:.2f}" for d in result.detections],
        [d.label_id for d in result.detections],
    )
    target = directory / (Path(result.image).stem + ".detections.png")
    drawn.save(target)
    return target


def compare_rows(result: Any) -> list[str]:
    lines = [
        f"{result.image}  ({result.model}) all methods; deletion: lower is better, insertion: higher "
        f"(random order in brackets)"
    ]
    for s in result.scores:
        lines.append(
            f"  {s.method:<20} deletion {s.deletion_auc:.4f} ({s.random_deletion_auc:.4f})  insertion "
            f"{s.insertion_auc:.4f} ({s.random_insertion_auc:.4f})  {s.seconds:6.2f} s"
        )
    for name, why in result.skipped.items():
        lines.append(f"  {name:<20} skipped: {why}")
    return lines


def explain_rows(result: Any) -> list[str]:
    if hasattr(result, "scores"):
        return compare_rows(result)
    t = result.target
    what = (
        f"class {t['index']} {t['label']} ({t['score']:.2%})"
        if "index" in t
        else f"detection {t['label']} {t['score']:.3f} (query {t['query']})"
        if "query" in t
        else f"point {t.get('point')}"
    )
    rows, cols = result.grid
    flat = result.map.flatten()
    best = int(flat.argmax())
    lines = [
        f"{result.image}  ({result.model}) {result.method}: {what}",
        f"  map {rows}x{cols}, peak at row {best // cols}, col {best % cols}; mean {float(flat.mean()):.3f}",
    ]
    if result.deletion is not None:
        d = result.deletion
        lines.append(
            f"  deletion check: area under the probability curve {d['auc']:.4f} with this map, "
            f"{d['random_auc']:.4f} in random order (lower = the map found what mattered)"
        )
    return lines


def save_overlay(result: Any, directory: Path, opacity: float) -> Path:
    from . import render
    from .images import load_image

    directory.mkdir(parents=True, exist_ok=True)
    image = load_image(result.image)
    drawn = render.overlay(image, result.map.numpy(), result.region, opacity)
    target = directory / f"{Path(result.image).stem}.{result.method}.png"
    drawn.save(target)
    return target
