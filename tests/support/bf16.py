"""The fast engine as on a CPU with bf16 units, for the tests of the run-time fidelity check (`bf16_verdict`), on
any CPU.

On an AVX2 machine OpenVINO accepts the bf16 hint and runs f32, so the numbers are f32's; on one with bf16 units (AMX,
AVX512-BF16) they are really bf16's, and a tiny random model is outside the guard there. So the tests pin the numbers:
`faithful` compiles at f32 whatever the hint (a bf16 within the guard, on every CPU), `stray` perturbs them as a CPU's
bf16 units could; both record the precision hint of every graph compiled. `fast_line` is what a status line says
about a fast model of a family on this CPU.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest


def _choose(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    from vtdemo.engine import fast as fast_module

    real = fast_module.choose
    monkeypatch.setattr(fast_module, "choose", lambda device: replace(real(device), dtype=dtype))
    monkeypatch.delenv("VTDEMO_FAST_DTYPE", raising=False)


def choose_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the fast engine pick OpenVINO bf16 (the device's choice, not forced: the guard applies)."""
    _choose(monkeypatch, "bf16")


def choose_f32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the fast engine pick OpenVINO f32 whatever the CPU: for a test that pins a graph to a reference at f32's
    tolerance (with bf16 units the CPU would pick bf16, which the guard's bar judges)."""
    _choose(monkeypatch, "f32")


def _hints(monkeypatch: pytest.MonkeyPatch, compile_as: str | None) -> list[str]:
    """Record the precision hint of every graph compiled (and compile at `compile_as` when given)."""
    from vtdemo.engine import openvino_runtime

    hints: list[str] = []
    real_load = openvino_runtime.load_graph

    def spy(*args, **kwargs):
        hints.append(args[5])
        if compile_as is not None:
            args = (*args[:5], compile_as, *args[6:])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(openvino_runtime, "load_graph", spy)
    return hints


def faithful(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A bf16 within the guard on any CPU: graphs hinted bf16 compile at f32; returns the list of hints."""
    return _hints(monkeypatch, "f32")


def fast_line(family: str) -> re.Pattern[str]:
    """What a status line says about a fast `family` model on this CPU: f32 without bf16 units; with them bf16, or
    for a detector (checked at run time) f32 with the guard's note."""
    from vtdemo.engine.fast import choose, guarded

    choice = choose("cpu")
    if choice.dtype != "bf16":
        return re.compile(r"OpenVINO \S+ f32 on cpu \(fast\)")
    if guarded(choice, family):
        outside = r"f32 on cpu \(fast; bf16 was outside the fidelity guard\)"
        return re.compile(rf"OpenVINO \S+ (bf16 on cpu \(fast\)|{outside})")
    return re.compile(r"OpenVINO \S+ bf16 on cpu \(fast\)")


def stray(monkeypatch: pytest.MonkeyPatch, family: str, offset: float) -> list[str]:
    """At bf16, raise class 1's logit of every query of `family`'s fast outputs by `offset` (on f32's numbers,
    `faithful`); returns the list the precision hint of each compiled graph is appended to."""
    from vtdemo.engine.fast import FastModel

    real_forward = FastModel.forward

    def strayed(self, *inputs, **kwargs):
        out = real_forward(self, *inputs, **kwargs)
        if self.family == family and self.choice.dtype == "bf16":
            out.logits = out.logits.clone()
            out.logits[..., 1] += offset
        return out

    monkeypatch.setattr(FastModel, "forward", strayed)
    return faithful(monkeypatch)
