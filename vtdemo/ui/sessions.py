"""Which visitor's session holds which cached run, so that runs are released when a session ends, and a memory
budget over all of them. No Gradio here.

Each photo's forward pass (with its attention) lives in a `gr.State` of the visitor's session, so that the view
controls re-render without running the model again (see `vtdemo.ui.common`). Gradio keeps a session's state for an
hour after the session is closed (in case the tab comes back), and a real DETR run holds ~150 MB of encoder
attention: a few dozen visitors an hour would exhaust a small server. `RunIndex` fixes both:

- `hold(session, slot, state)` indexes a new run under its session and slot ("vit", "swin", "detect", "webcam"; one
  run per slot: the newer replaces the older, which is marked `superseded` so that a view event still working on it
  cannot write it back over the newer one, see `vtdemo.ui.common.fresh`) and, when the runs held together exceed the budget, releases the least
  recently used ones (never the one just held);
- `touch(state)` marks a run as used (the budget releases the least recently used first);
- `end(session)` releases every run of a session: the app calls it from `demo.unload`, when Gradio notices that the
  visitor's tab (or API client) is gone.

The index holds weak references only: it never keeps a run alive by itself. "Released" means the state's `release()`
drops its heavy fields (the run, maps, files); the empty shell that Gradio still holds is a few hundred bytes, and a
handler that gets one back says the photo must be run again.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from PIL import Image


def footprint(obj: Any, _seen: set | None = None, _depth: int = 0) -> int:
    """Bytes of the tensors, arrays and images reachable from `obj` through dataclasses, lists, tuples and dicts.

    Shared storages count once; models (`torch.nn.Module`, `vtdemo.pipeline.LoadedModel`) are shared by all runs and
    not counted. An estimate for the budget, not an exact measure of Python's heap.
    """
    seen = set() if _seen is None else _seen
    if obj is None or _depth > 8 or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        key = ("storage", storage.data_ptr())
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, Image.Image):
        return obj.width * obj.height * len(obj.getbands())
    if isinstance(obj, torch.nn.Module) or type(obj).__name__ == "LoadedModel":
        return 0
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(footprint(getattr(obj, f.name), seen, _depth + 1) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return sum(footprint(v, seen, _depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(footprint(v, seen, _depth + 1) for v in obj)
    return 0


@dataclasses.dataclass
class _Entry:
    ref: weakref.ref
    nbytes: int


def _uses(state: Any, loaded: Any) -> bool:
    """Does the run a state holds use this very model object (the run's own, or the one it was derived from, such
    as a Swin rebuilt for another input size)? By identity: the fast model and its exact twin share an id but not
    their memory, and evicting one must not release the other's runs."""
    run = getattr(state, "run", None)
    return run is not None and (
        getattr(run, "loaded", None) is loaded or getattr(run, "model_as_loaded", None) is loaded
    )


class RunIndex:
    """Cached runs by (session, slot): released when their session ends, and kept within `budget_bytes` together
    (least recently used released first). Thread-safe; holds weak references only."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()  # least recently used first
        self._keys: dict[int, tuple[str, str]] = {}  # id(state) -> its key, for touch()
        self.released = 0  # runs released so far (sessions ended + over budget), for tests and the log

    def _prune(self) -> None:
        """Forget entries whose state has been garbage-collected (replaced, or deleted by Gradio)."""
        for key in [k for k, e in self._entries.items() if e.ref() is None]:
            self._entries.pop(key)
        self._keys = {id(s): k for k, e in self._entries.items() if (s := e.ref()) is not None}

    def hold(
        self, session: str | None, slot: str, state: Any, nbytes: int | None = None, replacing: Any = None
    ) -> bool:
        """Index `state` as the run of `session` in `slot`; release older runs if the budget is exceeded.

        `replacing`: the run that `state` was derived from (e.g. the same photo at another size); if a newer run has
        superseded it meanwhile, `state` is not held (False): the newer run stays the session's."""
        if state is None:
            return False
        session = session or "-"  # direct calls (tests, scripts) have no session: one shared key
        nbytes = footprint(state) if nbytes is None else int(nbytes)
        with self._lock:
            if getattr(replacing, "superseded", False):
                return False
            victims = []
            self._prune()
            key = (session, slot)
            old = self._entries.pop(key, None)
            previous = old.ref() if old is not None else None
            if previous is not None and previous is not state and hasattr(previous, "superseded"):
                previous.superseded = True
            self._entries[key] = _Entry(weakref.ref(state), nbytes)
            self._keys[id(state)] = key
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.budget_bytes and len(self._entries) > 1:
                old_key, old = next(iter(self._entries.items()))
                if old_key == key:
                    break
                self._entries.pop(old_key)
                total -= old.nbytes
                victims.append(old.ref())
            self._keys = {id(s): k for k, e in self._entries.items() if (s := e.ref()) is not None}
            self._release(victims)
            return True

    def touch(self, state: Any) -> None:
        """The visitor used this run: it is now the most recently used."""
        with self._lock:
            key = self._keys.get(id(state))
            entry = self._entries.get(key) if key else None
            if entry is not None and entry.ref() is state:
                self._entries.move_to_end(key)

    def end(self, session: str | None) -> int:
        """The session is over: release all its runs. Returns how many were released."""
        if not session:
            return 0
        with self._lock:
            keys = [k for k in self._entries if k[0] == session]
            victims = [self._entries.pop(k).ref() for k in keys]
            self._prune()
            return self._release(victims)

    def forget(self, state: Any) -> None:
        """Gradio deleted this state (its time to live ran out): release it and drop it from the index."""
        with self._lock:
            key = self._keys.pop(id(state), None)
            if key is not None and (entry := self._entries.get(key)) is not None and entry.ref() is state:
                self._entries.pop(key)
            self._release([state])

    def release_model(self, loaded: Any) -> int:
        """Release every run made by the model object `loaded` (the model cache evicted it: the runs would keep its
        memory). Returns how many were released."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if _uses(e.ref(), loaded)]
            victims = [self._entries.pop(k).ref() for k in keys]
            self._prune()
            return self._release(victims)

    def _release(self, states: list[Any]) -> int:
        """(Under the lock, so that a run is never seen as gone from the index but not yet released.)"""
        n = 0
        for state in states:
            if state is not None and hasattr(state, "release"):
                state.release()
                n += 1
        self.released += n
        return n

    # ------------------------------------------------------------------------------------------------- reading

    def sessions(self) -> set[str]:
        """Sessions that hold at least one live run."""
        with self._lock:
            return {k[0] for k, e in self._entries.items() if e.ref() is not None}

    def runs_of(self, session: str) -> dict[str, Any]:
        """{slot: state} of one session's live runs."""
        with self._lock:
            return {k[1]: s for k, e in self._entries.items() if k[0] == session and (s := e.ref()) is not None}

    def nbytes(self) -> int:
        """The budgeted size of the live runs."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values() if e.ref() is not None)
