"""Model memory: how many bytes a model holds, how much memory the machine has, and the default budget for all
resident models together (`vtdemo.loader` keeps its cache within it).

Why: on a public server anyone may type a Hub repo id into a model picker, and a cache limited by count only would
keep six ViT-L models (1.2 GB each) as readily as six tiny ones. The loader therefore counts bytes: the parameters and
buffers of each PyTorch module (shared storages once) plus what a fast model's compiled graphs hold
(`vtdemo.engine.fast.FastModel.resident_bytes`). Activations of a running request are not counted: they come and go
with the request (and the app's cached runs have a budget of their own, `VTDEMO_CACHE_MB`).

The machine's memory is the smaller of the physical memory and the container's limit (cgroup v2 `memory.max`, or
v1 `memory.limit_in_bytes`), since a Hugging Face Space is a container on a larger host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

MB = 2**20
#: The default model memory budget: this share of the machine's memory, at most `DEFAULT_CAP_MB`.
DEFAULT_SHARE = 0.4
DEFAULT_CAP_MB = 6144
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory_bytes() -> int:
    """The memory this process may use: physical memory, lowered by a container's limit where one is set."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
        total = 8 * 2**30
    for name in _CGROUP_LIMITS:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:  # "max" (or a huge v1 number): no limit
            total = int(text)
    return total


def default_budget_mb(machine_bytes: int | None = None) -> int:
    """40 % of the machine's memory, at most 6144 MiB (what `VTDEMO_MODEL_MEMORY_MB` defaults to)."""
    machine = machine_memory_bytes() if machine_bytes is None else machine_bytes
    return max(1, min(DEFAULT_CAP_MB, int(machine * DEFAULT_SHARE / MB)))


def module_bytes(module: nn.Module, seen: set[int] | None = None) -> int:
    """Bytes of a module's parameters and buffers; storages in `seen` (data pointers) are not counted again and are
    added to it, so one `seen` across several models counts shared weights once. Meta tensors (released weights)
    hold nothing."""
    seen = set() if seen is None else seen
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.device.type == "meta":
            continue
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        total += storage.nbytes()
    return total


def element_count(module: nn.Module) -> int:
    """How many numbers a module's parameters and buffers hold (also for meta tensors: their shapes remain)."""
    return sum(t.numel() for t in [*module.parameters(), *module.buffers()])


def return_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc's malloc_trim), so that released weights leave
    the RSS."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # not glibc (macOS, musl): the allocator keeps the pages for reuse, nothing else to do
        pass
