"""On-disk cache of converted models: one folder per (model, weights, engine version, shape policy, graph).

Location: `$VTDEMO_ENGINE_CACHE`, else `vtdemo-engine/` next to the Hugging Face Hub cache (`$HF_HUB_CACHE/..`,
by default `~/.cache/huggingface/vtdemo-engine`). Each entry is a folder named by the SHA-256 of its key, holding
the runtime's files and `entry.json` = {"key": ..., "files": {name: size in bytes}} written last, so an interrupted
conversion leaves no entry that looks complete. The key (`entry_key`) names the model id, the resolved weight file
(for a Hub snapshot the blob path is the file's content hash; for a folder the path), its size and mtime, the
runtime and its version, our graph format version and the input-shape policy: new weights, a new runtime version
or a changed graph give a new key, so a stale entry is never read. An entry whose `entry.json` is missing, does not
parse, names another key, or whose files are missing or have other sizes is corrupt: it is removed (logged) and
rebuilt. Writes go to a temporary folder renamed into place, so two processes converting at once do not clash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..settings import env_text

log = logging.getLogger(__name__)

#: Bump when the graphs (`vtdemo.engine.graphs`) change what they output: old entries are then not read.
GRAPH_FORMAT = 1


def cache_root() -> Path:
    """Where converted models live (see the module docstring)."""
    given = env_text("VTDEMO_ENGINE_CACHE")
    if given:
        return Path(given).expanduser()
    hub = env_text("HF_HUB_CACHE") or env_text("HUGGINGFACE_HUB_CACHE")
    if hub:
        return Path(hub).expanduser().parent / "vtdemo-engine"
    home = env_text("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home).expanduser() / "vtdemo-engine"


def weights_identity(path: Path | None) -> dict[str, Any]:
    """What identifies a weight file: resolved path (Hub blobs are named by content hash), size, mtime."""
    if path is None:
        return {"weights": None}
    real = Path(path).resolve()
    st = real.stat()
    return {"weights": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def entry_key(
    model_id: str, weights: Path | None, runtime: str, version: str, graph: str, shapes: str
) -> dict[str, Any]:
    """The full key of one converted graph (a JSON-able dict)."""
    return {
        "model": model_id,
        **weights_identity(weights),
        "runtime": runtime,
        "runtime_version": version,
        "graph": graph,
        "graph_format": GRAPH_FORMAT,
        "shapes": shapes,
    }


def entry_dir(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_root() / digest


def _valid(folder: Path, key: dict[str, Any]) -> bool:
    """True if `folder` holds a complete entry for `key`; logs why not."""
    meta_path = folder / "entry.json"
    if not meta_path.is_file():
        log.warning("engine cache entry %s has no entry.json (interrupted conversion?): rebuilding", folder)
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = {str(k): int(v) for k, v in meta["files"].items()}
        stored_key = meta["key"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("engine cache entry %s is corrupt (%s): rebuilding", folder, exc)
        return False
    if stored_key != key:
        log.warning("engine cache entry %s was written for another key: rebuilding", folder)
        return False
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            log.warning("engine cache entry %s: %s is missing or truncated: rebuilding", folder, name)
            return False
    return True


def lookup(key: dict[str, Any]) -> Path | None:
    """The folder of a complete entry for `key`, else None (a broken entry is removed)."""
    folder = entry_dir(key)
    if not folder.exists():
        return None
    if _valid(folder, key):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    return None


def store(key: dict[str, Any], write: Callable[[Path], None]) -> Path:
    """Run `write(folder)` into a fresh temporary folder, record the files' sizes, move it into place."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = entry_dir(key)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        write(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        (tmp / "entry.json").write_text(json.dumps({"key": key, "files": files}, indent=1), encoding="utf-8")
        if final.exists():  # another process got there first, or a broken entry: replace it
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def remove(key: dict[str, Any]) -> None:
    """Drop the entry of `key` (e.g. when the runtime cannot read it although the files look complete)."""
    shutil.rmtree(entry_dir(key), ignore_errors=True)
