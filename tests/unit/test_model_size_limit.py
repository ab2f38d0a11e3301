"""The size limit for models typed by visitors (`vtdemo.model_size`, `loader.Limits`; issue 21 item 2): refused in one
line naming the size and the limit, before downloading (the Hub's metadata) and, offline, before reading the file
(an audit hook sees no open of it); the operator's models (no limits) load whatever their size."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import huggingface_hub
import pytest

from vtdemo import loader, model_size
from vtdemo.errors import ModelUnavailableError, for_visitor
from vtdemo.memory import MB

_opened: list[str] | None = None  # set while a test watches the `open` audit events


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str):
        _opened.append(args[0])


sys.addaudithook(_audit)  # a hook cannot be removed: it records only while `_opened` is a list


@pytest.fixture
def hub(tiny_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_hub.cache))
    loader.clear_cache()
    yield tiny_hub.repos
    loader.clear_cache()


@pytest.fixture
def no_download(monkeypatch):
    """Online as far as our code can tell, with every download recorded (and failing)."""
    calls: list[tuple] = []

    def download(*args, **kwargs):
        calls.append(args)
        raise AssertionError("downloaded")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(model_size, "hub_offline", lambda: False)
    monkeypatch.setattr(model_size, "_cached", lambda ref, filename: None)
    return calls


def test_a_large_model_is_refused_from_the_hubs_metadata_before_downloading(hub, no_download, monkeypatch):
    asked: list[str] = []

    def metadata(url, **kwargs):
        asked.append(url)
        return SimpleNamespace(size=3 * 1024 * MB)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    with pytest.raises(ModelUnavailableError) as caught:
        loader.load("someone/huge-vit", "cpu", limits=loader.Limits(2048 * MB))
    line = for_visitor(caught.value)
    assert "someone/huge-vit" in line and "3,072 MB" in line and "2,048 MB" in line and "\n" not in line
    assert asked and "model.safetensors" in asked[0]
    assert no_download == []


def test_unreadable_metadata_is_refused_for_visitors(hub, no_download, monkeypatch):
    def metadata(url, **kwargs):
        raise ConnectionError("the Hub did not answer")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    with pytest.raises(ModelUnavailableError, match="size of its weights could not be read"):
        loader.load("someone/vit", "cpu", limits=loader.Limits(2048 * MB))
    assert no_download == []


def test_an_unknown_repo_says_so(hub, no_download, monkeypatch):
    class RepositoryNotFoundError(Exception):
        pass

    def metadata(url, **kwargs):
        raise RepositoryNotFoundError(url)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    with pytest.raises(ModelUnavailableError, match="no such model"):
        loader.load("nobody/nothing", "cpu", limits=loader.Limits(2048 * MB))


def test_offline_a_cached_file_over_the_limit_is_never_opened(hub, monkeypatch):
    """safetensors opens its file in Rust (no Python audit event), so its reader is watched too; Python-level opens
    of the snapshot (config.json, a .bin through torch.load) are seen by the audit hook."""
    global _opened
    import safetensors.torch

    read: list[str] = []
    real = safetensors.torch.load_file
    monkeypatch.setattr(safetensors.torch, "load_file", lambda path, *a, **k: read.append(path) or real(path, *a, **k))
    swin = hub["swin"]  # ~10 MB of weights in the cache
    _opened = []
    try:
        with pytest.raises(ModelUnavailableError) as caught:
            loader.load(swin, "cpu", limits=loader.Limits(MB))
        opened = list(_opened)
    finally:
        _opened = None
    assert "was not loaded: its weights are 10 MB" in str(caught.value) and "at most 1 MB" in str(caught.value)
    assert read == [] and not any("snapshots" in p for p in opened), (read, opened)
    assert not loader.is_loaded(swin, "cpu")
    loader.load(swin, "cpu")  # the probe works: the operator's load reads it
    assert len(read) == 1 and read[0].endswith("model.safetensors")


def test_within_the_limit_and_the_operators_models_load(hub):
    loader.load(hub["vit"], "cpu", limits=loader.Limits(MB))  # 0.4 MB: allowed
    loader.load(hub["swin"], "cpu")  # no limits (configured): 10 MB loads
    assert loader.is_loaded(hub["vit"], "cpu") and loader.is_loaded(hub["swin"], "cpu")


def test_a_visitor_model_larger_than_the_whole_memory_budget_is_refused(hub):
    loader.set_memory_budget(2)  # MiB; the tiny Swin has 10 MB of weights
    try:
        with pytest.raises(ModelUnavailableError, match="do not fit this server's memory"):
            loader.load(hub["swin"], "cpu", limits=loader.Limits(2048 * MB))
    finally:
        loader.set_memory_budget(None)
