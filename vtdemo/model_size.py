"""How large a model's weights are, found without reading them: the size limit for models typed by visitors.

`weights_bytes(ref)` answers from the file's size on disk (a folder, or a file already in the Hub cache: a `stat`,
the file is never opened) or, when it is not cached, from the Hub's file metadata (`huggingface_hub`'s
`get_hf_file_metadata`, one HEAD request), so that a visitor's 2.5 GB checkpoint is refused **before** anything is
downloaded. `check(ref, limit)` raises the one-line refusal. Which file: the first of `hub.WEIGHT_FILES` that
exists, the one `hub.read_weights` would read.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ModelUnavailableError
from .hub import WEIGHT_FILES, ModelRef, hub_error_message, hub_offline, unavailable
from .memory import MB
from .settings import env_text

log = logging.getLogger(__name__)

#: Metadata errors that say the repo itself cannot be used (anything else: its size is unknown).
_REPO_ERRORS = {"GatedRepoError", "RepositoryNotFoundError", "RevisionNotFoundError"}


class SizeUnknown(Exception):
    """The Hub's metadata could not be read (network, server): the model's size is unknown."""


def _cached(ref: ModelRef, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    assert ref.repo is not None
    found = try_to_load_from_cache(ref.repo, filename, cache_dir=env_text("HF_HUB_CACHE"), revision=ref.revision)
    return Path(found) if isinstance(found, str) else None


def _remote(ref: ModelRef, filename: str) -> int | None:
    """The file's size from the Hub's metadata; None if the repo has no such file."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    assert ref.repo is not None
    try:
        meta = get_hf_file_metadata(hf_hub_url(ref.repo, filename, revision=ref.revision))
    except Exception as exc:  # huggingface_hub raises many types: sort them by name, as hub.fetch_file does
        name = type(exc).__name__
        if name in _REPO_ERRORS:
            raise ModelUnavailableError(hub_error_message(ref, filename, exc), visitor=unavailable(ref.text)) from None
        if "EntryNotFound" in name:
            return None
        raise SizeUnknown(f"{name}: {str(exc)[:200]}") from None
    return meta.size


def weights_bytes(ref: ModelRef) -> int | None:
    """The size in bytes of the weight file `hub.read_weights` would read, read from the disk (never opening the
    file) or from the Hub's metadata (downloading nothing). None when there is none to read (the load then says
    why). Raises `SizeUnknown` when the Hub does not answer, `ModelUnavailableError` for an unknown or gated repo."""
    for filename in WEIGHT_FILES:
        path = ref.folder / filename if ref.folder is not None else _cached(ref, filename)
        if path is not None and path.is_file():
            return path.stat().st_size
        if ref.folder is None and not hub_offline():
            size = _remote(ref, filename)
            if size is not None:
                return size
    return None


def refusal(where: str, size: int | None, limit: int) -> str:
    """The one line a visitor reads when a model is refused by its size (None: the size could not be read)."""
    if size is None:
        return (
            f"{where} was not loaded: the size of its weights could not be read from the Hugging Face Hub, and this "
            f"server only loads typed models of known size (at most {limit / MB:,.0f} MB). Try again later."
        )
    return (
        f"{where} was not loaded: its weights are {size / MB:,.0f} MB, and this server loads typed models of at most "
        f"{limit / MB:,.0f} MB. Pick a smaller model or one of the list."
    )


def check(ref: ModelRef, limit: int) -> int | None:
    """Refuse (`ModelUnavailableError`, one line) a model whose weights are larger than `limit` bytes or whose size
    the Hub cannot tell; returns the size (None: no weights to read, the load says why)."""
    try:
        size = weights_bytes(ref)
    except SizeUnknown as exc:
        log.warning("%s: the Hub's file metadata could not be read (%s): refused for a visitor", ref.text, exc)
        raise ModelUnavailableError(refusal(ref.text, None, limit)) from None
    if size is not None and size > limit:
        log.info("%s refused: weights of %d bytes, over the limit of %d", ref.text, size, limit)
        raise ModelUnavailableError(refusal(ref.text, size, limit))
    return size
