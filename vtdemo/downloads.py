"""The disk budget for models fetched for visitors (`VTDEMO_DOWNLOAD_CACHE_MB`): their Hub-cache repos and their
fast-engine cache entries are deleted, least recently loaded first, once they take more than the budget together.
The operator's models (the configured ones, and any repo that was already in the cache before a visitor asked for it,
e.g. one `preload_from_hub` placed there) are never deleted.

Which repos are the visitors' is kept in a small ledger next to the Hub cache (`vtdemo-visitor-models.json`:
{repo id: last load time}), written atomically, so that it survives restarts. Sizes come from
`huggingface_hub.scan_cache_dir` (the well-kept library piece: blobs shared by revisions counted once); a deleted
repo's folder is removed whole (not through `delete_revisions`, which deletes a commit hash in every repo); engine-
cache entries are found by the model id in their `entry.json` (`vtdemo.engine.cache`). The loader calls
`before_load` / `after_load` for each visitor's model (`vtdemo.loader.Limits`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .engine import cache as engine_cache
from .hub import ModelRef
from .memory import MB
from .settings import env_text

log = logging.getLogger(__name__)

LEDGER = "vtdemo-visitor-models.json"


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache in use ($HF_HUB_CACHE, else huggingface_hub's default)."""
    given = env_text("HF_HUB_CACHE") or env_text("HUGGINGFACE_HUB_CACHE")
    if given:
        return Path(given).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_of(model_id: str) -> str:
    """'org/name@revision' -> 'org/name'."""
    return model_id.strip().partition("@")[0]


def _repo_folder(repo: str) -> Path:
    return hub_cache_dir() / ("models--" + repo.replace("/", "--"))


class DownloadBudget:
    """Keeps the visitors' downloads within `budget_bytes` on disk. protected: model ids never deleted (the
    configured models)."""

    def __init__(self, budget_bytes: int, protected: set[str] | frozenset[str]) -> None:
        self.budget_bytes = int(budget_bytes)
        self.protected = frozenset(repo_of(m) for m in protected)
        self._lock = threading.Lock()
        self._new: set[str] = set()  # repos a visitor asked for that were not in the cache yet

    def before_load(self, ref: ModelRef) -> None:
        """A visitor's model is about to load: note whether its repo is new to the cache (fetched for a visitor)."""
        if ref.repo is not None and ref.repo not in self.protected and not _repo_folder(ref.repo).exists():
            with self._lock:
                self._new.add(ref.repo)

    def after_load(self, ref: ModelRef) -> None:
        """A visitor's model loaded: stamp its repo in the ledger if it is a visitor's, then keep the budget."""
        if ref.repo is None or ref.repo in self.protected:
            return
        with self._lock:
            ledger = self._read()
            if ref.repo in self._new or ref.repo in ledger:
                self._new.discard(ref.repo)
                ledger[ref.repo] = time.time()
                self._write(ledger)
        self.prune(keep=ref.repo)

    def prune(self, keep: str | None = None) -> list[str]:
        """Delete the least recently loaded visitors' repos (never `keep`, never a protected one) until their files
        and engine-cache entries fit the budget. Returns the repos deleted."""
        from huggingface_hub import scan_cache_dir

        with self._lock:
            ledger = self._read()
            if not ledger:
                return []
            info = scan_cache_dir(hub_cache_dir())
            repos = {
                r.repo_id: r for r in info.repos if r.repo_type == "model" and r.repo_id in ledger
            }  # a ledger entry whose repo is gone is forgotten below
            engine = _engine_entries(set(repos))
            sizes = {r: repos[r].size_on_disk + sum(size for _, size in engine.get(r, [])) for r in repos}
            total = sum(sizes.values())
            deleted: list[str] = []
            for repo in sorted(repos, key=lambda r: ledger[r]):
                if total <= self.budget_bytes:
                    break
                if repo == keep or repo in self.protected:
                    continue
                # The whole repo folder (blobs, snapshots, refs). Not `info.delete_revisions(hash)`: it matches a
                # commit hash in every repo, and a repo copied under another name shares its hashes.
                shutil.rmtree(repos[repo].repo_path, ignore_errors=True)
                for folder, _ in engine.get(repo, []):
                    shutil.rmtree(folder, ignore_errors=True)
                total -= sizes[repo]
                deleted.append(repo)
                log.info("download budget: deleted %s (%d MiB) to stay within %d MiB", repo, sizes[repo] // MB,
                         self.budget_bytes // MB)  # fmt: skip
            kept = {r: t for r, t in ledger.items() if r in repos and r not in deleted}
            if kept != ledger:
                self._write(kept)
            return deleted

    def visitor_bytes(self) -> int:
        """Bytes the visitors' repos and their engine entries take now."""
        from huggingface_hub import scan_cache_dir

        with self._lock:
            ledger = self._read()
        repos = [r for r in scan_cache_dir(hub_cache_dir()).repos if r.repo_id in ledger]
        engine = _engine_entries({r.repo_id for r in repos})
        return sum(r.size_on_disk for r in repos) + sum(s for e in engine.values() for _, s in e)

    # ------------------------------------------------------------------------------------------------ the ledger

    @staticmethod
    def _path() -> Path:
        return hub_cache_dir().parent / LEDGER

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self._path().read_text(encoding="utf-8"))
            return {str(k): float(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def _write(self, ledger: dict[str, float]) -> None:
        path = self._path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(ledger, f, indent=1, sort_keys=True)
        os.replace(tmp, path)


def _engine_entries(repos: set[str]) -> dict[str, list[tuple[Path, int]]]:
    """{repo: [(entry folder, bytes)]} of the engine-cache entries of these repos' models."""
    root = engine_cache.cache_root()
    found: dict[str, list[tuple[Path, int]]] = {}
    if not repos or not root.is_dir():
        return found
    for folder in root.iterdir():
        try:
            meta = json.loads((folder / "entry.json").read_text(encoding="utf-8"))
            repo = repo_of(str(meta["key"]["model"]))
            size = sum(int(v) for v in meta["files"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if repo in repos:
            found.setdefault(repo, []).append((folder, size))
    return found
