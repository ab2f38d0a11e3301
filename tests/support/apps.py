"""The app launched in the test process on the tiny repos (tests/support/tiny_models.py), offline.

`launched_app(tiny_hub)` is a context manager that yields the `vtdemo.ui.app.VtdemoApp` (its Blocks as `.demo`, the
tabs' handlers as `.classify` / `.detect` / `.webcam`, the shared `.services`) and its URL; `tiny_hub` is the session
fixture of tests/conftest.py that holds the Hub cache with the tiny repos.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest


class TinyHub(NamedTuple):
    """A Hub cache folder holding the tiny repos, and their ids by family ({"vit": ..., "swin": ..., "detr": ...})."""

    cache: Path
    repos: dict[str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def launched_app(hub_cache: TinyHub, env: dict[str, str] | None = None, **overrides: Any) -> Iterator[tuple[Any, str]]:
    """The app on the tiny repos, offline, on a free loopback port, for the length of a `with` block: yields
    (VtdemoApp, url).

    `env`: extra environment variables for the block (e.g. a short GRADIO_HEARTBEAT_INTERVAL); `overrides`: AppConfig
    fields. The loaded-model cache is emptied before and after, and the app is closed.
    """
    from vtdemo import loader
    from vtdemo.ui.app import create_app
    from vtdemo.ui.config import AppConfig

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_CACHE", str(hub_cache.cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    for name, value in (env or {}).items():
        mp.setenv(name, value)
    loader.clear_cache()
    settings: dict[str, Any] = dict(
        vit_model=hub_cache.repos["vit"],
        swin_model=hub_cache.repos["swin"],
        detr_model=hub_cache.repos["detr"],
        host="127.0.0.1",
        port=free_port(),
        device="cpu",
        precision="exact",  # the app's default is fast; tests that want the fast engine pass precision="fast"
    )
    app = create_app(AppConfig(**{**settings, **overrides}))
    try:
        _, url, _ = app.launch(prevent_thread_lock=True, quiet=True)
        yield app, url
    finally:
        app.demo.close()
        loader.clear_cache()
        mp.undo()


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll `condition()` every 0.1 s until it is true (True) or `seconds` have passed (False)."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def counting_forward(loaded: Any) -> tuple[dict[str, int], Callable[[], None]]:
    """Count a loaded model's forward calls (an instance attribute: nn.Module.__call__ finds it); returns the counter
    {"n": calls} and a function that removes the wrapper."""
    calls = {"n": 0}
    forward = loaded.model.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return forward(*args, **kwargs)

    loaded.model.forward = counted
    return calls, lambda: delattr(loaded.model, "forward")
