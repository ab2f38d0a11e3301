"""The fast engine as on a CPU with bf16 units, for the tests of the run-time fidelity check (`bf16_verdict`).

On this project's AVX2 machines OpenVINO accepts the bf16 hint and runs f32, so the numbers are f32's; `stray` perturbs
them as a CPU's bf16 units could, and records the precision hint of every graph compiled.
"""

from __future__ import annotations

from dataclasses import replace

import pytest


def choose_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the fast engine pick OpenVINO bf16 (the device's choice, not forced: the guard applies)."""
    from vtdemo.engine import fast as fast_module

    real = fast_module.choose
    monkeypatch.setattr(fast_module, "choose", lambda device: replace(real(device), dtype="bf16"))
    monkeypatch.delenv("VTDEMO_FAST_DTYPE", raising=False)


def stray(monkeypatch: pytest.MonkeyPatch, family: str, offset: float) -> list[str]:
    """At bf16, raise class 1's logit of every query of `family`'s fast outputs by `offset`; returns the list the
    precision hint of each compiled graph is appended to."""
    from vtdemo.engine import openvino_runtime
    from vtdemo.engine.fast import FastModel

    real_forward = FastModel.forward

    def strayed(self, *inputs, **kwargs):
        out = real_forward(self, *inputs, **kwargs)
        if self.family == family and self.choice.dtype == "bf16":
            out.logits = out.logits.clone()
            out.logits[..., 1] += offset
        return out

    monkeypatch.setattr(FastModel, "forward", strayed)
    hints: list[str] = []
    real_load = openvino_runtime.load_graph

    def spy(*args, **kwargs):
        hints.append(args[5])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(openvino_runtime, "load_graph", spy)
    return hints
