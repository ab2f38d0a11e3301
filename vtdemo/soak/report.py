"""The soak's records, their CSV files, the summary and the targets (pure Python, no network, no plotting).

Targets (issue 21, docs/deployment.md "Soak test"): no failures other than busy; the server's RSS at the end within
+10 % of its RSS once warm; temporary files bounded (the most seen, and the projected steady state of Gradio's cache,
under a limit); the p95 latency of a DETR threshold change (`/rerender`, a view of the cached run) at most 0.5 s.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .outcome import BUSY, FAILED, OK

THRESHOLD_ENDPOINT = "rerender"  # a DETR threshold change: re-filters the cached run, no model call
#: Gradio deletes the app's cache files older than an hour, checking every 30 minutes (`delete_cache=(1800, 3600)`
#: in vtdemo/ui/app.py): a file lives at most 1.5 h, so the cache's steady state is about 1.5 h of writes.
CACHE_LIFETIME_S = 5400.0


@dataclass
class Request:
    visitor: int
    session: int  # the visitor's n-th session (a new Client)
    phase: str  # warmup / soak
    action: str  # what the visitor meant to do (classify, switch_model, threshold, bad_text_jpg, ...)
    endpoint: str  # the api_name called ("connect" for opening a session)
    model: str
    start_s: float  # seconds since the soak started
    latency_s: float
    outcome: str  # ok / busy / failed
    expect: str = "result"  # result / refusal (a bad input)
    message: str = ""

    @property
    def key(self) -> str:
        """How the summary groups requests: the endpoint, bad inputs apart."""
        return self.endpoint if self.expect == "result" else f"{self.endpoint} (bad input)"


@dataclass
class Sample:
    t_s: float  # seconds since the soak started
    rss_mib: float
    open_files: int  # the server's open file descriptors (files, sockets, pipes)
    threads: int
    temp_files: int
    temp_mib: float


@dataclass
class EndpointStats:
    key: str
    completed: int
    busy: int
    failed: int
    p50_s: float | None  # latency of the completed requests
    p95_s: float | None
    max_s: float | None


@dataclass
class Target:
    name: str
    passed: bool
    detail: str


@dataclass
class Summary:
    requests: int
    completed: int
    busy: int
    failed: int
    endpoints: list[EndpointStats]
    rss_warm_mib: float | None
    rss_end_mib: float | None
    rss_max_mib: float | None
    rss_growth_pct: float | None
    open_files_max: int | None
    temp_files_max: int | None
    temp_mib_max: float | None
    temp_mib_per_hour: float | None  # growth after warm-up (least squares)
    temp_mib_projected: float | None  # steady state of Gradio's cache at that rate
    warmup_end_s: float
    duration_s: float
    targets: list[Target] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the distinct failure messages, most frequent first

    @property
    def passed(self) -> bool:
        return bool(self.targets) and all(t.passed for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


# ------------------------------------------------------------------------------------------------- math


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def growth_pct(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before <= 0:
        return None
    return 100.0 * (after - before) / before


def slope_per_s(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, y) points; None for fewer than two distinct times."""
    if len(points) < 2:
        return None
    mt = statistics.fmean(t for t, _ in points)
    my = statistics.fmean(y for _, y in points)
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mt) * (y - my) for t, y in points) / var


def rss_warm_and_end(samples: Sequence[Sample], warmup_end_s: float) -> tuple[float | None, float | None]:
    """RSS once warm (the median of the first three samples at or after the warm-up's end) and at the end (the median
    of the last three), so that one sample taken in the middle of a request decides neither."""
    after = [s for s in samples if s.t_s >= warmup_end_s]
    if not after:
        return None, None
    return statistics.median(s.rss_mib for s in after[:3]), statistics.median(s.rss_mib for s in after[-3:])


def endpoint_stats(requests: Iterable[Request]) -> list[EndpointStats]:
    by: dict[str, list[Request]] = {}
    for r in requests:
        by.setdefault(r.key, []).append(r)
    out = []
    for key in sorted(by):
        rows = by[key]
        done = [r.latency_s for r in rows if r.outcome == OK]
        out.append(
            EndpointStats(
                key=key,
                completed=len(done),
                busy=sum(r.outcome == BUSY for r in rows),
                failed=sum(r.outcome == FAILED for r in rows),
                p50_s=percentile(done, 50),
                p95_s=percentile(done, 95),
                max_s=max(done) if done else None,
            )
        )
    return out


def summarize(
    requests: Sequence[Request],
    samples: Sequence[Sample],
    warmup_end_s: float,
    duration_s: float,
    *,
    max_rss_growth_pct: float = 10.0,
    max_temp_mib: float = 1024.0,
    max_threshold_p95_s: float = 0.5,
) -> Summary:
    stats = endpoint_stats(requests)
    warm, end = rss_warm_and_end(samples, warmup_end_s)
    growth = growth_pct(warm, end)
    after = [(s.t_s, s.temp_mib) for s in samples if s.t_s >= warmup_end_s]
    rate = slope_per_s(after)
    temp_max = max((s.temp_mib for s in samples), default=None)
    projected = None if rate is None else max(0.0, rate) * CACHE_LIFETIME_S
    failures = [r.message or "(no message)" for r in requests if r.outcome == FAILED]
    counted = sorted(set(failures), key=lambda m: (-failures.count(m), m))
    s = Summary(
        requests=len(requests),
        completed=sum(r.outcome == OK for r in requests),
        busy=sum(r.outcome == BUSY for r in requests),
        failed=len(failures),
        endpoints=stats,
        rss_warm_mib=warm,
        rss_end_mib=end,
        rss_max_mib=max((x.rss_mib for x in samples), default=None),
        rss_growth_pct=growth,
        open_files_max=max((x.open_files for x in samples), default=None),
        temp_files_max=max((x.temp_files for x in samples), default=None),
        temp_mib_max=temp_max,
        temp_mib_per_hour=None if rate is None else rate * 3600.0,
        temp_mib_projected=projected,
        warmup_end_s=warmup_end_s,
        duration_s=duration_s,
        failures=[f"{failures.count(m)} x {m}" for m in counted],
    )
    s.targets = targets(s, max_rss_growth_pct, max_temp_mib, max_threshold_p95_s)
    return s


def targets(s: Summary, max_rss_growth_pct: float, max_temp_mib: float, max_threshold_p95_s: float) -> list[Target]:
    out = [Target("no failures other than busy", s.failed == 0, f"{s.failed} failed of {s.requests}")]
    if s.rss_growth_pct is None:
        out.append(Target(f"RSS within +{max_rss_growth_pct:g} % after warm-up", False, "not measured (no samples)"))
    else:
        out.append(
            Target(
                f"RSS within +{max_rss_growth_pct:g} % after warm-up",
                s.rss_growth_pct <= max_rss_growth_pct,
                f"{s.rss_warm_mib:.0f} -> {s.rss_end_mib:.0f} MiB ({s.rss_growth_pct:+.1f} %)",
            )
        )
    if s.temp_mib_max is None:
        out.append(Target(f"temporary files under {max_temp_mib:g} MiB", False, "not measured (no samples)"))
    else:
        projected = s.temp_mib_projected or 0.0
        out.append(
            Target(
                f"temporary files under {max_temp_mib:g} MiB",
                max(s.temp_mib_max, projected) <= max_temp_mib,
                f"at most {s.temp_mib_max:.1f} MiB in {s.temp_files_max} files; growing "
                f"{(s.temp_mib_per_hour or 0.0):.1f} MiB/h after warm-up, steady state ~{projected:.0f} MiB "
                f"(Gradio keeps a file up to {CACHE_LIFETIME_S / 3600:g} h)",
            )
        )
    threshold = next((e for e in s.endpoints if e.key == THRESHOLD_ENDPOINT), None)
    if threshold is None or threshold.p95_s is None:
        out.append(Target(f"p95 of a threshold change <= {max_threshold_p95_s:g} s", False, "no threshold change"))
    else:
        out.append(
            Target(
                f"p95 of a threshold change <= {max_threshold_p95_s:g} s",
                threshold.p95_s <= max_threshold_p95_s,
                f"p95 {threshold.p95_s:.3f} s over {threshold.completed} changes",
            )
        )
    return out


# ------------------------------------------------------------------------------------------------- files


def write_csv(path: Path, rows: Sequence[Request] | Sequence[Sample], kind: type) -> None:
    names = [f.name for f in fields(kind)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        for row in rows:
            d = asdict(row)
            w.writerow({k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()})


def read_requests(path: Path) -> list[Request]:
    with open(path, newline="", encoding="utf-8") as f:
        return [
            Request(
                visitor=int(r["visitor"]),
                session=int(r["session"]),
                phase=r["phase"],
                action=r["action"],
                endpoint=r["endpoint"],
                model=r["model"],
                start_s=float(r["start_s"]),
                latency_s=float(r["latency_s"]),
                outcome=r["outcome"],
                expect=r["expect"],
                message=r["message"],
            )
            for r in csv.DictReader(f)
        ]


def read_samples(path: Path) -> list[Sample]:
    with open(path, newline="", encoding="utf-8") as f:
        return [
            Sample(
                t_s=float(r["t_s"]),
                rss_mib=float(r["rss_mib"]),
                open_files=int(r["open_files"]),
                threads=int(r["threads"]),
                temp_files=int(r["temp_files"]),
                temp_mib=float(r["temp_mib"]),
            )
            for r in csv.DictReader(f)
        ]


def _fmt(v: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def text(s: Summary, title: str = "") -> str:
    """The printed summary: a table per endpoint, the server's figures, the targets and the verdict."""
    lines = [title] if title else []
    lines.append(
        f"{s.requests} requests in {s.duration_s / 60:.1f} min (warm-up {s.warmup_end_s:.0f} s): "
        f"{s.completed} completed, {s.busy} busy, {s.failed} failed"
    )
    lines.append(f"  {'endpoint':<30} {'done':>6} {'busy':>5} {'failed':>6} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
    for e in s.endpoints:
        lines.append(
            f"  {e.key:<30} {e.completed:>6} {e.busy:>5} {e.failed:>6} {_fmt(e.p50_s):>7} {_fmt(e.p95_s):>7} "
            f"{_fmt(e.max_s):>7}"
        )
    lines.append(
        f"server RSS: {_fmt(s.rss_warm_mib, ' MiB', 0)} once warm, {_fmt(s.rss_end_mib, ' MiB', 0)} at the end "
        f"({_fmt(s.rss_growth_pct, ' %', 1)}), at most {_fmt(s.rss_max_mib, ' MiB', 0)}; open files at most "
        f"{s.open_files_max if s.open_files_max is not None else '-'}; temporary files at most "
        f"{s.temp_files_max if s.temp_files_max is not None else '-'} ({_fmt(s.temp_mib_max, ' MiB', 1)})"
    )
    for m in s.failures[:10]:
        lines.append(f"  failed: {m}")
    for t in s.targets:
        lines.append(f"  [{'PASS' if t.passed else 'FAIL'}] {t.name}: {t.detail}")
    lines.append("PASS" if s.passed else "FAIL")
    return "\n".join(lines)
