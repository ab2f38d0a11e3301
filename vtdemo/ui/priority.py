"""Model calls give way to the server's event loop: once a model call starts, every thread of the process but the
event loop's (and the main thread) runs at a lower CPU priority, a higher `nice`.

Why: Gradio's event loop does the work of every visitor's light events (a threshold change, a view of a cached run):
it takes the request, post-processes the outputs and streams them back. On a 2-core host a model call keeps both cores
busy for seconds (PyTorch's and OpenVINO's worker threads), and a threshold change waited for a core behind it. With
the model's threads at nice 10 the scheduler lets the event loop in first, and the model loses only the milliseconds
the loop needs. Measured on the 2-core AMD EPYC (AVX2), two clients running models while a third changes the
threshold 60 times: p50 0.20 -> 0.16 s, p95 0.27 -> 0.22 s (docs/deployment.md, `VTDEMO_MODEL_NICE`).

How: Linux gives each thread its own nice value, and a thread starts with its creator's. At each model call,
`yield_to_event_loop()` raises the nice of every thread of the process but the event loops' and the main thread's to
the configured value: the calling worker, the thread pools of PyTorch and OpenVINO, and Gradio's other workers. The
main thread is left as it is (under `python app.py` it only waits; a program that embeds the app, or a test run,
keeps its own priority, and so do the processes it starts). Raising a nice value needs no privilege; it is never
lowered again (that would), so a worker thread that later runs a light event runs it at the models' nice, as before.
The value is the app's `VTDEMO_MODEL_NICE`: 10 on a Hugging Face Space, 0 (off) elsewhere (`ui.config`). Not Linux,
or no event loop found: nothing is changed.
"""

from __future__ import annotations

import os
import sys
import threading

_NICE = 0  # set by `configure` (the app's setting); 0: off
_LOOPS: set[int] = set()  # native ids of the event loop threads seen (one per app in the process)
_WORKER = threading.local()  # per worker thread: the native id of the loop that started it


def configure(nice: int) -> None:
    """The nice value of model calls (0: leave every thread as it is)."""
    global _NICE
    _NICE = max(0, min(19, int(nice))) if sys.platform.startswith("linux") else 0


def _event_loop_thread() -> int | None:
    """The native id of the thread running the event loop that started this worker thread (anyio's, as Gradio's
    handlers run); None when called from any other thread. Asked once per worker thread."""
    if not hasattr(_WORKER, "loop"):
        try:
            import anyio.from_thread

            _WORKER.loop = anyio.from_thread.run_sync(threading.get_native_id)
        except Exception:  # not in an anyio worker thread (a direct call)
            return None
    return _WORKER.loop


def yield_to_event_loop() -> int:
    """Raise every thread but the event loop's to the configured nice. Returns how many threads were changed."""
    if _NICE <= 0:
        return 0
    loop = _event_loop_thread()
    if loop is None:
        return 0
    _LOOPS.add(loop)
    spared = _LOOPS | {threading.main_thread().native_id}
    changed = 0
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        if tid not in spared and _lower(tid):
            changed += 1
    return changed


def _lower(tid: int) -> bool:
    """Raise thread `tid` to the configured nice if it is below it (never lowered); False if unchanged."""
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < _NICE:
            os.setpriority(os.PRIO_PROCESS, tid, _NICE)
            return True
    except OSError:  # the thread has just ended, or the host refuses
        pass
    return False


def lower_this_thread() -> bool:
    """Run the calling thread at the configured nice, and with it the threads it starts from now on (a thread starts
    with its creator's nice): for background work that is no visitor's event, such as the warm-up, so that it gives
    way to the event loop from its first step. Returns whether the nice changed."""
    return _NICE > 0 and _lower(threading.get_native_id())


def event_loops() -> set[int]:
    """The native ids of the event loop threads seen so far (spared by `yield_to_event_loop`)."""
    return set(_LOOPS)
