"""The webcam's default model: whichever of the configured DETR and RT-DETR runs a frame faster on this machine.

DETR-R50 at the webcam's canvas and RT-DETR-R18 at its 640x640 cost about the same on paper, and which one is faster
depends on the machine (cores, AVX-512, the GPU, the fast engine for DETR). So the app does not guess: the first time
a visitor streams with the default choice, each candidate that is already on this server (loaded, or its files in
the local cache: nothing is downloaded just to compare) runs one warm-up call and then is timed on that same frame
(`time_frame`, the best of `RUNS` calls); the faster one is the default from then on, for every visitor, until the
process ends. The verdict is kept per (candidates on the server, DETR input size), since DETR's time depends on the
size; when only one candidate is on the server there is nothing to compare and nothing is kept, so the comparison
happens once the other one arrives (e.g. a visitor loads it in the Detect tab). A candidate that cannot be loaded or
run for the measurement (no room in the model memory, a broken file) is left out of that frame's comparison, logged,
and nothing is kept: the webcam runs the other, and a later frame tries again. What was measured is said in the tab
(`Verdict.text`). Tests inject the timer.

No Gradio here: the rule (`faster`) and the cache (`WebcamDefault`) are plain Python.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import pipeline
from ..errors import VtdemoError

log = logging.getLogger(__name__)
#: Timed calls per candidate after the warm-up (the best is kept: the least disturbed by other work).
RUNS = 2

#: (loaded model, frame [H, W, 3] uint8, DETR input short side) -> seconds per frame.
Timer = Callable[[pipeline.LoadedModel, np.ndarray, int], float]


def time_frame(loaded: pipeline.LoadedModel, frame: np.ndarray, short_side: int, runs: int = RUNS) -> float:
    """Seconds the webcam's call (`pipeline.detect_frame`) takes on `frame`: one warm-up call (a fast engine
    compiles for the shape on its first), then the best of `runs`."""
    pipeline.detect_frame(loaded, frame, short_side, 1.0)
    best = math.inf
    for _ in range(max(1, runs)):
        started = time.perf_counter()
        pipeline.detect_frame(loaded, frame, short_side, 1.0)
        best = min(best, time.perf_counter() - started)
    return best


def faster(timings: dict[str, float], order: Sequence[str]) -> str:
    """The model with the least time per frame; a tie goes to the one earlier in `order` (the configured DETR)."""
    if not timings:
        raise ValueError("no timings to compare")
    rank = {m: i for i, m in enumerate(order)}
    return min(timings, key=lambda m: (timings[m], rank.get(m, len(rank))))


@dataclass(frozen=True)
class Verdict:
    """The webcam's default: `chosen`, and `timings` ((model, seconds per frame), fastest first) when it was
    measured against another candidate; `why` when it was not (only one candidate on this server)."""

    chosen: str
    timings: tuple[tuple[str, float], ...] = ()
    why: str = ""

    @property
    def measured(self) -> bool:
        return len(self.timings) >= 2

    def text(self) -> str:
        """One line for the tab, e.g. 'Default: PekingU/rtdetr_r18vd — on this machine 95 ms per frame vs
        facebook/detr-resnet-50 140 ms (measured at first use)'."""
        if not self.measured:
            return f"Default: {self.chosen} ({self.why})"
        (_, best), *others = self.timings
        rest = ", ".join(f"{m} {t * 1000:.0f} ms" for m, t in others)
        return (
            f"Default: {self.chosen} — on this machine {best * 1000:.0f} ms per frame vs {rest} (measured at first use)"
        )


class WebcamDefault:
    """Which model the webcam runs when the visitor left the choice to the app (see the module docstring).

    candidates: the configured DETR first, then the configured RT-DETR; available(model): on this server without a
    download (`pipeline.is_available`); timer: how a loaded model's frame is timed (`time_frame`; tests inject)."""

    def __init__(self, candidates: Sequence[str], available: Callable[[str], bool], timer: Timer = time_frame) -> None:
        self.candidates = list(dict.fromkeys(candidates))
        self.available = available
        self.timer = timer
        self.verdicts: dict[tuple[tuple[str, ...], int], Verdict] = {}
        self._lock = threading.Lock()

    def choose(self, load: Callable[[str], pipeline.LoadedModel], frame: np.ndarray, short_side: int) -> Verdict:
        """The default for this DETR input size: measured once (on `frame`, each candidate loaded with `load`),
        then the kept verdict. A second stream arriving while the first measures waits for its verdict."""
        here = [m for m in self.candidates if self.available(m)]
        if len(here) < 2:
            chosen = here[0] if here else self.candidates[0]
            others = [m for m in self.candidates if m != chosen]
            why = (
                f"{' and '.join(others)} is not on this server, so nothing was compared (nothing is downloaded just "
                "to measure)"
                if others
                else "the one configured detector"
            )
            return Verdict(chosen, why=why)
        key = (tuple(here), int(short_side))
        with self._lock:
            verdict = self.verdicts.get(key)
            if verdict is not None:
                return verdict
            timings: dict[str, float] = {}
            for m in here:
                try:
                    timings[m] = float(self.timer(load(m), frame, int(short_side)))
                except VtdemoError as exc:  # e.g. no room for both: compare later, run what can run now
                    log.warning("webcam default: %s could not be timed (%s); not compared this time", m, exc)
            if len(timings) < 2:
                left = [m for m in here if m not in timings]
                chosen = next(iter(timings), here[0])
                return Verdict(chosen, why=f"{' and '.join(left)} could not be run to compare; tried again later")
            chosen = faster(timings, here)
            ranked = sorted(timings.items(), key=lambda item: (item[0] != chosen, item[1]))
            verdict = self.verdicts[key] = Verdict(chosen, tuple(ranked))
        return verdict
