"""Overload: 20 visitors at once, 5 requests each, against the app with its default queue settings.

The app runs in this process on the tiny checkpoints (offline Hub cache), listening on 127.0.0.1 only, with the
defaults: a queue of 32 waiting requests and one model call at a time. Twenty `gradio_client` clients, each in its
own thread and with its own photo (an example photo flipped, rotated, cropped or tinted, so that all twenty differ
and give different results), fire their five requests at once (detect, and classify with ViT or Swin, mixed):
100 requests in flight, three times what the queue holds. The clients run in a process of their own
(tests/support/overload_clients.py), so that the memory measured here is the server's alone. Every request must end as
one of

- completed: the result is the one that photo gives (computed beforehand with `vtdemo.pipeline` and the app's own
  model objects);
- (a completed detection whose files - the box view's photo and masks - can no longer be downloaded after the storm
  counts as lost: its client was told of a result it cannot show);
- refused: the queue was full and the client was told so (`gradio_client` raises `QueueError("Queue is full! Please
  try again.")`; a browser shows "This application is currently busy. Please try again.");

and none as wrong (another photo's result, or any other result) or lost (no answer in time, or any other failure).
Afterwards the app answers a new request correctly, and once the twenty sessions have ended (clients closed: the
server sees their heartbeat stop and `demo.unload` releases their cached runs) the server's memory (RSS after
`gc.collect()`) is back within 10% of where it was once the models were warm.

The counts and the memory figures are printed (`pytest -s` shows them), attached to the report with
`record_property` (e.g. `--junitxml`) and included in every assertion message. Everything is bounded: the storm
has a deadline, every wait a timeout, the threads are joined with a timeout, the clients' process is killed if it
overruns; ~35 s on two idle cores (plus writing the tiny checkpoints, once per test run).
"""

from __future__ import annotations

import ctypes
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageOps

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gradio_client")

from tests.support.apps import launched_app, wait_until  # noqa: E402
from vtdemo import loader, pipeline  # noqa: E402
from vtdemo.soak.plan import METHODS  # noqa: E402  (the endpoints and methods the visitors use)

pytestmark = pytest.mark.slow  # 20 clients against a launched app (~70 s)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
CLIENTS = 20
REQUESTS = 5
THRESHOLD = 0.3  # low enough that every photo has a few detections that tell it from the others
STORM_S = 60.0  # every request has its answer by then, or it counts as lost
SESSION_END_S = 15.0  # the server notices closed clients within this long (heartbeat below)
HEARTBEAT_S = "0.5"  # Gradio's heartbeat interval for this test (default 15 s): closed clients are noticed fast
MEMORY_TOLERANCE = 0.10


# ------------------------------------------------------------------------------------------------- helpers


def rss_mib() -> float | None:
    """This process's resident memory in MiB (Linux /proc; psutil elsewhere if installed; else None)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / 2**20


def settled_rss() -> float | None:
    """RSS after a full garbage collection and, on glibc, after handing freed heap pages back to the system (else
    free memory that the allocator keeps for later would count as used)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return rss_mib()


def variants(folder: Path, n: int) -> list[Path]:
    """n different photos made from the examples, each flipped, rotated, cropped or tinted its own way."""
    sources = [
        Image.open(p).convert("RGB")
        for p in sorted(EXAMPLES.iterdir())
        if p.suffix.lower() in {".png", ".jpg", ".jpeg"}
    ]
    edits = [
        lambda im: im,
        ImageOps.mirror,
        ImageOps.flip,
        lambda im: im.rotate(90, expand=True),
        lambda im: Image.blend(im, Image.new("RGB", im.size, (255, 120, 0)), 0.35),
        lambda im: im.crop((im.width // 8, im.height // 10, im.width, im.height)),
    ]
    out = []
    for i in range(n):
        path = folder / f"visitor {i:02d}.png"
        edits[(i // len(sources)) % len(edits)](sources[i % len(sources)]).save(path)
        out.append(path)
    return out


def plan(i: int) -> list[str]:
    """Client i's five requests: two detections and three classifications (ViT for even i, Swin for odd), in an
    order that differs between clients."""
    classify = "classify_vit" if i % 2 == 0 else "classify_swin"
    base = ["detect", classify, "detect", classify, classify]
    return base[i % REQUESTS :] + base[: i % REQUESTS]


def expected_results(paths: list[Path], repos: dict[str, str]) -> dict[tuple[str, int], tuple]:
    """What each client's photo must give at each endpoint it calls (photo 0: at all three, for the warm-up), from
    direct pipeline calls with the very model objects the app uses (`vtdemo.loader` caches them by repo and device)."""
    models = {family: loader.load(repos[family], "cpu") for family in ("vit", "swin", "detr")}
    out = {}
    for i, path in enumerate(paths):
        for endpoint in sorted(set(plan(i)) | ({"detect", *METHODS} if i == 0 else set())):  # 0: the warm-up
            if endpoint == "detect":
                result = pipeline.detect(str(path), models["detr"], threshold=THRESHOLD)
                out[endpoint, i] = tuple((d.label, d.query, tuple(round(v) for v in d.box)) for d in result.detections)
            else:
                result = pipeline.classify(str(path), models[endpoint.split("_")[1]], top_k=5)
                out[endpoint, i] = tuple((p.label, p.score) for p in result.predictions)
    return out


def identify(endpoint: str, answer) -> tuple:
    """The part of an answer that identifies the photo: detections (class, query, box), or the top 5 with scores."""
    if endpoint == "detect":
        return tuple((row[1], int(row[-1]), tuple(int(v) for v in row[3:7])) for row in answer)
    return tuple((label, score) for label, score in answer)


def same(endpoint: str, got: tuple, want: tuple) -> bool:
    if len(got) != len(want):
        return False
    if endpoint == "detect":  # boxes are rounded to whole pixels: allow the last pixel to differ
        return all(
            g[:2] == w[:2] and all(abs(a - b) <= 1 for a, b in zip(g[2], w[2], strict=True))
            for g, w in zip(got, want, strict=True)
        )
    return all(g[0] == w[0] and abs(g[1] - w[1]) <= 1e-3 for g, w in zip(got, want, strict=True))


def judge(report: dict, mine: int, expected: dict) -> str:
    """completed / refused / wrong (...) / lost (...) for one request as the client saw it."""
    endpoint, status = report["endpoint"], report["status"]
    if status == "refused":
        message = report["message"]
        return "refused" if "queue is full" in message.lower() else f"lost (refused without the message: {message})"
    if status == "timeout":
        return "lost (no answer in time)"
    if status != "ok":
        return f"lost ({report.get('message')})"
    got = identify(endpoint, report["answer"])
    if same(endpoint, got, expected[endpoint, mine]):
        return "completed"
    others = [j for (e, j), want in expected.items() if e == endpoint and j != mine and same(endpoint, got, want)]
    return f"wrong (the result of photo {others[0]})" if others else f"wrong ({got[:2]}...)"


def gone_files(verdict: str, report: dict) -> str:
    """A completed answer whose files cannot be fetched any more is lost to its client."""
    if verdict != "completed":
        return verdict
    import httpx

    for url in report.get("files", []):
        status = httpx.get(url, timeout=10).status_code
        if status != 200:
            return f"lost (its file {url.rsplit('/', 1)[-1]} answers {status})"
    return verdict


def storm(plan: dict, folder: Path) -> dict:
    """Run the visitors (tests/support/overload_clients.py) in a process of their own; returns what they saw."""
    plan_file = folder / "plan.json"
    plan_file.write_text(json.dumps(plan), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.overload_clients", str(plan_file)],
        capture_output=True,
        text=True,
        timeout=plan["deadline_s"] + 90,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"the clients' process failed: {done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def app(tiny_hub):
    # the default queue: 32 waiting, one model call at a time
    with launched_app(tiny_hub, env={"GRADIO_HEARTBEAT_INTERVAL": HEARTBEAT_S}) as (vt, url):
        yield vt, url, tiny_hub.repos


def test_twenty_clients_five_requests_each(app, tmp_path, record_property):
    vt, url, repos = app
    assert url.startswith("http://127.0.0.1:")  # loopback only
    assert vt.services.config.queue_size == 32  # the defaults, untouched
    started = time.perf_counter()
    paths = variants(tmp_path, CLIENTS)
    expected = expected_results(paths, repos)  # also loads the three models (the app shares the objects)
    for endpoint in ("detect", *METHODS):
        results = [want for (e, _), want in expected.items() if e == endpoint]
        assert len(set(results)) == len(results), (
            f"{endpoint}: two photos give the same result (a mix-up would not show)"
        )

    # warm up: one visitor calls every endpoint (at once), and leaves
    warm = storm(
        {
            "url": url,
            "deadline_s": 60,
            "threshold": THRESHOLD,
            "clients": [{"photo": str(paths[0]), "requests": ["detect", "classify_vit", "classify_swin"]}],
            "after": {"photo": str(paths[0]), "requests": []},
        },
        tmp_path,
    )
    warm_outcomes = [judge(r, 0, expected) for r in warm["clients"][0]["outcomes"]]
    assert warm_outcomes == ["completed"] * 3, warm_outcomes
    runs = vt.services.runs
    assert wait_until(lambda: not runs.sessions(), SESSION_END_S), "the warm-up session still holds its runs"
    before = settled_rss()
    released_before = runs.released

    # the storm: 20 visitors, 5 requests each, all at once; then one more visitor
    seen = storm(
        {
            "url": url,
            "deadline_s": STORM_S,
            "threshold": THRESHOLD,
            "clients": [{"photo": str(paths[i]), "requests": plan(i)} for i in range(CLIENTS)],
            "after": {"photo": str(paths[7]), "requests": ["detect", "classify_swin"]},
        },
        tmp_path,
    )
    outcomes = []
    for i, client in enumerate(seen["clients"]):
        reports = client.get("outcomes", [])
        outcomes += [gone_files(judge(r, i, expected), r) for r in reports]
        outcomes += ["lost (the client never reported)"] * (REQUESTS - len(reports))
    counts = dict.fromkeys(("completed", "refused", "wrong", "lost"), 0)
    for outcome in outcomes:
        counts[outcome.split()[0]] += 1
    fresh = [judge(r, 7, expected) for r in seen["after"].get("outcomes", [])]

    # the sessions have ended (the clients closed, their process exited): their runs are released
    sessions = {c["session"] for c in seen["clients"] if "session" in c}
    released = wait_until(lambda: not runs.sessions() & sessions, SESSION_END_S)
    after = settled_rss()
    served = sum(any(r["status"] == "ok" for r in c.get("outcomes", [])) for c in seen["clients"])

    change = (after / before - 1) if before and after else float("nan")
    report = (
        f"{CLIENTS} clients x {REQUESTS} requests: completed {counts['completed']}, refused "
        f"{counts['refused']}, wrong {counts['wrong']}, lost {counts['lost']} (storm {seen['storm_s']:.1f} s); "
        f"server memory (RSS) warm {before or 0:.0f} MiB, after the sessions ended {after or 0:.0f} MiB "
        f"({change:+.1%}); cached runs released as the sessions ended: {runs.released - released_before} "
        f"(of {served} served sessions), none left: {released}; request afterwards: {fresh}; "
        f"test {time.perf_counter() - started:.1f} s"
    )
    print("\n" + report)
    for name, value in counts.items():
        record_property(name, value)
    record_property("rss_warm_mib", round(before or 0, 1))
    record_property("rss_after_mib", round(after or 0, 1))
    record_property("overload_report", report)

    problems = sorted({o for o in outcomes if not o.startswith(("completed", "refused"))})
    assert not seen["hung"], f"{report}; clients still waiting: {seen['hung']}"
    assert counts["wrong"] == 0 and counts["lost"] == 0, f"{report}; {problems[:5]}"
    assert counts["completed"] + counts["refused"] == CLIENTS * REQUESTS, report
    assert counts["completed"] >= CLIENTS, report  # the queue served, not just refused
    assert fresh == ["completed", "completed"], report
    assert released and runs.released - released_before >= served, report
    if before is None or after is None:
        pytest.skip(f"no way to read this process's memory here (no /proc, no psutil); {report}")
    assert after <= before * (1 + MEMORY_TOLERANCE), report
