"""`python -m vtdemo evaluate {faithfulness,randomisation,coco}`: argument handling and the printed tables.

    python -m vtdemo evaluate faithfulness --model M --methods a,b,c --images DIR [--labels FILE] [--out R.jsonl]
                                           [--resume] [--limit N] [--batch-size B] [--device D] [--engine local|ray]
    python -m vtdemo evaluate randomisation --model M --methods a,b,c --images DIR [--out R.jsonl] [--resume] ...
    python -m vtdemo evaluate coco --model M --images DIR --annotations FILE.json [--out R.jsonl]
                                   [--detections D.json] [--resume] [--limit N] [--batch-size B] [--json] ...

Every protocol takes --engine local|ray (and --ray-actors N); the work itself is in `vtdemo.evaluate.work`.

Nothing heavy is imported until a command runs (`vtdemo.cli` builds this parser on every call).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_IMAGE = 1  # some images were skipped


def _common(p: argparse.ArgumentParser, default_model: str, methods: bool) -> None:
    p.add_argument("--model", default=default_model, help=f"repo id, repo@revision or folder (default {default_model})")
    if methods:
        p.add_argument(
            "--methods",
            help="comma-separated explanation methods (as in `explain --method`; default: every method "
            "of the model's family that needs no point), plus the controls 'edge' (an input-only "
            "edge detector) and 'random'",
        )
    p.add_argument(
        "--images",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder of images, read recursively in sorted order of their relative paths",
    )
    p.add_argument("--out", type=Path, metavar="FILE.jsonl", help="stream one JSON line per result into FILE")
    p.add_argument("--resume", action="store_true", help="continue --out: skip what it already holds")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument(
        "--batch-size",
        type=int,
        help="inputs per forward pass (default: 16 perturbed copies; 2 images for coco, as DETR's eval)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default) or ray: Ray Data maps the evaluation over batches (pip install 'ray[data]')",
    )
    p.add_argument("--ray-actors", type=int, default=1, help="--engine ray: model replicas (Ray actors), default 1")


def add_evaluate_parser(sub: Any) -> None:
    """Add the `evaluate` command (with its three protocols) to the top-level subparsers `sub`."""
    from ..families import DEFAULT_DETR, DEFAULT_VIT

    ev = sub.add_parser("evaluate", help="measure explanations (perturbation, randomisation) and DETR (COCO AP)")
    proto = ev.add_subparsers(dest="protocol", required=True)
    f = proto.add_parser("faithfulness", help="positive / negative perturbation AUC (Chefer et al. CVPR 2021)")
    _common(f, DEFAULT_VIT, methods=True)
    f.add_argument(
        "--labels",
        type=Path,
        help="ground-truth classes: JSON {file_name: index} or 'file_name index' "
        "lines (default: the predicted class is the target)",
    )
    f.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    r = proto.add_parser("randomisation", help="cascading parameter randomisation (Adebayo et al. NeurIPS 2018)")
    _common(r, DEFAULT_VIT, methods=True)
    r.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    r.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="a map whose Spearman correlation with the original stays >= this after every block is "
        "randomised fails the check (default 0.5)",
    )
    c = proto.add_parser("coco", help="COCO box AP of a DETR or RT-DETR model (pycocotools)")
    _common(c, DEFAULT_DETR, methods=False)
    c.add_argument("--annotations", type=Path, required=True, metavar="FILE.json", help="COCO instances file")
    c.add_argument(
        "--detections",
        type=Path,
        metavar="FILE.json",
        help="write the detections in COCO results format (default: next to --out, .detections.json)",
    )


def _check(args: argparse.Namespace) -> None:
    from ..errors import VtdemoError

    if args.limit is not None and args.limit < 1:
        raise VtdemoError("--limit must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise VtdemoError("--batch-size must be at least 1")
    if args.resume and args.out is None:
        raise VtdemoError("--resume needs --out (the file to continue)")


def _sink(args: argparse.Namespace, key: Any, model: str) -> Any:
    """The results file (or memory); a resumed file must hold results of the same model."""
    from ..errors import VtdemoError
    from .runner import JsonlSink, MemorySink

    sink = JsonlSink(args.out, args.resume, key) if args.out is not None else MemorySink(key)
    other = next((r.get("model") for r in sink.records if r.get("model") != model), None)
    if other is not None:
        sink.close()
        raise VtdemoError(f"--out {args.out} holds results of {other}, not {model}: use another file")
    return sink


def _methods(loaded: Any, text: str | None) -> list[str]:
    """The method names asked for with --methods (default: every registered method of this model that needs no
    clicked point), checked against the method registry (`vtdemo.explain.api.methods_for_model`)."""
    from ..errors import VtdemoError
    from ..explain.api import methods_for_model
    from .faithfulness import CONTROLS

    applicable = methods_for_model(loaded)
    known = [m.name for m in applicable if m.target != "point"]
    if text is None:
        return known
    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    needs_point = {m.name for m in applicable if m.target == "point"}
    for m in methods:
        if m in needs_point:
            raise VtdemoError(f"method '{m}' needs a point in each image: not available for a folder")
        if m not in known and m not in CONTROLS:
            raise VtdemoError(
                f"method '{m}' does not apply to {loaded.id}; choose from {', '.join((*known, *CONTROLS))}"
            )
    if not methods:
        raise VtdemoError("--methods is empty")
    return methods


def _classifier(args: argparse.Namespace) -> Any:
    from .. import pipeline
    from ..errors import VtdemoError

    loaded = pipeline.load_model(args.model, device=args.device)
    if loaded.family in ("detr", "rtdetr"):
        raise VtdemoError(f"{loaded.id} is a detection model: use `evaluate coco` (or pick a ViT/DeiT/Swin model)")
    return loaded


def _execute(
    protocol: str,
    args: argparse.Namespace,
    names: list[str],
    parts: list[str],
    options: dict[str, Any],
    loaded: Any,
    sink: Any,
    batch_size: int = 1,
) -> Any:
    """Run the protocol's work (`vtdemo.evaluate.work`) over the images on the chosen engine; the sink is closed."""
    from .runner import run_local
    from .work import BUILDERS

    try:
        if args.engine == "ray":
            from .ray_engine import run_ray

            return run_ray(
                protocol,
                names,
                args.images,
                parts,
                options,
                sink,
                args.model,
                args.device,
                batch_size,
                actors=args.ray_actors,
            )
        return run_local(names, args.images, parts, BUILDERS[protocol](loaded, options), sink, protocol, batch_size)
    finally:
        sink.close()


def faithfulness(args: argparse.Namespace) -> int:
    from .faithfulness import method_list, summarise
    from .runner import list_images, read_labels

    _check(args)
    names = list_images(args.images, args.limit)
    loaded = _classifier(args)
    labels = read_labels(args.labels, names, len(loaded.labels)) if args.labels else {}
    methods = method_list(_methods(loaded, args.methods))
    options = {"methods": methods, "batch_size": args.batch_size or 16, "seed": args.seed, "labels": labels}
    sink = _sink(args, lambda r: (r["image"], r["method"]), loaded.id)
    stats = _execute("faithfulness", args, names, methods, options, loaded, sink)
    wanted = set(names)
    rows = summarise([r for r in sink.records if r["image"] in wanted])
    if args.json:
        print(json.dumps({"model": loaded.id, "images": len(names), "skipped": stats.skipped, "methods": rows}))
    else:
        print(
            f"{loaded.id}: perturbation AUC x100 over {_count(len(names) - len(stats.skipped), 'image')} "
            f"(target: {'labels' if labels else 'predicted class'}; lower positive / higher negative = better)"
        )
        print(f"  {'method':<20} {'images':>6} {'positive':>9} {'negative':>9}")
        for row in rows:
            print(f"  {row['method']:<20} {row['images']:>6} {row['positive_auc']:9.2f} {row['negative_auc']:9.2f}")
    return EXIT_IMAGE if stats.skipped else 0


def randomisation(args: argparse.Namespace) -> int:
    from .randomisation import summarise
    from .runner import list_images

    _check(args)
    names = list_images(args.images, args.limit)
    loaded = _classifier(args)
    methods = _methods(loaded, args.methods)
    sink = _sink(args, lambda r: (r["image"], r["method"]), loaded.id)
    stats = _execute(
        "randomisation", args, names, methods, {"seed": args.seed, "threshold": args.threshold}, loaded, sink
    )
    wanted = set(names)
    rows = summarise([r for r in sink.records if r["image"] in wanted])
    if args.json:
        print(json.dumps({"model": loaded.id, "images": len(names), "skipped": stats.skipped, "methods": rows}))
    else:
        print(f"{loaded.id}: cascading randomisation, mean Spearman correlation with the original map per step")
        for row in rows:
            steps = ", ".join(
                f"{s} {'n/a' if r is None else f'{r:+.2f}'}"
                for s, r in zip(row["steps"], row["mean_spearman"], strict=False)
            )
            verdict = "passes" if row["passes"] else "FAILS (the map survives randomised weights)"
            print(f"  {row['method']}: {verdict}; survived on {row['fails']} of {row['images']} images")
            print(f"    {steps}")
    return EXIT_IMAGE if stats.skipped else 0


def coco(args: argparse.Namespace) -> int:
    from ..errors import VtdemoError
    from . import coco as cc
    from .runner import list_images

    _check(args)
    annotations = cc.read_annotations(args.annotations)
    everything = list_images(args.images)
    ids = cc.match_images(annotations, everything)
    if not ids:
        raise VtdemoError(
            f"no image in {args.images} has a file_name of {args.annotations} "
            f"(first image: {everything[0]}, first file_name: "
            f"{annotations['images'][0]['file_name'] if annotations['images'] else 'none'})"
        )
    names = [n for n in everything if n in ids][: args.limit]
    if len(ids) < len(everything):
        log_note(f"{len(everything) - len(ids)} images in {args.images} are not in the annotations and are ignored")
    if len(ids) < len(annotations["images"]):
        log_note(
            f"{len(annotations['images']) - len(ids)} of the {len(annotations['images'])} annotated images are "
            f"not in {args.images}: AP is over the images evaluated"
        )
    from .. import pipeline

    loaded = pipeline.load_model(args.model, device=args.device)
    if loaded.family not in ("detr", "rtdetr"):
        raise VtdemoError(f"{loaded.id} is an image classifier: COCO AP needs a DETR or RT-DETR model")
    options: dict[str, Any] = {"ids": ids}
    if loaded.family == "rtdetr":
        options["categories"] = cc.category_ids(loaded.labels, annotations)
    sink = _sink(args, lambda r: (r["image"], "detections"), loaded.id)
    stats = _execute("coco", args, names, ["detections"], options, loaded, sink, args.batch_size or 2)
    wanted = set(names)
    done = [r for r in sink.records if r["image"] in wanted]
    results = [d for r in done for d in r["detections"]]
    target = args.detections or (args.out.with_name(args.out.stem + ".detections.json") if args.out else None)
    if target is not None:
        target.write_text(json.dumps(results), encoding="utf-8")
    numbers = cc.evaluate(annotations, results, [r["image_id"] for r in done])
    if args.json:
        print(json.dumps(numbers))
    else:
        kept = "every query kept" if loaded.family == "detr" else "the top (query, class) pairs kept"
        print(f"{loaded.id}: COCO box AP over {_count(len(done), 'image')} ({len(results)} detections, {kept})")
        print("\n".join(cc.table(numbers)))
        if target is not None:
            print(f"detections (COCO results format): {target}")
    return EXIT_IMAGE if stats.skipped else 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def log_note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def run_evaluate(args: argparse.Namespace) -> int:
    """Dispatch `evaluate <protocol>`; errors surface as `VtdemoError` (one line, printed by `vtdemo.cli`)."""
    if args.protocol == "faithfulness":
        return faithfulness(args)
    if args.protocol == "randomisation":
        return randomisation(args)
    return coco(args)
