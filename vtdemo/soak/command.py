"""`python -m vtdemo soak --url URL [--minutes M] [--visitors N] [--out DIR] [--models ...]`: the subcommand.

Order: connect and read the app's API (its default models and methods), find the server's process (`--pid`, else
the process listening on the URL's local port), start the sampler, run the warm-up tour (every model once), let the
N visitors in until the deadline, then write requests.csv, samples.csv, soak.png and summary.json into `--out`, and
print the summary. Exit status 0 when every target is met, 1 when one is not, 2 when the soak could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import plan, plot, report, server
from .report import Request

EXIT_FAIL, EXIT_USAGE = 1, 2


def add_soak_parser(sub: Any) -> None:
    s = sub.add_parser(
        "soak",
        help="drive a running app with N visitors like real traffic; report latency, busy / failed requests and "
        "the server's memory, open files and temporary files (CSV + PNG)",
    )
    s.add_argument("--url", required=True, help="the running app, e.g. http://127.0.0.1:7860/")
    s.add_argument("--minutes", type=float, default=30.0, help="how long the visitors stay (default 30)")
    s.add_argument("--visitors", type=int, default=8, help="visitors at once, each a session of its own (default 8)")
    s.add_argument("--out", type=Path, default=Path("soak-report"), help="folder for the report (default soak-report)")
    s.add_argument(
        "--models",
        nargs="+",
        default=[],
        metavar="[FAMILY=]REPO",
        help="repos the visitors switch among, e.g. vit=timm/deit_small_patch16_224.fb_in1k (family vit, swin or "
        "detr; guessed from the app's lists or the name when left out); a family not named uses the app's default",
    )
    s.add_argument("--pid", type=int, help="the server's process id (default: the process listening on the URL's port)")
    s.add_argument(
        "--temp-dir",
        type=Path,
        help="Gradio's temporary folder (default: the server's GRADIO_TEMP_DIR, else <tmp>/gradio)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of the visitors' choices (default 0)")
    s.add_argument("--think", type=float, default=4.0, help="mean think time between actions, seconds (default 4)")
    s.add_argument(
        "--warmup", type=float, help="warm-up minutes after the tour of the models (default: 10 %% of --minutes)"
    )
    s.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples of the server (default 5)")
    s.add_argument("--timeout", type=float, default=180.0, help="seconds a request may take before it counts as failed")
    s.add_argument(
        "--max-rss-growth", type=float, default=10.0, help="target: RSS growth after warm-up, %% (default 10)"
    )
    s.add_argument("--max-temp-mb", type=float, default=1024.0, help="target: temporary files, MiB (default 1024)")
    s.add_argument("--max-threshold-p95", type=float, default=0.5, help="target: p95 of a threshold change, s (0.5)")


def app_api(url: str) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]], list[Any]]:
    """The app's default model per family, its explanation methods, its suggested models, and the defaults of the
    webcam's parameters after the first four (frame, threshold, live size, model), from its API."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    try:
        info = client.view_api(return_format="dict", print_info=False)
    finally:
        client.close()
    endpoints = info["named_endpoints"]

    def param(endpoint: str, name: str) -> dict[str, Any]:
        return next(p for p in endpoints[endpoint]["parameters"] if p["parameter_name"] == name)

    defaults, methods, choices = {}, {}, {}
    for family, endpoint in (("vit", "/classify_vit"), ("swin", "/classify_swin"), ("detr", "/detect")):
        model = param(endpoint, "model_id")
        defaults[family] = model["parameter_default"]
        choices[family] = list(model.get("type", {}).get("enum", []))
        if family != "detr":
            methods[family] = list(param(endpoint, "method")["type"]["enum"])
    webcam_extra = [p.get("parameter_default") for p in endpoints["/webcam"]["parameters"][4:]]
    return defaults, methods, choices, webcam_extra


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def prepare_inputs(work: Path, photos: list[Path]) -> tuple[Path, Path]:
    """The bad files: a text file named .jpg and a truncated JPEG (the first 2 KB of a photo saved as JPEG)."""
    from PIL import Image

    text = work / "notes.jpg"
    text.write_text("these are notes, not a photo\n", encoding="utf-8")
    full = work / "full.jpg"
    Image.open(photos[0]).convert("RGB").save(full, quality=90)
    truncated = work / "cut-off.jpg"
    truncated.write_bytes(full.read_bytes()[:2048])
    full.unlink()
    return text, truncated


def run_soak(args: argparse.Namespace) -> int:
    from ..assets import example_photos
    from .visitor import Setup, Visitor, tour

    if args.minutes <= 0 or args.visitors < 1 or args.sample_every <= 0 or args.timeout <= 0 or args.think < 0:
        print(
            "error: --minutes, --sample-every and --timeout must be > 0, --visitors >= 1, --think >= 0", file=sys.stderr
        )
        return EXIT_USAGE
    url = args.url if args.url.endswith("/") else args.url + "/"
    try:
        defaults, methods, choices, webcam_extra = app_api(url)
        models = plan.parse_models(args.models, defaults, choices)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - no app there, or not this app
        print(f"error: cannot read the app's API at {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    pid = args.pid
    port = urlparse(url).port
    if pid is None and urlparse(url).hostname in ("127.0.0.1", "localhost", "0.0.0.0", "::1") and port:
        pid = server.find_pid(port)
    temp_dir = args.temp_dir or server.temp_dir_of(pid)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    clock = lambda: time.monotonic() - t0  # noqa: E731
    records: list[Request] = []
    lock = threading.Lock()

    def record(r: Request) -> None:
        with lock:
            records.append(r)

    sampler = None
    if pid is None:
        print(
            "warning: the server's process was not found (pass --pid): memory and files are not sampled",
            file=sys.stderr,
        )
    else:
        sampler = server.Sampler(pid, temp_dir, args.sample_every, clock)
        sampler.start()
    print(
        f"soak: {args.visitors} visitors for {args.minutes:g} min against {url} (server pid {pid or '?'}, "
        f"temporary files in {temp_dir}); models: {', '.join(m for _, m in models.all())}",
        file=sys.stderr,
    )
    work = Path(tempfile.mkdtemp(prefix="vtdemo-soak-"))
    try:
        photos = example_photos()
        bad_text, bad_truncated = prepare_inputs(work, photos)
        frames = work / "frames"
        frames.mkdir()
        setup = Setup(
            url=url,
            models=models,
            methods=methods,
            webcam_extra=webcam_extra,
            photos=photos,
            bad_text=bad_text,
            bad_truncated=bad_truncated,
            frames=frames,
            think_s=args.think,
            timeout_s=args.timeout,
            warmup_end_s=float("inf"),  # the tour is warm-up; set once it is over
            clock=clock,
            record=record,
        )
        tour(setup, args.seed)
        warmup_min = args.warmup if args.warmup is not None else 0.1 * args.minutes
        start = clock()
        setup.warmup_end_s = start + warmup_min * 60
        deadline = start + args.minutes * 60
        visitors = [Visitor(setup, i + 1, args.seed, deadline) for i in range(args.visitors)]
        for v in visitors:
            v.start()
        for v in visitors:
            v.join(timeout=max(1.0, deadline - clock()) + args.timeout * 10 + 60)
        hung = [v.name for v in visitors if v.is_alive()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if sampler is not None:
        sampler.stop()
    duration = clock()
    samples = sampler.samples if sampler is not None else []
    with lock:
        rows = sorted(records, key=lambda r: r.start_s)
    summary = report.summarize(
        rows,
        samples,
        setup.warmup_end_s,
        duration,
        max_rss_growth_pct=args.max_rss_growth,
        max_temp_mib=args.max_temp_mb,
        max_threshold_p95_s=args.max_threshold_p95,
    )
    if sampler is not None and sampler.error:
        summary.targets.append(report.Target("the server kept running", False, sampler.error))
    if hung:
        summary.targets.append(report.Target("every visitor finished", False, f"still running: {', '.join(hung)}"))
    title = (
        f"vtdemo soak: {args.visitors} visitors, {args.minutes:g} min, {cpu_name()} ({os.cpu_count()} CPUs), "
        f"seed {args.seed}"
    )
    report.write_csv(out / "requests.csv", rows, Request)
    report.write_csv(out / "samples.csv", samples, report.Sample)
    plot.draw_report(out / "soak.png", rows, samples, summary, title)
    meta = {
        "title": title,
        "url": url,
        "pid": pid,
        "temp_dir": str(temp_dir),
        "models": models.all(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (out / "summary.json").write_text(json.dumps({**summary.to_dict(), **meta}, indent=2), encoding="utf-8")
    text = report.text(summary, title)
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"report: {out}/requests.csv, samples.csv, soak.png, summary.json, summary.txt")
    return 0 if summary.passed else EXIT_FAIL
