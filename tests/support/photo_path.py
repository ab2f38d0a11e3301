"""How far a photo travels: the vtdemo modules a handler's work enters, in order, read with `sys.setprofile`.

`trace(fn, *args)` calls `fn` and returns (calls, result), `calls` a `Call` (module, function, caller, code) for
every vtdemo function called meanwhile, in order. `PhotoPath(calls)` reads them: the modules entered (in order of
first entry) and the calls from the UI (`vtdemo.ui.*`) into the library.

    python -m tests.support.photo_path     # the measure of docs/architecture.md, on the tiny test checkpoints
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any, NamedTuple


class Call(NamedTuple):
    module: str  # without the "vtdemo." prefix
    function: str
    caller: str  # the module of the nearest vtdemo frame that led to the call (torch's `Module.__call__` skipped)
    code: CodeType  # the function's code object


def _short(module: str) -> str:
    return module.removeprefix("vtdemo").removeprefix(".") or "vtdemo"


def trace(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[list[Call], Any]:
    """Call `fn(*args, **kwargs)`; every vtdemo function called meanwhile (this thread and threads it starts)."""
    calls: list[Call] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if module == "vtdemo" or module.startswith("vtdemo."):
                caller, up = "", frame.f_back
                while up is not None and not caller.startswith("vtdemo"):  # the nearest vtdemo frame: through torch,
                    caller, up = up.f_globals.get("__name__", ""), up.f_back  # functools or contextlib
                calls.append(Call(_short(module), frame.f_code.co_name, _short(caller), frame.f_code))

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return calls, result


def is_ui(module: str) -> bool:
    return module == "ui" or module.startswith("ui.")


@dataclass
class PhotoPath:
    calls: list[Call]

    @property
    def modules(self) -> list[str]:
        """Every module entered, in order of first entry."""
        return list(dict.fromkeys(c.module for c in self.calls))

    @property
    def into_library(self) -> list[Call]:
        """The calls made from UI code into library code, in order (each is one trip out of the UI and back)."""
        return [c for c in self.calls if is_ui(c.caller) and not is_ui(c.module)]

    def report(self, name: str) -> str:
        ui = [m for m in self.modules if is_ui(m)]
        trips = ", ".join(f"{c.module}.{c.function}" for c in self.into_library)
        return (
            f"{name}: {len(self.modules)} modules entered ({len(ui)} UI / {len(self.modules) - len(ui)} library): "
            f"{', '.join(self.modules)}\n  {len(self.into_library)} calls from the UI into the library: {trips}"
        )


def photo_paths(app: Any, repos: dict[str, str]) -> dict[str, PhotoPath]:
    """The paths of a Classify photo (ViT column) and a Detect photo through the launched app's handlers, called as
    Gradio calls them inside an event (a component a handler makes is an update); one photo first to warm up, then
    the second is traced (nothing loads)."""
    from pathlib import Path

    from gradio.context import LocalContext

    examples = sorted(Path(__file__).resolve().parents[2].joinpath("assets", "examples").glob("*.png"))[:2]
    entered = LocalContext.in_event_listener.set(True)
    try:
        column, detect = app.classify.vit, app.detect
        paths = {}
        for photo in examples:
            calls, _ = trace(column.classify, str(photo), repos["vit"], "rollout", 0.5)
        paths["classify"] = PhotoPath(calls)
        for photo in examples:
            calls, _ = trace(
                detect.detect, str(photo), repos["detr"], 0.7, None, 100, False, 0.5, None, None, None, 0.5
            )
        paths["detect"] = PhotoPath(calls)
    finally:
        LocalContext.in_event_listener.reset(entered)  # outside an event again (a Blocks built later needs it)
    return paths


def main() -> None:
    """The measure of docs/architecture.md: the app on the tiny checkpoints, precision exact."""
    import tempfile
    from pathlib import Path

    from tests.support.apps import TinyHub, launched_app
    from tests.support.tiny_models import write_tiny_repos

    with tempfile.TemporaryDirectory() as tmp:
        hub = TinyHub(Path(tmp), write_tiny_repos(Path(tmp)))
        with launched_app(hub) as (app, _url):
            paths = photo_paths(app, hub.repos)
    print(paths["classify"].report("a Classify photo (ViT column)"))
    print(paths["detect"].report("a Detect photo"))


if __name__ == "__main__":
    main()
