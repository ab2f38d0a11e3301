"""Downloads beside the queue: a model's files are fetched outside the model slot, a few at once, one per visitor.

A web visitor who types a new repo id should not hold the app's model slot (`VTDEMO_CONCURRENCY` model calls at once)
for the minutes a multi-gigabyte download takes. So `vtdemo.loader.load`, when the files are not in the Hub cache
yet, calls `download` here, which

1. refuses at once (`BusyError`) when the same session already has a download under way (one per visitor);
2. steps out of the model slot (`step_aside`, the loader's: other visitors' runs on loaded models go on);
3. waits for the repo's own lock: two visitors asking for the same new model get one download, both served;
4. waits for one of `set_download_slots(n)` download slots (the app's `VTDEMO_DOWNLOADS`), up to `WAIT_S`, then
   answers busy;
5. downloads with `hub.prefetch`, telling `progress(fraction, text)` how many megabytes have come in.

The caller then takes its model slot back (waiting its turn) and builds the model from the local files.
Outside the app (the CLI, scripts) nobody holds a slot and one session is everyone: the steps cost nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from .errors import BusyError
from .hub import ModelRef, prefetch
from .memory import MB

log = logging.getLogger(__name__)

#: How long a download waits for a free download slot before the visitor is told to try again.
WAIT_S = 30.0
#: Seconds between two progress messages.
EVERY_S = 0.25

Progress = Callable[[float, str], None]

_guard = threading.Condition()
_slots = [2]  # downloads at once (`set_download_slots`)
_running: dict[str, str] = {}  # repo -> session downloading it (or waiting for a slot)
_sessions: dict[str, str] = {}  # session -> the repo it is fetching
_repo_locks: dict[str, threading.Lock] = {}


def set_download_slots(n: int) -> None:
    """Allow `n` downloads at once (the app's `VTDEMO_DOWNLOADS`)."""
    with _guard:
        _slots[0] = max(1, int(n))
        _guard.notify_all()


def under_way() -> dict[str, str]:
    """The downloads now running or waiting for a slot: repo -> session."""
    with _guard:
        return dict(_running)


def download(
    ref: ModelRef,
    session: str | None = None,
    progress: Progress | None = None,
    step_aside: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
) -> None:
    """Fetch the files of `ref` (a Hub repo) into the Hub cache, out of the model slot (module docstring).
    session: the visitor's (None: a script's, no per-visitor rule). Raises `BusyError` (one line) when this session
    already downloads another model or no download slot frees up in `WAIT_S`; the Hub's own errors as
    `hub.fetch_file` gives them."""
    assert ref.repo is not None, "folders are never downloaded"
    repo = ref.repo
    if session is not None:
        with _guard:
            other = _sessions.get(session)
            if other is not None:
                raise BusyError(
                    f"{repo} was not loaded: your download of {other} is still under way (one download per visitor). "
                    "Wait for it to finish, then pick this model again."
                )
            _sessions[session] = repo
    try:
        with step_aside():
            with _guard:
                lock = _repo_locks.setdefault(repo, threading.Lock())
            if not lock.acquire(blocking=False):  # another visitor fetches it: wait for that download, not a new one
                _say(progress, 0.02, f"Waiting for {repo}: another visitor's download of it is under way…")
                lock.acquire()
            try:
                from .hub import files_missing

                if files_missing(ref):
                    _fetch(ref, session, progress)
            finally:
                lock.release()
    finally:
        if session is not None:
            with _guard:
                _sessions.pop(session, None)


def _fetch(ref: ModelRef, session: str | None, progress: Progress | None) -> None:
    """Take a download slot (waiting up to `WAIT_S`), download, give the slot back."""
    repo = str(ref.repo)
    deadline = time.monotonic() + WAIT_S
    with _guard:
        while len(_running) >= _slots[0]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BusyError(
                    f"{repo} was not loaded: this server is busy downloading models for other visitors "
                    f"({len(_running)} at once). Please try again in a minute."
                )
            _say(progress, 0.02, f"Waiting for a download slot ({len(_running)} downloads under way)…")
            _guard.wait(min(left, 1.0))
        _running[repo] = session or ""
    started = time.monotonic()
    try:
        log.info("downloading %s (for session %s)", repo, session or "-")
        _say(progress, 0.03, f"Downloading {repo}…")
        prefetch(ref, _reporter(repo, progress))
        log.info("downloaded %s in %.1f s", repo, time.monotonic() - started)
    finally:
        with _guard:
            _running.pop(repo, None)
            _guard.notify_all()


def _reporter(repo: str, progress: Progress | None) -> Callable[[int, int | None], None] | None:
    """A byte counter -> "Downloading org/name: 120 of 340 MB" at most every `EVERY_S` (the progress bar spans
    0.05-0.45 of the whole request: the model still has to load and run)."""
    if progress is None:
        return None
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < EVERY_S and not (total and done >= total):
            return
        last[0] = now
        if total:
            _say(
                progress,
                0.05 + 0.4 * min(done / total, 1.0),
                f"Downloading {repo}: {done / MB:,.0f} of {total / MB:,.0f} MB",
            )
        else:
            _say(progress, 0.05, f"Downloading {repo}: {done / MB:,.0f} MB")

    return report


def _say(progress: Progress | None, fraction: float, text: str) -> None:
    if progress is not None:
        progress(fraction, text)
