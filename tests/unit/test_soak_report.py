"""The soak's pure parts on hand-made rows (vtdemo/soak): percentiles, RSS growth, the summary and its targets, how an
answer is judged (ok / busy / failed), the CSV round trip, `--models`, the server's process found by its port, and
the PNG. No app, no network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from PIL import Image

from vtdemo.soak import plan, plot, report, server
from vtdemo.soak.outcome import BUSY, FAILED, OK, judge_answer, judge_error
from vtdemo.soak.report import Request, Sample


def req(endpoint: str, latency: float, outcome: str = OK, start: float = 0.0, expect: str = "result", msg: str = ""):
    return Request(1, 1, "soak", endpoint, endpoint, "m", start, latency, outcome, expect, msg)


def sample(t: float, rss: float, temp: float = 1.0) -> Sample:
    return Sample(t_s=t, rss_mib=rss, open_files=20, threads=10, temp_files=5, temp_mib=temp)


# ------------------------------------------------------------------------------------------------- math


def test_percentiles_interpolate_between_ranks_like_numpy():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]  # sorted: 1 2 3 4 5
    assert report.percentile(xs, 50) == 3.0
    assert report.percentile(xs, 95) == pytest.approx(4.8)  # rank 3.8: 4 + 0.8 x (5 - 4)
    assert report.percentile(xs, 0) == 1.0 and report.percentile(xs, 100) == 5.0
    assert report.percentile([2.5], 95) == 2.5
    assert report.percentile([], 50) is None
    # the same as numpy's default ("linear") on an uneven list
    ys = [0.1, 0.1, 0.2, 0.4, 0.35, 0.9, 2.0]
    assert report.percentile(ys, 95) == pytest.approx(1.67)  # rank 5.7 of 0.1 0.1 0.2 0.35 0.4 0.9 2.0


def test_rss_growth_from_the_first_three_warm_samples_to_the_last_three():
    samples = [sample(0, 500), sample(10, 900), sample(20, 1000), sample(30, 1040), sample(40, 1500), sample(50, 1060),
               sample(60, 1080)]  # fmt: skip
    warm, end = report.rss_warm_and_end(samples, warmup_end_s=20)
    assert warm == 1040  # median of 1000, 1040, 1500; the loads before the warm-up's end do not count
    assert end == 1080  # median of 1500, 1060, 1080: one sample taken mid-request does not decide
    assert report.growth_pct(warm, end) == pytest.approx(100 * 40 / 1040)
    assert report.rss_warm_and_end(samples, warmup_end_s=999) == (None, None)
    assert report.growth_pct(None, 5) is None


def test_slope_is_least_squares():
    assert report.slope_per_s([(0, 1.0), (10, 2.0), (20, 3.0)]) == pytest.approx(0.1)
    assert report.slope_per_s([(5, 1.0)]) is None


def test_summary_counts_and_targets_on_hand_made_rows():
    rows = [req("rerender", x / 10) for x in range(1, 11)]  # 0.1 .. 1.0 s
    rows += [req("classify_vit", 0.5), req("classify_vit", 1.5, BUSY), req("detect", 2.0, FAILED, msg="boom")]
    rows += [req("detect", 0.3, OK, expect="refusal", msg="⚠️ not an image")]
    samples = [sample(t, 1000 + t, temp=2.0 + t / 60) for t in range(0, 130, 10)]
    s = report.summarize(rows, samples, warmup_end_s=30, duration_s=120)
    assert (s.requests, s.completed, s.busy, s.failed) == (14, 12, 1, 1)
    by = {e.key: e for e in s.endpoints}
    assert set(by) == {"rerender", "classify_vit", "detect", "detect (bad input)"}
    assert (by["classify_vit"].completed, by["classify_vit"].busy, by["classify_vit"].p50_s) == (1, 1, 0.5)
    assert by["detect"].failed == 1 and by["detect"].p50_s is None  # latency of completed requests only
    assert by["rerender"].p50_s == pytest.approx(0.55) and by["rerender"].p95_s == pytest.approx(0.955)
    assert s.rss_warm_mib == 1040 and s.rss_end_mib == 1110  # medians of 1030..1050 and of 1100..1120
    assert s.rss_growth_pct == pytest.approx(100 * 70 / 1040)
    assert s.temp_mib_per_hour == pytest.approx(60.0)  # 1 MiB a minute
    assert s.temp_mib_projected == pytest.approx(90.0)  # x 1.5 h, Gradio's longest keep
    assert s.failures == ["1 x boom"]
    verdicts = {t.name.split()[0]: t.passed for t in s.targets}
    assert verdicts == {"no": False, "RSS": True, "temporary": True, "p95": False}
    assert not s.passed
    text = report.text(s)
    assert "[FAIL] p95 of a threshold change <= 0.5 s: p95 0.955 s over 10 changes" in text
    assert text.splitlines()[-1] == "FAIL"


def test_every_target_met_passes_and_missing_measures_fail():
    rows = [req("rerender", 0.1), req("classify_vit", 3.0)]
    samples = [sample(t, 1000) for t in range(0, 60, 5)]
    s = report.summarize(rows, samples, warmup_end_s=10, duration_s=60)
    assert s.passed, report.text(s)
    unmeasured = report.summarize([req("classify_vit", 3.0)], [], warmup_end_s=10, duration_s=60)
    assert not unmeasured.passed
    failed = {t.detail for t in unmeasured.targets if not t.passed}
    assert failed == {"not measured (no samples)", "no threshold change"}


def test_csv_round_trip(tmp_path):
    rows = [req("detect", 0.123456, FAILED, start=1.5, msg='a, "quoted" line'), req("rerender", 0.01)]
    samples = [sample(0, 1000.5), sample(5, 1001)]
    report.write_csv(tmp_path / "r.csv", rows, Request)
    report.write_csv(tmp_path / "s.csv", samples, Sample)
    back = report.read_requests(tmp_path / "r.csv")
    assert [(r.endpoint, r.outcome, r.message) for r in back] == [(r.endpoint, r.outcome, r.message) for r in rows]
    assert back[0].latency_s == pytest.approx(0.1235)
    assert report.read_samples(tmp_path / "s.csv") == samples


# ------------------------------------------------------------------------------------------------- outcomes


class QueueError(Exception):  # the class name is what is compared (no gradio_client import)
    pass


class AppError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def test_answers_are_judged():
    result = [{"label": "cat"}, None, "", "**Attention rollout** for cat"]
    assert judge_answer(result, "result").outcome == OK
    refusal = [{}, None, "", "⚠️ notes.jpg: unsupported format (text or HTML, not an image)"]
    assert judge_answer(refusal, "refusal") == judge_answer(refusal, "refusal").__class__(OK, refusal[3])
    assert judge_answer(refusal, "result").outcome == FAILED  # a warning on a valid request
    assert judge_answer(result, "refusal").outcome == FAILED  # a bad input accepted
    crash = [None, "⚠️ Unexpected error (KeyError: 'x'). The app keeps running; please report this."]
    assert judge_answer(crash, "refusal").outcome == FAILED
    from vtdemo.loader import BUSY as LOADER_BUSY

    assert judge_answer([None, f"⚠️ {LOADER_BUSY}"], "result").outcome == BUSY


def test_errors_are_judged():
    assert judge_error(QueueError("Queue is full! Please try again."), "result").outcome == BUSY
    assert judge_error(TimeoutError(), "result", 180).message == "no answer in 180 s"
    assert judge_error(AppError("the image is too large"), "refusal").outcome == OK
    assert judge_error(AppError("the image is too large"), "result").outcome == FAILED
    assert judge_error(AppError("Error"), "refusal").outcome == FAILED  # Gradio's bare "Error" says nothing
    assert judge_error(KeyError("process_streaming"), "result").message == "KeyError: 'process_streaming'"


# ------------------------------------------------------------------------------------------------- plan, server, plot


def test_models_by_family():
    defaults = {"vit": "a/vit", "swin": "a/swin", "detr": "a/detr"}
    m = plan.parse_models(["vit=x/one", "x/two", "x/swin-t", "detr=x/d", "x/one"], defaults, {"vit": ["x/two"]})
    assert (m.vit, m.swin, m.detr) == (["x/one", "x/two"], ["x/swin-t"], ["x/d"])
    assert plan.parse_models([], defaults).all() == [("vit", "a/vit"), ("swin", "a/swin"), ("detr", "a/detr")]
    with pytest.raises(ValueError, match="family=repo"):
        plan.parse_models(["yolo=x/y"], defaults)


def test_the_mix_is_seeded_and_views_need_a_result():
    import random

    state = plan.VisitorState(model={})
    draws = [plan.choose(random.Random(3), state) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    rng = random.Random(0)
    seen = {plan.choose(rng, state)[0] for _ in range(500)}
    assert not seen & {"explain", "compare", "threshold", "attention"}  # nothing shown yet: make the result first
    state.classified = {"vit": ["cat"], "swin": ["cat"]}
    state.detected = True
    seen = {plan.choose(rng, state)[0] for _ in range(500)}
    assert {"explain", "threshold", "webcam", "switch_model", *plan.BAD_INPUTS} <= seen


def test_the_server_is_found_by_its_port_and_read_from_proc(tmp_path):
    if not Path("/proc/self/status").exists():
        pytest.skip("Linux /proc only")
    import os

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert server.find_pid(sock.getsockname()[1]) == os.getpid()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.bin").write_bytes(b"x" * 2048)
    (tmp_path / "g.txt").write_bytes(b"y" * 1024)
    s = server.sample(os.getpid(), tmp_path, 1.0)
    assert (s.temp_files, s.temp_mib) == (2, 3072 / 2**20)
    assert s.rss_mib > 10 and s.open_files > 2 and s.threads >= 1


def test_the_png_is_drawn(tmp_path):
    rows = [req("rerender", 0.05 + i / 100, start=i) for i in range(30)] + [req("detect", 3.0, FAILED, start=10)]
    samples = [sample(t, 1000 + t) for t in range(0, 60, 5)]
    s = report.summarize(rows, samples, warmup_end_s=10, duration_s=60)
    plot.draw_report(tmp_path / "soak.png", rows, samples, s, "test")
    with Image.open(tmp_path / "soak.png") as im:
        assert im.size == (plot.WIDTH, plot.TOP + 4 * plot.PANEL_H)
        assert len(set(im.convert("RGB").getdata())) > 5  # something was drawn
