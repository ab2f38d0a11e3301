"""One soak visitor: a thread that opens `gradio_client` sessions one after the other (each a new session hash, as
a person who comes back later) and does the seeded mix of `plan.choose` in each, with think time in between, until
the deadline. Every request ends as a `report.Request`: a client-side timeout, a lost connection or a crash is
recorded, never raised.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import plan, raw
from .outcome import FAILED, OK, Expect, Verdict, judge_answer, judge_error
from .report import Request


@dataclass
class Setup:
    """What every visitor shares: where the app is, what to send, and the soak's clock."""

    url: str
    models: plan.Models
    methods: dict[str, list[str]]  # family -> the app's explanation methods
    webcam_extra: list[Any]  # the defaults of /webcam's parameters after frame, threshold, live size and model
    photos: list[Path]  # the example photos
    bad_text: Path  # a text file named .jpg
    bad_truncated: Path  # the first bytes of a JPEG
    frames: Path  # a folder for webcam frames (each frame a new file, as a camera's are)
    think_s: float  # mean think time
    timeout_s: float  # per request
    warmup_end_s: float
    clock: Callable[[], float]  # seconds since the soak started
    record: Callable[[Request], None]


BAD_MODEL = "soak-test/no-such-model"


class Session:
    """One `gradio_client.Client` session and what its page shows."""

    def __init__(self, setup: Setup, visitor: int, number: int, rng: random.Random) -> None:
        self.setup, self.visitor, self.number, self.rng = setup, visitor, number, rng
        self.state = plan.VisitorState(model={f: setup.models.of(f)[0] for f in plan.FAMILIES})
        self.client: Any = None

    # ------------------------------------------------------------------------------------------ plumbing

    def _record(self, action: str, endpoint: str, model: str, start: float, verdict: Verdict, expect: Expect) -> None:
        now = self.setup.clock()
        self.setup.record(
            Request(
                visitor=self.visitor,
                session=self.number,
                phase="warmup" if start < self.setup.warmup_end_s else "soak",
                action=action,
                endpoint=endpoint,
                model=model,
                start_s=start,
                latency_s=now - start,
                outcome=verdict.outcome,
                expect=expect,
                message=verdict.message,
            )
        )

    def open(self) -> bool:
        from gradio_client import Client

        start = self.setup.clock()
        try:
            self.client = Client(self.setup.url, verbose=False, download_files=False)
            verdict = Verdict(OK)
        except Exception as exc:  # noqa: BLE001 - every way of failing is recorded
            verdict = judge_error(exc, "result")
        self._record("open_session", "connect", "", start, verdict, "result")
        return self.client is not None

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()  # the heartbeat stops: the server ends the session and releases its runs
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
            self.client = None

    def call(
        self, action: str, endpoint: str, args: tuple, model: str = "", expect: Expect = "result"
    ) -> tuple[Verdict, Any]:
        """One request through `gradio_client`, waited for at most `timeout_s`; (verdict, answer or None)."""
        jobs: list[Any] = []

        def send() -> Any:
            jobs.append(self.client.submit(*args, api_name=f"/{endpoint}"))
            return jobs[0].result(timeout=self.setup.timeout_s)

        def cancel() -> None:
            if jobs:
                jobs[0].cancel()

        return self.timed(action, endpoint, model, expect, send, cancel)

    def timed(
        self,
        action: str,
        endpoint: str,
        model: str,
        expect: Expect,
        send: Callable[[], Any],
        cancel: Callable[[], None] | None = None,
    ) -> tuple[Verdict, Any]:
        """Time `send()`, judge its answer or its exception, record the request; (verdict, answer or None)."""
        start = self.setup.clock()
        answer = None
        try:
            answer = send()
            verdict = judge_answer(answer, expect)
        except Exception as exc:  # noqa: BLE001 - every way of failing is recorded
            verdict = judge_error(exc, expect, self.setup.timeout_s)
            if cancel is not None and verdict.outcome == FAILED:
                try:
                    cancel()
                except Exception:  # noqa: BLE001 - best effort
                    pass
        self._record(action, endpoint, model, start, verdict, expect)
        return verdict, answer

    def photo(self) -> Any:
        from gradio_client import handle_file

        return handle_file(str(self.rng.choice(self.setup.photos)))

    # ------------------------------------------------------------------------------------------ actions

    def do(self, action: str, family: str) -> None:
        getattr(self, action)(family)

    def classify(self, family: str, action: str = "classify", model: str | None = None) -> None:
        model = model or self.state.model[family]
        endpoint = f"classify_{family}"
        verdict, answer = self.call(
            action, endpoint, plan.classify_args(self.photo(), model, plan.METHODS[endpoint]), model
        )
        if verdict.outcome == OK:
            self.state.model[family] = model
            top = answer[0].get("confidences", []) if isinstance(answer, (list, tuple)) and answer else []
            self.state.classified[family] = [c["label"] for c in top if isinstance(c, dict) and "label" in c]

    def explain(self, family: str) -> None:
        labels: list[str | None] = [*self.state.classified.get(family, [])] or [None]
        args = plan.explain_args(
            self.rng.choice(self.setup.methods[family]),
            self.rng.choice(labels),
            self.rng.choice(("mean", "max", "min")),
            self.rng.choice((0.0, 0.0, 0.5, 0.9)),
        )
        self.call("explain", f"explain_{family}", args, self.state.model[family])

    def compare(self, family: str) -> None:
        self.call("compare", f"compare_{family}", (), self.state.model[family])

    def detect(self, family: str = "detr", action: str = "detect", model: str | None = None) -> None:
        model = model or self.state.model["detr"]
        threshold = self.rng.choice(plan.THRESHOLDS)
        verdict, _ = self.call(action, "detect", plan.detect_args(self.photo(), model, threshold), model)
        if verdict.outcome == OK:
            self.state.model["detr"] = model
            self.state.detected = True

    def threshold(self, family: str) -> None:
        self.call(
            "threshold", "rerender", plan.rerender_args(self.rng.choice(plan.THRESHOLDS)), self.state.model["detr"]
        )

    def attention(self, family: str) -> None:
        direction = self.rng.choice(("where it looks", "who looks at it"))
        self.call("attention", "attention_view", plan.attention_args(direction=direction), self.state.model["detr"])

    def switch_model(self, family: str) -> None:
        choices = self.setup.models.of(family)
        others = [m for m in choices if m != self.state.model[family]] or choices
        model = self.rng.choice(others)
        if family == "detr":
            self.detect(action="switch_model", model=model)
        else:
            self.classify(family, action="switch_model", model=model)

    def webcam(self, family: str) -> None:
        """A recording of 3 to 8 frames, as the browser streams them (see `raw.Stream`), in this session."""
        from PIL import Image, ImageDraw

        base = Image.open(self.rng.choice(self.setup.photos)).convert("RGB").resize((640, 480))
        size = self.rng.choice(plan.LIVE_SIZES)
        model = self.state.model["detr"]
        stream = raw.Stream(self.setup.url, "webcam", self.webcam_session(), self.setup.timeout_s)
        try:
            for _ in range(self.rng.randint(3, 8)):
                frame = base.copy()  # a camera's frames all differ: a moving square
                x = self.rng.randrange(0, 600)
                ImageDraw.Draw(frame).rectangle((x, 200, x + 40, 240), fill=(self.rng.randrange(256), 80, 80))
                path = self.setup.frames / f"v{self.visitor}-s{self.number}-{self.rng.getrandbits(40):010x}.jpg"
                frame.save(path, quality=85)
                try:
                    verdict = self.frame(stream, path, size, model)
                finally:
                    path.unlink(missing_ok=True)
                if verdict.outcome != OK:
                    break
                time.sleep(0.15)  # the app's stream_every
        finally:
            stream.close()

    def frame(
        self, stream: raw.Stream, path: Path, size: int, model: str, action: str = "webcam", expect: Expect = "result"
    ) -> Verdict:
        """One frame of a recording: upload it, post it to the stream, judge the answer."""
        url, timeout = self.setup.url, self.setup.timeout_s

        def send() -> Any:
            photo = raw.upload(url, path, timeout)
            return stream.send(list(plan.webcam_args(photo, 0.7, size, model, self.setup.webcam_extra)))

        return self.timed(action, "webcam", model, expect, send)[0]

    def webcam_session(self) -> str:
        """The session hash of the page's webcam recordings: one per visitor session, beside the Client's own. The
        browser streams in its page's session over the session's own event stream; a script's `/gradio_api/call`
        stream in the session of a `gradio_client` Client was seen to leave the next recording waiting for a webcam
        slot until its timeout (2 of 137 requests in a 1.5-minute soak), which recordings in a session of their own
        never did."""
        return f"{getattr(self.client, 'session_hash', 'soak')}-webcam"

    def _bad(self, action: str, family: str, photo: Path | None, model: str) -> None:
        """A bad input where the page says why: a bad photo goes to the ViT column, the Detect tab or the webcam (the
        Swin column is silent about the photo by design: the Classify tab says it once, in the ViT column), an
        unknown model id to any picker."""
        from gradio_client import handle_file

        if photo is not None and family == "swin":
            stream = raw.Stream(self.setup.url, "webcam", self.webcam_session(), self.setup.timeout_s)
            try:
                self.frame(stream, photo, plan.LIVE_SIZES[0], self.state.model["detr"], action, "refusal")
            finally:
                stream.close()
            return
        upload = handle_file(str(photo or self.rng.choice(self.setup.photos)))
        if family == "detr":
            self.call(action, "detect", plan.detect_args(upload, model, 0.7), model, expect="refusal")
            self.state.detected = self.state.detected and photo is None  # the page keeps its result for a bad model
        else:
            endpoint = f"classify_{family}"
            self.call(action, endpoint, plan.classify_args(upload, model, plan.METHODS[endpoint]), model, "refusal")
            self.state.classified.pop(family, None)

    def bad_text_jpg(self, family: str) -> None:
        self._bad("bad_text_jpg", family, self.setup.bad_text, self.state.model[family])

    def bad_truncated_jpg(self, family: str) -> None:
        self._bad("bad_truncated_jpg", family, self.setup.bad_truncated, self.state.model[family])

    def bad_model_id(self, family: str) -> None:
        self._bad("bad_model_id", family, None, BAD_MODEL)


def tour(setup: Setup, seed: int) -> None:
    """The warm-up's first part: one session that runs every model once and every kind of request once (bad inputs
    included), so that the models are loaded, and each one's first-use memory taken, before the visitors come: a
    classifier's comparison grid on each classifier model too (its first one builds the fast engine's logits-only
    copy, a step of ~0.5 GB for the full-size models that fell after the warm-up when the tour left it out)."""
    session = Session(setup, 0, 1, random.Random(seed))
    if not session.open():
        return
    try:
        for family, model in setup.models.all():
            if family == "detr":
                session.detect(action="switch_model", model=model)
            else:
                session.classify(family, action="switch_model", model=model)
                session.compare(family)  # the model just classified with
        session.state.model = {f: setup.models.of(f)[0] for f in plan.FAMILIES}
        for family in ("vit", "swin"):
            session.classify(family)
            session.explain(family)
        session.detect()
        session.threshold("detr")
        session.attention("detr")
        session.webcam("detr")
        session.bad_text_jpg("vit")
        session.bad_truncated_jpg("swin")  # a webcam frame
        session.bad_model_id("detr")
    finally:
        session.close()


class Visitor(threading.Thread):
    """Visitor `index` (1..N): sessions of 5 to 40 actions until `deadline_s` on the soak's clock."""

    def __init__(self, setup: Setup, index: int, seed: int, deadline_s: float) -> None:
        super().__init__(name=f"soak-visitor-{index}", daemon=True)
        self.setup, self.index, self.deadline_s = setup, index, deadline_s
        self.rng = random.Random(seed * 1000 + index)

    def run(self) -> None:
        number = 0
        time.sleep(self.rng.uniform(0, min(5.0, self.setup.think_s)))  # people do not all arrive at once
        while self.setup.clock() < self.deadline_s:
            number += 1
            session = Session(self.setup, self.index, number, self.rng)
            if not session.open():
                time.sleep(self.setup.think_s)
                continue
            try:
                for _ in range(self.rng.randint(5, 40)):
                    if self.setup.clock() >= self.deadline_s:
                        break
                    session.do(*plan.choose(self.rng, session.state))
                    pause = plan.think_s(self.rng, self.setup.think_s)
                    time.sleep(max(0.0, min(pause, self.deadline_s - self.setup.clock())))
            finally:
                session.close()
