"""The one benchmark harness: alternate timing with medians, a Timing row, a reference's saved weights, the CPU name.

Every benchmark in `vtdemo.bench` times through `median_ms` (ours and the reference alternately, so drifts in the
machine's load hit both) and reports `Timing` rows (ours / reference: lower is better, 1.0 = as fast).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class Timing:
    name: str
    ours_ms: float
    ref_ms: float
    reference: str

    @property
    def ratio(self) -> float:
        return self.ours_ms / self.ref_ms


def median_ms(fns: list[Callable[[], object]], runs: int, warmup: int = 2, inference: bool = True) -> list[float]:
    """Run the callables alternately (so drifts in machine load hit both), return each one's median in ms.
    inference: under `torch.inference_mode` (False for work that takes gradients on tensors it makes itself)."""
    times: list[list[float]] = [[] for _ in fns]
    with torch.inference_mode(inference):
        for _ in range(warmup):
            for fn in fns:
                fn()
        for _ in range(runs):
            for i, fn in enumerate(fns):
                t0 = time.perf_counter()
                fn()
                times[i].append((time.perf_counter() - t0) * 1000)
    return [statistics.median(t) for t in times]


def saved_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """A transformers model's weights as `save_pretrained` writes them (the Hub-era key names)."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return load_file(str(Path(d) / "model.safetensors"))


def cpu_name() -> str:
    """`lscpu`'s model name and the flags that decide the fast path (bf16 / AMX units), from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni") if f in flags]
    return f"{name} ({', '.join(wanted) or 'no bf16/AMX flags'})"


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def peak_rss_delta(fn: Callable[[], object], interval: float = 0.005) -> int:
    """Peak resident memory above the level before `fn`, sampled every `interval` s by a thread (torch's CPU
    allocations are invisible to tracemalloc; large blocks are mmapped and returned, so RSS follows them)."""
    import gc
    import threading

    gc.collect()
    base = peak = _rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak, _rss_bytes()) - base


def rss_mb(trim: bool = False) -> float:
    """Resident memory of this process in MB (Linux /proc; elsewhere the peak from `resource`); trim: collect
    garbage and hand freed heap pages back to the OS first (what `release_weights` does)."""
    if trim:
        from ..memory import return_memory

        return_memory()
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
