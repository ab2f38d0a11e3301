"""The UI reaches the library only through `vtdemo.pipeline`'s public face, at run time too.

`tests/unit/test_import_graph.py` reads the imports; this test watches a Classify photo and a Detect photo go
through the launched app's handlers (`tests.support.photo_path`) and checks every call made from UI code into
library code: it must be a function `vtdemo.pipeline` exports, a method or property of a class it exports (the run
records, `ExplainOptions`, ...), or a function of the other public modules (`render`, `checks`, ...). A handler that
calls a model, an explanation or a loader's inner function through an object it holds fails here, whatever it
imports.
"""

from __future__ import annotations

import inspect

import pytest

from tests.support.apps import launched_app
from tests.support.photo_path import photo_paths
from vtdemo import pipeline

pytestmark = pytest.mark.slow  # the app launched on the tiny checkpoints

PUBLIC_MODULES = ("render", "checks", "errors", "settings", "labels", "assets")


def public_code() -> set:
    """The code objects of everything `vtdemo.pipeline` exports: functions, and the methods and properties of
    classes (their vtdemo base classes included)."""
    codes = set()
    for name in pipeline.__all__:
        obj = getattr(pipeline, name)
        if inspect.isfunction(obj):
            codes.add(inspect.unwrap(obj).__code__)  # a decorated function (a context manager): its own code
        elif inspect.isclass(obj):
            for klass in obj.__mro__:
                if not klass.__module__.startswith("vtdemo"):
                    continue
                for member in vars(klass).values():
                    for part in (member, getattr(member, "fget", None), getattr(member, "__func__", None)):
                        if inspect.isfunction(part):
                            codes.add(part.__code__)
    return codes


def test_the_ui_calls_only_the_public_face(tiny_hub):
    allowed = public_code()
    with launched_app(tiny_hub) as (app, _url):
        paths = photo_paths(app, tiny_hub.repos)
    for name, path in paths.items():
        assert path.into_library, f"{name}: no call into the library was seen (the trace did not run)"
        stray = sorted(
            {f"{c.module}.{c.function} (from {c.caller})" for c in path.into_library}
            - {f"{c.module}.{c.function} (from {c.caller})" for c in path.into_library if is_public(c, allowed)}
        )
        assert not stray, f"a {name} photo: the UI called inner functions of the library: {stray}"


def is_public(call, allowed: set) -> bool:
    return call.module in PUBLIC_MODULES or call.code in allowed
