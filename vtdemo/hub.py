"""Model id -> files -> config -> our architecture -> converted weights -> strict load (`build`; cached by
`vtdemo.loader`).

A model id is a Hugging Face repo id (`timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`), optionally with a revision
(`facebook/detr-resnet-50@no_timm`), or a local folder holding the same files. Files come through
`huggingface_hub.hf_hub_download`, so the Hub cache, `HF_HUB_OFFLINE=1`, `HF_HUB_CACHE` and tokens behave as users
expect. Supported formats:

- timm: `config.json` with `architecture` (vit_*, deit_*, swin_*) + `pretrained_cfg`; weights already in our names.
- transformers: `config.json` with `model_type` vit / deit / swin / detr / rt_detr / rt_detr_v2, plus
  `preprocessor_config.json`.

Weights: `model.safetensors` first, else `pytorch_model.bin` read with `torch.load(weights_only=True)`; nothing else is
ever unpickled and no remote code runs. Every failure is a `VtdemoError` that names the repo or file and what to do.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from . import families, preprocess
from . import labels as label_names
from .checkpoint import build_checked
from .errors import CheckpointError, ModelUnavailableError
from .settings import env_flag, env_text

log = logging.getLogger(__name__)

FIX_OFFLINE = (
    "connect once to download it, set HF_HUB_OFFLINE=1 with a filled cache (HF_HUB_CACHE), "
    "or pass a local folder with its config.json and weights"
)

#: The weight files a model is read from, in the order tried (`read_weights`; `vtdemo.model_size` checks the same).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MAX_ID_LENGTH = 255  # the Hub allows 96 characters per repo name; longer ids are never valid
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass
class LoadedModel:
    """A ready model: weights loaded, `.eval()`, on `device`, with the preprocessing and labels of its source."""

    id: str
    family: str  # "vit" | "swin" | "detr" | "rtdetr"
    format: str  # "timm" | "transformers"
    model: nn.Module
    config: Any
    labels: tuple[str, ...]
    preprocess: preprocess.PreprocessConfig
    device: torch.device
    precision: str = "exact"  # "exact" (fp32 PyTorch) or "fast" (see vtdemo.engine; model is then a FastModel)
    weights: Path | None = None  # the weight file it was loaded from (keys the fast engine's conversion cache)


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: a Hub repo at a revision, or a local folder."""

    text: str
    repo: str | None = None
    revision: str | None = None
    folder: Path | None = None


def parse_model_id(model: str) -> ModelRef:
    """'org/name', 'org/name@revision' or a folder path -> ModelRef."""
    text = str(model).strip()
    if not text:
        raise ModelUnavailableError("no model given: pass a Hugging Face repo id (org/name[@revision]) or a folder")
    if len(text) > MAX_ID_LENGTH or "\x00" in text:
        raise ModelUnavailableError(
            f"the model id is {len(text)} characters long; a Hugging Face repo id "
            f"(org/name[@revision]) or a folder path has at most {MAX_ID_LENGTH}"
        )
    path = Path(text).expanduser()
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError:  # e.g. a path component longer than the file system allows
        is_dir = exists = False
    if is_dir:
        return ModelRef(text=text, folder=path.resolve())
    if looks_like_path(text):
        raise ModelUnavailableError(f"{text}: no such folder")
    repo, _, revision = text.partition("@")
    if not _REPO_RE.match(repo) or ".." in repo or exists:
        raise ModelUnavailableError(f"'{text}' is neither a folder nor a Hugging Face repo id (org/name[@revision])")
    return ModelRef(text=text, repo=repo, revision=revision or None)


def looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.count("/") > 1


def hub_error_message(ref: ModelRef, filename: str, exc: Exception) -> str:
    name = type(exc).__name__
    where = f"{ref.repo}" + (f"@{ref.revision}" if ref.revision else "")
    if name == "GatedRepoError":
        return f"{where} is gated: accept its licence on the Hub and log in (`hf auth login`)"
    if name == "RepositoryNotFoundError":
        return f"{where}: no such model on the Hugging Face Hub (or it is private); check the repo id"
    if name == "RevisionNotFoundError":
        return f"{where}: the repo has no revision '{ref.revision}'"
    if name == "EntryNotFoundError":
        return f"{where} has no file {filename}"
    return (
        f"cannot download {where} ({filename}): no connection to the Hugging Face Hub and not in the cache; "
        f"{FIX_OFFLINE}"
    )


def unavailable(where: str) -> str:
    """What a web visitor reads when `where` cannot be fetched or read on the server (the operator's remedy is in
    the log and in docs/deployment.md)."""
    return (
        f"{where} could not be loaded on this server right now (it cannot download it, or its files are not usable "
        "here). Pick one of the models in the list, or try again later."
    )


def fetch_file(ref: ModelRef, filename: str, required: bool = True, tqdm_class: type | None = None) -> Path | None:
    """Path of `filename` in the folder or the Hub repo (downloaded into the cache if needed; tqdm_class: the
    progress bar `hf_hub_download` uses, see `prefetch`).

    A missing optional file gives None; a missing required file raises `ModelUnavailableError`.
    """
    if ref.folder is not None:
        path = ref.folder / filename
        if path.is_file():
            return path
        if required:
            raise ModelUnavailableError(
                f"{ref.folder} has no {filename}; a model folder needs config.json and "
                "model.safetensors (or pytorch_model.bin)"
            )
        return None
    from huggingface_hub import hf_hub_download  # imported lazily: it reads HF_* variables at import

    offline = hub_offline()
    assert ref.repo is not None  # a folder reference was answered above
    try:
        return Path(
            hf_hub_download(
                ref.repo,
                filename,
                revision=ref.revision,
                cache_dir=env_text("HF_HUB_CACHE"),
                local_files_only=offline,
                tqdm_class=tqdm_class,
            )
        )
    except Exception as exc:  # huggingface_hub raises many types; each becomes one readable line
        message = hub_error_message(ref, filename, exc)
        if type(exc).__name__ in {"GatedRepoError", "RepositoryNotFoundError", "RevisionNotFoundError"} or required:
            raise ModelUnavailableError(message, visitor=unavailable(ref.text)) from None
        log.debug("optional %s not available: %s", filename, message)
        return None


def files_missing(ref: ModelRef) -> bool:
    """Would loading this Hub model download something: its config.json or weights not in the local cache yet?
    False for a folder and when the Hub is not reachable (then nothing can be downloaded; the load says why)."""
    repo = ref.repo
    if repo is None or hub_offline():
        return False
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> str | None | object:
        return try_to_load_from_cache(repo, filename, cache_dir=env_text("HF_HUB_CACHE"), revision=ref.revision)

    if not isinstance(cached("config.json"), str):
        return True
    for filename in WEIGHT_FILES:  # the first that exists is the one read (`read_weights`)
        found = cached(filename)
        if isinstance(found, str):
            return False
        if found is None:  # not known to be absent: it may be on the Hub
            return True
    return True


def on_disk(ref: ModelRef) -> bool:
    """Can this model be built without downloading anything: a folder with its config.json, or a Hub repo whose
    config.json and weights are in the local cache? (Reads the disk only; never asks the Hub.)"""
    if ref.folder is not None:
        return (ref.folder / "config.json").is_file()
    from huggingface_hub import try_to_load_from_cache

    repo = ref.repo
    assert repo is not None

    def cached(filename: str) -> bool:
        found = try_to_load_from_cache(repo, filename, cache_dir=env_text("HF_HUB_CACHE"), revision=ref.revision)
        return isinstance(found, str)

    return cached("config.json") and any(cached(f) for f in WEIGHT_FILES)


def prefetch(ref: ModelRef, report: Callable[[int, int | None], None] | None = None) -> None:
    """Download the files `build` reads (config.json, preprocessor_config.json if any, the weights) into the Hub
    cache without loading them, calling `report(bytes so far, total bytes or None)` as the weights come in. Errors
    are those of `fetch_file` (one line each)."""
    fetch_file(ref, "config.json")
    fetch_file(ref, "preprocessor_config.json", required=False)
    bar = None if report is None else _reporting_bar(report)
    for filename in WEIGHT_FILES:
        if fetch_file(ref, filename, required=False, tqdm_class=bar) is not None:
            return


def _reporting_bar(report: Callable[[int, int | None], None]) -> type:
    """A silent tqdm class for `hf_hub_download` that hands its byte counts to `report`."""
    from tqdm import tqdm

    class Reporting(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "disable": False, "file": _Nowhere()})
            report(int(self.n), self.total)

        def update(self, n: float | None = 1) -> bool | None:
            done = super().update(n)
            report(int(self.n), self.total)
            return done

    return Reporting


class _Nowhere:
    """A file that swallows tqdm's bar (the visitor sees the app's progress, not the server's stderr)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def hub_offline() -> bool:
    """Read only the local cache (HF_HUB_OFFLINE is set, or the Hub's host cannot be resolved)?"""
    return env_flag("HF_HUB_OFFLINE") or not hub_reachable()


_reachable: dict[str, tuple[float, bool]] = {}


def hub_reachable(ttl: float = 60.0) -> bool:
    """Can the Hub's host name be resolved? Checked at most once a minute.

    Without it, huggingface_hub retries each request five times with back-off (~25 s per file) before giving up or
    falling back to the cache; with no DNS we go straight to the cache (`local_files_only`) instead.
    """
    host = urlparse(env_text("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    now = time.monotonic()
    seen = _reachable.get(host)
    if seen is None or now - seen[0] > ttl:
        try:
            socket.getaddrinfo(host, 443)
            seen = (now, True)
        except OSError:
            seen = (now, False)
            log.info("%s cannot be resolved: using the local Hugging Face cache only", host)
        _reachable[host] = seen
    return seen[1]


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{what} ({path}) is not valid JSON: {exc}; delete it to download it again") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} ({path}) is not a JSON object")
    return data


def read_weights(ref: ModelRef) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict of `model.safetensors`, else of `pytorch_model.bin` (weights_only); CPU tensors."""
    path = fetch_file(ref, WEIGHT_FILES[0], required=False)
    if path is not None:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), path
        except Exception as exc:  # SafetensorError, OSError, ValueError on a damaged header or body
            raise CheckpointError(
                f"{path} is corrupt or truncated ({exc}); delete it so that it is downloaded again"
            ) from None
    path = fetch_file(ref, WEIGHT_FILES[1], required=False)
    if path is None:
        where = ref.folder or ref.repo
        raise ModelUnavailableError(
            f"cannot get the weights of {where}: neither model.safetensors nor "
            f"pytorch_model.bin is available; {FIX_OFFLINE}"
        )
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (refused object), RuntimeError / EOFError on a damaged file
        raise CheckpointError(
            f"{path} cannot be read safely ({type(exc).__name__}: {str(exc)[:200]}); "
            "delete it so that it is downloaded again"
        ) from None
    for key in ("state_dict", "model"):  # some .bin files wrap the state dict
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return data, path


def build(ref: ModelRef, device: torch.device) -> LoadedModel:
    source = ref.text
    config_path = fetch_file(ref, "config.json")
    assert config_path is not None  # required: a missing file raised
    config = read_json(config_path, f"config.json of {source}")
    fmt, architecture = families.architecture_of(config, source)
    family = architecture.family
    pp_path = fetch_file(ref, "preprocessor_config.json", required=False) if fmt == "transformers" else None
    pp = read_json(pp_path, f"preprocessor_config.json of {source}") if pp_path else None
    arch, ctor, conv = architecture.modules()

    if fmt == "timm":
        num_classes = int(config.get("num_classes", 1000))
        cfg = arch.config_from_timm(config["architecture"], num_classes, config.get("model_args"))
        prep = preprocess.config_from_timm(config.get("pretrained_cfg", {}))
        given = config.get("label_names")  # timm writes this when the model has names; ImageNet files usually don't
        names = label_names.for_classes(num_classes, dict(enumerate(given)) if given else None)
        convert = conv.from_timm
    else:
        cfg = arch.config_from_hf(config)
        if family == "rtdetr":  # RTDetrImageProcessor: squash to 640x640, x / 255 (its defaults without a file)
            prep = preprocess.config_from_rtdetr(pp)
        else:
            if pp is None:  # no preprocessor file: the defaults of the matching transformers image processor
                pp = {
                    "size": {"height": config.get("image_size", 224), "width": config.get("image_size", 224)},
                    "resample": 3 if family == "swin" else 2,
                }
                if family == "swin":
                    pp.update(image_mean=list(preprocess.IMAGENET_MEAN), image_std=list(preprocess.IMAGENET_STD))
            prep = preprocess.config_from_hf(pp, detr=family == "detr")
        names = label_names.for_classes(cfg.num_classes, config.get("id2label"), detection=family == "detr")
        convert = conv.from_hf

    state_dict, weights_path = read_weights(ref)
    try:
        converted = convert(state_dict)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot convert the weights of {source} ({weights_path.name}): {exc}") from None
    model = build_checked(ctor, cfg, converted, f"{source} ({weights_path.name})")
    model.eval().requires_grad_(False).to(device)
    log.info("loaded %s (%s %s) on %s", source, fmt, family, device)
    return LoadedModel(
        id=source,
        family=family,
        format=fmt,
        model=model,
        config=cfg,
        labels=names,
        preprocess=prep,
        device=device,
        weights=weights_path,
    )
