"""What a request's answer means: ok, busy or failed (pure functions, no network).

- **busy**: the server said it cannot take the request now. Gradio's full queue (`gradio_client` raises
  `QueueError("Queue is full! Please try again.")`, a browser shows "This application is currently busy"), or the
  app's own busy lines (`vtdemo.loader.BUSY`: the memory for models is held by other visitors' running requests).
- **ok**: a valid request answered with a result and no warning; or a bad input (`expect="refusal"`) answered with a
  clear one-line reason (the app's "⚠️ ..." status line or a `gr.Error` message).
- **failed**: everything else, with its message: "Unexpected error" / a traceback / Gradio's bare "Error", no
  answer in time, a lost connection, a warning on a valid request, or a bad input that was accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Expect = Literal["result", "refusal"]
OK, BUSY, FAILED = "ok", "busy", "failed"
OUTCOMES = (OK, BUSY, FAILED)

#: Words of the answers that mean "busy, try again" (lowercase). Gradio's full queue, as `gradio_client` and a browser
#: word it, and the app's `vtdemo.loader.BUSY` (checked by tests/unit/test_soak_report.py).
BUSY_WORDS = (
    "queue is full",
    "currently busy",
    "taken by other visitors' running requests",
    "too many requests",
)
#: Words that mark a crash rather than a reason (lowercase).
CRASH_WORDS = ("unexpected error", "traceback (most recent call last)")
WARNING_MARK = "⚠"  # the app's status line for a refusal or a problem starts with "⚠️"


@dataclass(frozen=True)
class Verdict:
    outcome: str  # ok / busy / failed
    message: str = ""  # the refusal, busy or failure line (one line, at most 300 characters)


def one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def strings(value: Any) -> Iterator[str]:
    """Every string inside an answer (status lines, captions, labels), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings(v)


def is_busy(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in BUSY_WORDS)


def is_clear(text: str) -> bool:
    """A readable reason: not empty, not Gradio's bare "Error", not a crash."""
    low = text.strip().lower()
    return bool(low) and low not in ("error", "error raised.", "none") and not any(w in low for w in CRASH_WORDS)


def judge_answer(answer: Any, expect: Expect) -> Verdict:
    """An answer that arrived (the endpoint's outputs)."""
    texts = list(strings(answer))
    crash = next((t for t in texts if any(w in t.lower() for w in CRASH_WORDS)), None)
    if crash is not None:
        return Verdict(FAILED, one_line(crash))
    warning = next((t for t in texts if t.lstrip().startswith(WARNING_MARK)), None)
    if warning is not None and is_busy(warning):
        return Verdict(BUSY, one_line(warning))
    if expect == "refusal":
        if warning is None:
            return Verdict(FAILED, "a bad input was accepted (no refusal in the answer)")
        return Verdict(OK, one_line(warning))
    if warning is not None:
        return Verdict(FAILED, one_line(warning))
    return Verdict(OK)


def judge_error(exc: BaseException, expect: Expect, timeout_s: float | None = None) -> Verdict:
    """A request that raised on the client: a queue refusal, an app error (`gr.Error`), a timeout, or a lost
    connection. Class names are compared so that this module needs no `gradio_client` import."""
    kind = type(exc).__name__
    text = one_line(getattr(exc, "message", None) or str(exc))
    if kind in ("QueueError", "TooManyRequestsError") or is_busy(text):
        return Verdict(BUSY, text or kind)
    if isinstance(exc, TimeoutError):  # concurrent.futures.TimeoutError is TimeoutError since Python 3.11
        return Verdict(FAILED, f"no answer in {timeout_s:g} s" if timeout_s else "no answer in time")
    if kind == "AppError" and is_clear(text):
        if expect == "refusal":
            return Verdict(OK, text)
        return Verdict(FAILED, f"refused a valid request: {text}")
    return Verdict(FAILED, one_line(f"{kind}: {text}"))
