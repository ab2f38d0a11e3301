"""`python -m vtdemo bench`: our speed against timm / transformers, same weights, same process.

One harness (`harness.py`: alternate timing, medians, `Timing` rows), two sets of benchmarks: `models.py` (our
PyTorch models and explanations at precision exact) and `engine.py` (the fast path end to end, the webcam path, the
memory of the fast engine). The references are test-only dependencies (`pip install -r requirements-dev.txt`),
imported inside each benchmark: nothing here is on the app's import path. Machines are noisy: compare ratios from
the same run, not absolute times across runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch

from ..errors import VtdemoError
from . import models
from .harness import Timing, cpu_name

BENCHES: dict[str, Callable[[int], list[Timing]]] = {
    "vit": models.bench_vit,
    "swin": models.bench_swin,
    "detr": models.bench_detr,
    "dinov2": models.bench_dinov2,
    "rtdetr": models.bench_rtdetr,
    "vit-explain": models.bench_vit_explain,
    "swin-explain": models.bench_swin_explain,
    "vit-relevance": models.bench_vit_relevance,
    "detr-relevance": models.bench_detr_relevance,
    "evaluate": models.bench_evaluate,
}


def _fast_bench(name: str) -> Callable[[int], list[Timing]]:
    def run(runs: int) -> list[Timing]:  # imported on use: the fast engine needs OpenVINO
        from . import engine

        return getattr(engine, name)(runs)

    return run


# The fast path, end to end from a decoded photo, against timm / transformers fp32 (engine.py).
BENCHES.update(
    {
        "fast": _fast_bench("bench_fast"),
        "rtdetr-fast": _fast_bench("bench_rtdetr_fast"),
        "dinov2-fast": _fast_bench("bench_dinov2_fast"),
        "grid-fast": _fast_bench("bench_grid_fast"),
        "webcam": _fast_bench("bench_webcam"),
        "fast-memory": _fast_bench("bench_fast_memory"),
    }
)


# What `--only` runs when it is not given: our PyTorch models and their rollout against the references.
DEFAULT = ("vit", "swin", "detr", "vit-explain", "swin-explain")

# Environment variables that change what a run measures, printed in its header when set: the precision of the fast
# engine, and caps on the instruction set (oneDNN, as used by OpenVINO and PyTorch; PyTorch's own kernels; MKL).
# A capped run does not stand in for a CPU of that class (docs/performance.md, "Capping the instruction set").
_SETTINGS_IN_HEADER = ("VTDEMO_FAST_DTYPE", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def run_bench(runs: int = 10, only: list[str] | None = None, threads: int | None = None) -> int:
    """Print a table of medians and ratios; returns the exit status."""
    try:
        import timm  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise VtdemoError(
            "the benchmark compares against timm and transformers: pip install -r requirements-dev.txt"
        ) from None
    if threads:
        torch.set_num_threads(threads)
    import platform

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU fp32, batch 1, median of {runs} runs, "
        f"CPU {cpu_name() or platform.processor()}"
    )
    settings = [f"{k}={os.environ[k]}" for k in _SETTINGS_IN_HEADER if os.environ.get(k)]
    if settings:
        print("set for this run: " + " ".join(settings))
    print(f"{'model':<52} {'ours ms':>9} {'ref ms':>9} {'ratio':>6}  reference")
    for name in only or list(DEFAULT):
        if name not in BENCHES:
            raise VtdemoError(f"unknown benchmark '{name}'; choose from {', '.join(BENCHES)}")
        for t in BENCHES[name](runs):
            print(f"{t.name:<52} {t.ours_ms:9.1f} {t.ref_ms:9.1f} {t.ratio:6.2f}  {t.reference}")
            sys.stdout.flush()
    return 0
