"""Command line: `python -m vtdemo {classify,detect,bench} ...`.

    python -m vtdemo classify [--model MODEL] [--top-k K] [--json] IMAGE [IMAGE ...]
    python -m vtdemo detect [--model MODEL] [--threshold T] [--json] [--save DIR] IMAGE [IMAGE ...]
    python -m vtdemo detect clip.mp4 --out annotated.mp4 [--every K] [--live-size PX] [--json]
    python -m vtdemo explain [--model MODEL] [--method METHOD|all] [--class INDEX] [--head-fusion mean|max|min]
                             [--discard RATIO] [--detection K] [--target class|box] [--threshold T] [--point X,Y]
                             [--layer L] [--deletion] [--out DIR] [--json] IMAGE...
    python -m vtdemo serve [--host H] [--port P] [--vit-model M] ...   (the web app, as `python app.py`)
    python -m vtdemo bench [--runs N] [--only NAME,...]   (`bench --help` lists the names)
    python -m vtdemo convert MODEL [MODEL ...]   (pre-convert for --precision fast, e.g. while a Space is built)
    python -m vtdemo evaluate {faithfulness,randomisation,coco} ...
    python -m vtdemo soak --url URL [--minutes M] [--visitors N] [--out DIR] [--models [FAMILY=]REPO ...]
                          (drive a running app like real traffic; see docs/deployment.md, "Soak test")

classify, detect and explain take `--precision {exact,fast}` (default exact: fp32 PyTorch; fast: see
`vtdemo.engine`); every JSON result carries a "runtime" object naming the engine and precision that produced it.

MODEL is a Hugging Face repo id, `repo@revision`, or a local folder with the same files. Errors are one line on
stderr (no traceback) and a non-zero exit status; an image that fails does not stop the others. With `--json`, stdout
is one JSON list with one object per image in argument order (an image that failed has an "error" field instead of
results).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from . import cli_output as output
from .errors import ExplainError, ImageError, VtdemoError
from .families import DEFAULT_THRESHOLD
from .settings import PRECISIONS

EXIT_IMAGE = 1  # at least one image failed
EXIT_MODEL = 2  # the model could not be loaded, or an option does not fit it (e.g. a method of another family)


def _parser() -> argparse.ArgumentParser:
    from .families import DEFAULT_DETR, DEFAULT_VIT

    p = argparse.ArgumentParser(prog="python -m vtdemo", description="See what vision transformers see.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (model loading, timings)")
    p.add_argument("--version", action="version", version=f"vtdemo {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("classify", help="top-k ImageNet classes with a ViT/DeiT or Swin model")
    c.add_argument("--model", default=DEFAULT_VIT, help=f"repo id, repo@revision or folder (default {DEFAULT_VIT})")
    c.add_argument("--top-k", type=int, default=5, help="how many classes to show (default 5)")
    c.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    _precision_flag(c)
    c.add_argument("images", nargs="+", metavar="IMAGE")

    d = sub.add_parser("detect", help="objects with DETR or RT-DETR / RT-DETRv2")
    d.add_argument("--model", default=DEFAULT_DETR, help=f"repo id, repo@revision or folder (default {DEFAULT_DETR})")
    d.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"minimum score, 0..1 (default {DEFAULT_THRESHOLD}; 0 = all queries)",
    )
    d.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    d.add_argument("--save", type=Path, metavar="DIR", help="write each annotated image into DIR")
    d.add_argument(
        "--out", type=Path, metavar="MP4", help="a video's annotated H.264 mp4 (default: CLIP.detected.mp4 here)"
    )
    d.add_argument(
        "--every", type=int, default=1, metavar="K", help="a video: the detector on every K-th frame (default 1)"
    )
    d.add_argument(
        "--live-size",
        type=int,
        default=480,
        metavar="PX",
        help="a video: DETR's input short side (default 480; RT-DETR runs at its processor's size)",
    )
    _precision_flag(d)
    d.add_argument("images", nargs="+", metavar="IMAGE", help="photos, or video clips (.mp4, .webm, .mov, ...)")

    e = sub.add_parser("explain", help="what the model looked at: a relevance map per image")
    e.add_argument("--model", default=DEFAULT_VIT, help=f"repo id, repo@revision or folder (default {DEFAULT_VIT})")
    from .explain import registry
    from .explain.vit import FUSIONS

    e.add_argument(
        "--method",
        help=f"one of: {registry.help_text()}; or all: every method with its deletion / "
        "insertion scores and their rank agreement",
    )
    e.add_argument("--class", dest="class_index", type=int, help="class index to explain (default: the top class)")
    e.add_argument("--head-fusion", choices=FUSIONS, default="mean")
    e.add_argument("--discard", type=float, default=0.0, help="rollout: drop this fraction of the lowest attention")
    e.add_argument("--start-layer", type=int, default=0, help="rollout: first layer to include")
    e.add_argument("--head", type=int, help="one attention head instead of fusing them")
    e.add_argument(
        "--detection", type=int, default=0, help="detr-decoder, detr-relevance: K-th detection by score (0 = best)"
    )
    e.add_argument(
        "--target",
        default="class",
        help="detr-relevance: 'class' (the detection's class logit, default) or 'box' (one map per box "
        "edge; JSON key 'maps': {x0, y0, x1, y1}, 'map' = their mean)",
    )
    e.add_argument(
        "--layer",
        type=int,
        default=-1,
        help="detr-decoder / detr-encoder: layer; gradcam: block; swin-gradcam: stage (-1 = last)",
    )
    e.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="detr-decoder: score threshold for detections"
    )
    e.add_argument("--point", help="X,Y in image pixels (swin-window, detr-encoder)")
    e.add_argument(
        "--input-size",
        type=int,
        help="ViT: run at this input size (short side, px) instead of the "
        "trained one; position embeddings are interpolated",
    )
    e.add_argument("--keep-aspect", action="store_true", help="ViT: see the whole photo at its aspect ratio")
    e.add_argument("--mask-outliers", action="store_true", help="rollout: mask high-norm artefact tokens out")
    e.add_argument("--out", type=Path, metavar="DIR", help="write the overlay PNG (original size) into DIR")
    e.add_argument("--opacity", type=float, default=0.5, help="overlay opacity (default 0.5)")
    e.add_argument(
        "--deletion",
        action="store_true",
        help="sanity check: delete the most relevant patches first and report the area under the class "
        "probability curve, against a random order (classifiers)",
    )
    e.add_argument("--json", action="store_true", help="print one JSON list with the raw maps")
    _precision_flag(e)
    e.add_argument("images", nargs="+", metavar="IMAGE")

    m = sub.add_parser("match", help="DETR set matching: which query answers each ground-truth box, and the loss")
    m.add_argument("--model", default=DEFAULT_DETR, help=f"repo id, repo@revision or folder (default {DEFAULT_DETR})")
    m.add_argument(
        "--gt",
        type=Path,
        required=True,
        help="JSON: [[label, x0, y0, x1, y1], ...] (label = id or name) or COCO annotations",
    )
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.add_argument("image", metavar="IMAGE")

    sub.add_parser(
        "serve", help="start the web app (same flags as `python app.py`, see `serve --help`)", add_help=False
    )

    b = sub.add_parser("bench", help="time our models against timm / transformers on the same weights")
    b.add_argument("--runs", type=int, default=10, help="timed runs per model (median reported)")
    from .bench import BENCHES, DEFAULT  # the names live with the benchmarks

    b.add_argument(
        "--only",
        default=",".join(DEFAULT),
        help=f"comma-separated subset of {', '.join(BENCHES)} (default {','.join(DEFAULT)}); fast, *-fast, webcam "
        "and fast-memory time the fast engine, evaluate the seconds per image of each evaluate protocol "
        "(docs/performance.md)",
    )
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")

    from .evaluate.cli import add_evaluate_parser  # evaluate faithfulness / randomisation / coco

    add_evaluate_parser(sub)

    from .soak.command import add_soak_parser  # soak: a running app under N visitors

    add_soak_parser(sub)

    v = sub.add_parser("convert", help="convert models for --precision fast now (into the engine cache)")
    v.add_argument("models", nargs="+", metavar="MODEL", help="repo id, repo@revision or folder")
    return p


def _precision_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="exact",
        help="exact: fp32 PyTorch (default); fast: optimized runtime at reduced precision (OpenVINO bf16 "
        "on CPUs with bf16 units; gradient methods still run exact)",
    )


def _run_images(
    images: Sequence[str], work: Callable[[str], Any], as_json: bool, rows: Callable[[Any], list[str]], model: str
) -> int:
    """Process each image; print results (table or one JSON list); errors go to stderr, one line each."""
    status = 0
    out: list[dict[str, Any]] = []
    for image in images:
        try:
            result = work(image)
        except (ImageError, ExplainError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            # an option that does not fit this image (e.g. a detection it does not have) is a usage error
            status = max(status, EXIT_MODEL if isinstance(exc, ExplainError) else EXIT_IMAGE)
            out.append({"image": image, "model": model, "error": str(exc)})
            continue
        if as_json:
            out.append(result.to_dict())
        else:
            print("\n".join(rows(result)))
    if as_json:
        json.dump(out, sys.stdout, indent=2)
        print()
    return status


def _check_explain_options(loaded: Any, args: argparse.Namespace) -> None:
    """Options that are wrong for this model whatever the image: one line naming what is allowed (exit 2)."""
    from .explain import registry

    if args.method == "all":
        if args.deletion or args.out is not None or args.mask_outliers:
            raise ExplainError(
                "--method all scores every map itself, writes no overlay and masks no tokens: drop --deletion / "
                "--out / --mask-outliers"
            )
        kinds = [m for m in registry.methods_for(loaded.family) if "target_kind" in m.controls]
        method = kinds[0] if kinds else registry.default_for(loaded.family)
    else:
        method = registry.get(args.method, loaded.family)  # raises ExplainError listing the family's methods
    if args.target not in registry.TARGET_KINDS:
        raise ExplainError(f"--target '{args.target}' is unknown; choose from {', '.join(registry.TARGET_KINDS)}")
    if args.target != "class" and "target_kind" not in method.controls:
        users = [m.name for m in registry.methods_for(loaded.family) if "target_kind" in m.controls]
        raise ExplainError(
            f"--target {args.target} applies to {', '.join(users) or 'no method of this model'}, not {method.name}"
        )
    if args.class_index is not None and loaded.family != "detr":
        n = len(loaded.labels)
        if not 0 <= args.class_index < n:
            raise ExplainError(f"--class {args.class_index} is out of range: {loaded.id} has {n} classes (0..{n - 1})")


def _parse_point(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise VtdemoError(f"--point must be X,Y in pixels, not '{text}'") from None
    return x, y


def _match(loaded: Any, args: argparse.Namespace) -> int:
    from . import pipeline

    try:
        gt_text = args.gt.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VtdemoError(f"cannot read {args.gt}: {exc}") from None
    result = pipeline.match(args.image, loaded, gt_text)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"{result['image']}  ({result['model']}): {len(result['pairs'])} ground-truth boxes matched")
    print(f"  {'object':<22} {'query':>5}  {'predicted':<18} {'cost':>7} {'class':>7} {'L1':>6} {'-GIoU':>6}")
    for pair in result["pairs"]:
        c = pair["cost"]
        print(
            f"  {pair['label']:<22} {pair['query']:>5}  {pair['predicted_label']:<18} {c['total']:7.3f} "
            f"{c['class']:7.3f} {c['l1']:6.3f} {c['giou']:6.3f}"
        )
    losses = result["losses"]
    print(
        f"  loss: classification {losses['classification']:.4f} + 5 x L1 {losses['l1']:.4f} "
        f"+ 2 x GIoU {losses['giou']:.4f} = {losses['total']:.4f}"
    )
    return 0


def serve(argv: Sequence[str]) -> int:
    """`python -m vtdemo serve [app flags]`: the same app as `python app.py`."""
    from .ui.app import create_app
    from .ui.config import from_args

    create_app(from_args(argv)).launch()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # its retry warnings would bury our one-line error
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        if args.command == "bench":
            from .bench import run_bench

            return run_bench(runs=args.runs, only=args.only.split(","), threads=args.threads)
        if args.command == "evaluate":
            from .evaluate.cli import run_evaluate

            return run_evaluate(args)
        if args.command == "soak":
            from .soak.command import run_soak

            return run_soak(args)

        if args.command == "convert":
            from . import pipeline

            for name in args.models:
                loaded = pipeline.preconvert(name, progress=lambda msg: print(msg, file=sys.stderr))
                print(f"{loaded.id}: ready ({pipeline.describe(loaded)})")
            return 0

        from . import pipeline

        loaded = pipeline.load_model(args.model, precision=getattr(args, "precision", "exact"))
        if args.command == "match":
            return _match(loaded, args)
        if args.command == "explain":
            point = _parse_point(args.point)
            _check_explain_options(loaded, args)

            opts = pipeline.ExplainOptions(
                class_index=args.class_index,
                head_fusion=args.head_fusion,
                discard=args.discard,
                start_layer=args.start_layer,
                head=args.head,
                point=point,
                layer=args.layer,
                target_kind=args.target,
                mask_outliers=args.mask_outliers,
            )

            def explain_one(image: str) -> Any:
                if args.method == "all":
                    return pipeline.compare_image(
                        image, loaded, opts, detection=args.detection, threshold=args.threshold
                    )
                result = pipeline.explain(
                    image,
                    loaded,
                    args.method,
                    opts,
                    detection=args.detection,
                    threshold=args.threshold,
                    deletion=args.deletion,
                    input_size=args.input_size,
                    keep_aspect=args.keep_aspect,
                )
                if args.out is not None:
                    output.save_overlay(result, args.out, args.opacity)
                return result

            return _run_images(args.images, explain_one, args.json, output.explain_rows, loaded.id)
        if args.command == "classify":
            if args.top_k < 1:
                raise VtdemoError("--top-k must be at least 1")
            return _run_images(
                args.images,
                lambda im: pipeline.classify(im, loaded, top_k=args.top_k),
                args.json,
                output.classify_rows,
                loaded.id,
            )
        if not 0.0 <= args.threshold <= 1.0:
            raise VtdemoError("--threshold must be between 0 and 1")

        videos = [i for i in args.images if i.lower().endswith(pipeline.VIDEO_SUFFIXES)]
        if args.out is not None and len(videos) != 1:
            raise VtdemoError("--out names one annotated video: pass exactly one clip with it")
        if args.every < 1 or not 64 <= args.live_size <= 1333:
            raise VtdemoError("--every must be at least 1 and --live-size between 64 and 1333")

        def work(image: str) -> Any:
            if image in videos:
                out = args.out or Path(Path(image).stem + ".detected.mp4")
                clip = pipeline.detect_video(
                    image,
                    loaded,
                    out,
                    args.threshold,
                    args.live_size,
                    stride=args.every,
                    progress=output.progress_line,
                    name=Path(image).name,
                )
                logging.getLogger("vtdemo.cli").info("wrote %s", out)
                return clip
            result = pipeline.detect(image, loaded, threshold=args.threshold)
            if args.save is not None:
                saved = output.save_annotated(result, args.save)
                logging.getLogger("vtdemo.cli").info("wrote %s", saved)
            return result

        def rows(result: Any) -> list[str]:
            if isinstance(result, pipeline.VideoResult):
                return output.video_rows(result, args.threshold)
            return output.detect_rows(result, args.threshold)

        return _run_images(args.images, work, args.json, rows, loaded.id)
    except VtdemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except KeyboardInterrupt:
        return 130
