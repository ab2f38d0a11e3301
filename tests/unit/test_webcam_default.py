"""The webcam's default model (issue 23 item 3): whichever of the configured DETR and RT-DETR is faster on this
machine, measured once on the first frame that needs it, only among the models already on the server, and said in
one line. The timings are injected here, so the verdicts are deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from vtdemo.ui.webcam_default import Verdict, WebcamDefault, faster, time_frame

DETR, RTDETR = "facebook/detr-resnet-50", "PekingU/rtdetr_r18vd"
FRAME = np.zeros((48, 64, 3), np.uint8)


class Loaded:
    def __init__(self, model_id: str) -> None:
        self.id = model_id


def chooser(timings: dict[str, float], here=(DETR, RTDETR)):
    """A WebcamDefault over (DETR, RT-DETR) whose timer reads `timings` and records its calls; `here`: on disk."""
    calls: list[tuple[str, int]] = []
    loads: list[str] = []

    def timer(loaded, frame, size):
        calls.append((loaded.id, size))
        assert frame is FRAME
        return timings[loaded.id]

    def load(model_id):
        loads.append(model_id)
        return Loaded(model_id)

    default = WebcamDefault([DETR, RTDETR], lambda m: m in here, timer)
    return default, load, calls, loads


def test_the_faster_detector_is_the_default_and_a_tie_keeps_the_configured_detr():
    assert faster({DETR: 0.140, RTDETR: 0.095}, [DETR, RTDETR]) == RTDETR
    assert faster({DETR: 0.080, RTDETR: 0.095}, [DETR, RTDETR]) == DETR
    assert faster({DETR: 0.1, RTDETR: 0.1}, [DETR, RTDETR]) == DETR
    assert faster({RTDETR: 0.1, DETR: 0.1}, [DETR, RTDETR]) == DETR  # the order decides, not the dict's
    with pytest.raises(ValueError):
        faster({}, [DETR])


def test_measured_once_at_first_use_and_said_in_one_line():
    default, load, calls, loads = chooser({DETR: 0.140, RTDETR: 0.095})
    verdict = default.choose(load, FRAME, 320)
    assert verdict.chosen == RTDETR and verdict.measured
    assert verdict.text() == (
        f"Default: {RTDETR} — on this machine 95 ms per frame vs {DETR} 140 ms (measured at first use)"
    )
    assert calls == [(DETR, 320), (RTDETR, 320)] and loads == [DETR, RTDETR]
    for _ in range(3):  # kept in the process: no second measurement
        assert default.choose(load, FRAME, 320) is verdict
    assert len(calls) == 2
    # DETR's time depends on its input size: another size is measured once too
    assert default.choose(load, FRAME, 256).chosen == RTDETR and calls[2:] == [(DETR, 256), (RTDETR, 256)]


def test_detr_wins_when_it_is_faster_here():
    default, load, _, _ = chooser({DETR: 0.060, RTDETR: 0.095})
    verdict = default.choose(load, FRAME, 320)
    assert verdict.chosen == DETR
    assert verdict.text() == (
        f"Default: {DETR} — on this machine 60 ms per frame vs {RTDETR} 95 ms (measured at first use)"
    )


def test_nothing_is_downloaded_or_timed_to_compare():
    """Only DETR on the server: it is the default, nothing is loaded or timed for the comparison, and nothing is kept
    (once RT-DETR arrives, e.g. loaded in the Detect tab, the next frame compares them)."""
    on_disk = {DETR}
    default, load, calls, loads = chooser({DETR: 0.140, RTDETR: 0.095}, here=on_disk)
    verdict = default.choose(load, FRAME, 320)
    assert verdict == Verdict(DETR, why=verdict.why) and not verdict.measured
    assert calls == [] and loads == [] and default.verdicts == {}
    assert verdict.text() == (
        f"Default: {DETR} ({RTDETR} is not on this server, so nothing was compared (nothing is downloaded just to "
        "measure))"
    )
    on_disk.add(RTDETR)
    assert default.choose(load, FRAME, 320).chosen == RTDETR and len(calls) == 2


def test_with_neither_on_the_server_the_configured_detr_is_loaded_as_before():
    default, load, calls, _ = chooser({}, here=())
    assert default.choose(load, FRAME, 320).chosen == DETR and calls == []


def test_one_configured_detector_is_no_comparison():
    default = WebcamDefault([DETR, DETR], lambda m: True, lambda *a: pytest.fail("timed"))
    verdict = default.choose(Loaded, FRAME, 320)
    assert verdict.chosen == DETR and verdict.why == "the one configured detector"


def test_time_frame_warms_up_then_keeps_the_best_call(monkeypatch):
    """One warm-up call (a fast engine compiles on its first), then the best of RUNS timed calls."""
    from vtdemo.ui import webcam_default

    seen: list[float] = []
    clock = iter([0.0, 0.5, 1.0, 1.2])  # timed calls: 0.5 s, then 0.2 s
    monkeypatch.setattr(webcam_default.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(webcam_default.pipeline, "detect_frame", lambda *args: seen.append(args[3]))
    assert time_frame(Loaded(DETR), FRAME, 320) == pytest.approx(0.2)
    assert len(seen) == 1 + webcam_default.RUNS == 3


def test_a_candidate_that_cannot_run_is_left_out_and_tried_again_later():
    """No room for RT-DETR beside DETR (the loader's BusyError): the webcam runs DETR, nothing is kept, and the next
    frame compares them once both can run."""
    from vtdemo.errors import BusyError

    default, load, calls, _ = chooser({DETR: 0.140, RTDETR: 0.095})
    busy = [True]

    def tight(model_id):
        if model_id == RTDETR and busy[0]:
            raise BusyError("the server is busy")
        return load(model_id)

    verdict = default.choose(tight, FRAME, 320)
    assert verdict.chosen == DETR and not verdict.measured and default.verdicts == {}
    assert verdict.text() == f"Default: {DETR} ({RTDETR} could not be run to compare; tried again later)"
    busy[0] = False
    assert default.choose(tight, FRAME, 320).chosen == RTDETR and default.verdicts


def test_available_means_loaded_or_on_disk_never_a_download(tiny_hub, monkeypatch):
    """`pipeline.is_available` (what the default compares among): the files in the local Hub cache or a folder with
    its config.json; a repo not in the cache, or not a valid id, is not (and nothing is fetched to find out)."""
    from vtdemo import hub, pipeline

    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_hub.cache))
    monkeypatch.setattr(hub, "fetch_file", lambda *a, **k: pytest.fail("nothing is fetched"))
    assert pipeline.is_available(tiny_hub.repos["detr"], "cpu")
    assert not pipeline.is_available("PekingU/not-in-this-cache", "cpu")
    assert not pipeline.is_available("not a repo id!", "cpu")
    assert not pipeline.is_available(str(tiny_hub.cache), "cpu")  # a folder without config.json
