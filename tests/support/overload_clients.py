"""The visitors of tests/app/test_overload.py: N `gradio_client` clients in threads, each firing its requests at once.

Run in a process of its own (`python -m tests.support.overload_clients PLAN.json`, from the repository root), so
that the server's memory, measured in the test's process, holds nothing of the clients. PLAN.json: {"url",
"deadline_s", "threshold", "clients": [{"photo": path, "requests": [endpoint, ...]}, ...], "after": {"photo",
"requests"}}. Prints one JSON object: per client and request the outcome as seen by the client ("ok" with the
answer's identifying part, "refused" with the message, "timeout", or "error" with the exception), the session
hashes, and the same for one client that comes after the storm. The test judges the answers. Every wait is bounded
by the deadline; threads are joined with a timeout.
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import threading
import time
from typing import Any

from gradio_client import Client, handle_file
from gradio_client.utils import QueueError

from vtdemo.soak.plan import METHODS, classify_args, detect_args  # the arguments the soak's visitors send too


def submit(client: Client, endpoint: str, photo: str, threshold: float):
    """Each endpoint's request with the app's default model ("" picks the picker's model)."""
    if endpoint == "detect":
        return client.submit(*detect_args(handle_file(photo), "", threshold), api_name="/detect")
    return client.submit(*classify_args(handle_file(photo), "", METHODS[endpoint]), api_name=f"/{endpoint}")


def answer(endpoint: str, output: Any) -> Any:
    """The part of an answer that identifies the photo: the detections table, or the top 5 with scores."""
    if endpoint == "detect":
        return output[2]["data"]
    return [[c["label"], c["confidence"]] for c in output[0]["confidences"]]


def files(endpoint: str, output: Any) -> list[str]:
    """The URLs of the files an answer points to (the box view's photo and masks), to fetch after the storm."""
    if endpoint != "detect":
        return []
    view = output[0].get("value", output[0]) if isinstance(output[0], dict) else {}
    return [view["image"]["url"]] + [a["image"]["url"] for a in view.get("annotations", [])] if view else []


def outcome(endpoint: str, job: Any, deadline: float) -> dict[str, Any]:
    error = job if isinstance(job, BaseException) else None
    if error is None:
        try:
            output = job.result(timeout=max(0.1, deadline - time.monotonic()))
            return {
                "endpoint": endpoint,
                "status": "ok",
                "answer": answer(endpoint, output),
                "files": files(endpoint, output),
            }
        except BaseException as exc:  # noqa: BLE001 - every way of failing is reported
            error = exc
    if isinstance(error, QueueError):
        return {"endpoint": endpoint, "status": "refused", "message": str(error)}
    if isinstance(error, (concurrent.futures.TimeoutError, TimeoutError)):
        return {"endpoint": endpoint, "status": "timeout"}
    return {"endpoint": endpoint, "status": "error", "message": f"{type(error).__name__}: {str(error)[:300]}"}


def visit(
    url: str,
    photo: str,
    requests: list[str],
    threshold: float,
    deadline: float,
    barrier: threading.Barrier | None,
    report: dict[str, Any],
) -> None:
    try:
        client = Client(url, verbose=False, download_files=False)
    except Exception as exc:  # noqa: BLE001
        report["outcomes"] = [
            {"endpoint": e, "status": "error", "message": f"no connection: {exc!r}"} for e in requests
        ]
        if barrier is not None:
            barrier.abort()
        return
    report["session"] = client.session_hash
    try:
        if barrier is not None:
            try:
                barrier.wait()  # everybody fires at once
            except threading.BrokenBarrierError:
                pass
        jobs = []
        for endpoint in requests:
            try:
                jobs.append(submit(client, endpoint, photo, threshold))
            except Exception as exc:  # noqa: BLE001 - e.g. QueueError at submission: reported below
                jobs.append(exc)
        report["outcomes"] = [outcome(e, job, deadline) for e, job in zip(requests, jobs, strict=True)]
    finally:
        client.close()  # the session ends: the server sees the heartbeat stop


def main(plan_path: str) -> None:
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    url, threshold = plan["url"], plan["threshold"]
    deadline = time.monotonic() + plan["deadline_s"]
    reports: list[dict[str, Any]] = [{} for _ in plan["clients"]]
    barrier = threading.Barrier(len(plan["clients"]), timeout=30)
    threads = [
        threading.Thread(
            target=visit,
            daemon=True,
            name=f"visitor-{i}",
            args=(url, c["photo"], c["requests"], threshold, deadline, barrier, reports[i]),
        )
        for i, c in enumerate(plan["clients"])
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.1, deadline + 5 - time.monotonic()))
    storm_s = time.perf_counter() - started
    hung = [t.name for t in threads if t.is_alive()]
    after: dict[str, Any] = {}
    if not hung:  # one more visitor, once the storm is over
        visit(url, plan["after"]["photo"], plan["after"]["requests"], threshold, time.monotonic() + 60, None, after)
    print(json.dumps({"clients": reports, "after": after, "storm_s": storm_s, "hung": hung}))
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
