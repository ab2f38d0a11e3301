"""Write tiny checkpoints in the exact on-disk layout of the Hugging Face Hub cache.

`hf_hub_download(repo, file, revision=...)` with `HF_HUB_OFFLINE=1` resolves
`$HF_HUB_CACHE/models--ORG--NAME/refs/REVISION` (a 40-hex commit id, no trailing newline) and then reads
`snapshots/COMMIT/FILE`. Tests write exactly that, so our loader runs the same code path a real download
leaves behind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file


def repo_dir(cache: Path, repo_id: str) -> Path:
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def write_repo(
    cache: Path,
    repo_id: str,
    files: Mapping[str, bytes | str | dict],
    revision: str = "main",
) -> Path:
    """Place `files` (name -> bytes, text, or a dict written as JSON) as one commit of `repo_id` under `revision`.

    Returns the snapshot folder. A second call with another revision adds a second snapshot and ref.
    """
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    root = repo_dir(cache, repo_id)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = snap / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            content = json.dumps(content, indent=2)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return snap


def safetensors_bytes(state_dict: Mapping[str, torch.Tensor], tmp: Path) -> bytes:
    """Serialise a state dict the way `save_pretrained` / timm's hub push do (contiguous, shared storage split)."""
    path = Path(tmp) / "_tmp.safetensors"
    save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, str(path), metadata={"format": "pt"})
    data = path.read_bytes()
    path.unlink()
    return data


def torch_bin_bytes(state_dict: Mapping[str, torch.Tensor], tmp: Path) -> bytes:
    """Serialise a state dict as a `pytorch_model.bin` (a plain `torch.save` of tensors)."""
    path = Path(tmp) / "_tmp.bin"
    torch.save({k: v.detach().clone() for k, v in state_dict.items()}, str(path))
    data = path.read_bytes()
    path.unlink()
    return data


def hub_files_of(model, tmp: Path) -> dict[str, bytes]:
    """What `save_pretrained` of a transformers model writes (config.json, model.safetensors), as name -> bytes.

    transformers 5 renames some modules in memory (e.g. ViT `layers.N.attention.q_proj`) but writes the Hub-era
    names (`encoder.layer.N.attention.attention.query`) to disk: the files are the format we must read.
    """
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp) as d:
        model.save_pretrained(d)
        return {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}


def hub_state_dict(model, tmp: Path) -> dict[str, torch.Tensor]:
    """The state dict exactly as `save_pretrained` writes it to `model.safetensors` (Hub-era key names)."""
    from safetensors.torch import load

    return load(hub_files_of(model, tmp)["model.safetensors"])


def write_timm_repo(
    cache: Path,
    repo_id: str,
    model,
    model_args: dict,
    tmp: Path,
    formats: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin"),
    revision: str = "main",
) -> Path:
    """A timm model as timm itself writes it for the Hub (`timm.models._hub.save_for_hf`): config.json + weights."""
    import tempfile

    from timm.models._hub import save_for_hf

    with tempfile.TemporaryDirectory(dir=tmp) as d:
        save_for_hf(model, d, safe_serialization="both", model_args=model_args)
        files = {p.name: p.read_bytes() for p in Path(d).iterdir() if p.name == "config.json" or p.name in formats}
    return write_repo(cache, repo_id, files, revision=revision)


def write_transformers_repo(
    cache: Path,
    repo_id: str,
    model,
    tmp: Path,
    preprocessor: dict | None = None,
    formats: tuple[str, ...] = ("model.safetensors",),
    revision: str = "main",
) -> Path:
    """A transformers model as `save_pretrained` writes it, plus an optional `preprocessor_config.json`.

    `formats` picks the weight files: "model.safetensors" and/or "pytorch_model.bin" (some Hub repos, such as
    facebook/deit-base-patch16-224, only have the latter).
    """
    files: dict[str, bytes | dict] = {}
    saved = hub_files_of(model, tmp)
    files["config.json"] = saved["config.json"]
    state = None
    for name in formats:
        if name == "model.safetensors":
            files[name] = saved["model.safetensors"]
        else:
            from safetensors.torch import load

            state = state or load(saved["model.safetensors"])
            files[name] = torch_bin_bytes(state, tmp)
    if preprocessor is not None:
        files["preprocessor_config.json"] = preprocessor
    return write_repo(cache, repo_id, files, revision=revision)
