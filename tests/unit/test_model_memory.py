"""The model cache's memory budget (`vtdemo.loader`, issue 21): kept by bytes, never evicting a model in use, and an
eviction that really hands the memory back (measured in the process's RSS, not only the cache's length)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from vtdemo import loader
from vtdemo.errors import BusyError
from vtdemo.memory import MB, default_budget_mb, module_bytes


@pytest.fixture
def hub(tiny_hub, monkeypatch):
    """The tiny repos as the Hub cache, an empty model cache and the default budget around each test."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_hub.cache))
    loader.clear_cache()
    yield tiny_hub.repos
    loader.clear_cache()
    loader.set_memory_budget(None)


def _alone(repo: str) -> int:
    """Bytes the model takes when it is the only one loaded."""
    loader.clear_cache()
    loader.load(repo, "cpu")
    size = loader.resident()
    loader.clear_cache()
    return size


def test_default_budget_is_40_percent_capped():
    assert default_budget_mb(8 * 2**30) == int(8 * 1024 * 0.4)
    assert default_budget_mb(64 * 2**30) == 6144


def test_module_bytes_counts_shared_storage_once():
    layer = torch.nn.Linear(10, 10)
    seen: set[int] = set()
    assert module_bytes(layer, seen) == (100 + 10) * 4
    assert module_bytes(layer, seen) == 0  # the same storages again: counted once


def test_budget_of_one_model_keeps_one(hub):
    vit, swin = hub["vit"], hub["swin"]
    loader.set_memory_budget(1)  # MiB: replaced below by the exact bytes
    loader._budget[0] = max(_alone(vit), _alone(swin))
    loader.load(vit, "cpu")
    loader.load(swin, "cpu")
    assert loader.is_loaded(swin, "cpu") and not loader.is_loaded(vit, "cpu")
    assert loader.resident() <= loader.memory_budget()


def test_budget_of_two_models_keeps_both(hub):
    vit, swin = hub["vit"], hub["swin"]
    loader._budget[0] = _alone(vit) + _alone(swin)
    loader.load(vit, "cpu")
    loader.load(swin, "cpu")
    assert loader.is_loaded(vit, "cpu") and loader.is_loaded(swin, "cpu")


def test_model_in_use_is_never_evicted(hub, monkeypatch):
    """Another request's load waits while the only model to evict is in use, then answers busy; the model in use
    stays. Once the run ends, the same load evicts it."""
    vit, swin = hub["swin"], hub["detr"]  # 11 MB in use; 95 MB asked for, with a budget of the larger alone
    loader._budget[0] = max(_alone(vit), _alone(swin))
    monkeypatch.setattr(loader, "WAIT_S", 0.3)
    errors: list[BaseException] = []

    def other_visitor() -> None:
        try:
            with loader.in_use():
                loader.load(swin, "cpu")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    with loader.in_use():
        loader.load(vit, "cpu")
        thread = threading.Thread(target=other_visitor)
        thread.start()
        thread.join(10)
        assert loader.is_loaded(vit, "cpu")
    assert len(errors) == 1 and isinstance(errors[0], BusyError)
    loader.load(swin, "cpu")  # the run is over: now it is evicted
    assert not loader.is_loaded(vit, "cpu") and loader.is_loaded(swin, "cpu")


def test_load_waits_for_a_run_to_finish(hub):
    """A request that needs the room of a model in use gets it as soon as that run ends (no busy answer)."""
    vit, swin = hub["swin"], hub["detr"]
    loader._budget[0] = max(_alone(vit), _alone(swin))
    started, done = threading.Event(), threading.Event()

    def running() -> None:
        with loader.in_use():
            loader.load(vit, "cpu")
            started.set()
            done.wait(10)

    thread = threading.Thread(target=running)
    thread.start()
    started.wait(10)
    threading.Timer(0.3, done.set).start()
    loader.load(swin, "cpu")  # waits for the run above, then evicts its model
    thread.join(10)
    assert loader.is_loaded(swin, "cpu") and not loader.is_loaded(vit, "cpu")


def test_one_request_using_two_models_does_not_wait_on_itself(hub, monkeypatch):
    vit, swin = hub["vit"], hub["swin"]
    loader._budget[0] = max(_alone(vit), _alone(swin))
    monkeypatch.setattr(loader, "WAIT_S", 5.0)
    with loader.in_use():
        loader.load(vit, "cpu")
        loader.load(swin, "cpu")  # over the budget while both are in use by this request: allowed, no wait
        assert loader.is_loaded(vit, "cpu") and loader.is_loaded(swin, "cpu")
    loader.load(hub["detr"], "cpu")
    assert loader.resident() <= loader.memory_budget() or len(loader._cache) == 1


def test_eviction_tells_the_listeners(hub):
    vit, swin = hub["vit"], hub["swin"]
    gone: list[str] = []

    def listener(loaded) -> None:
        gone.append(loaded.id)

    loader.on_evict(listener)
    loader._budget[0] = max(_alone(vit), _alone(swin))
    loader.load(vit, "cpu")
    loader.load(swin, "cpu")
    assert gone == [vit]
    del listener  # held weakly: gone with the function


def _rss() -> int:
    """Resident memory of this process in bytes (/proc/self/statm: pages)."""
    import os

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _write_vit_base(cache: Path) -> str:
    """A ViT-B/16 in timm's Hub format (~344 MB of fp32 weights), written straight into a Hub cache layout."""
    from safetensors.torch import save_file

    from tests.support.hubcache import write_repo
    from vtdemo.models.vit import VisionTransformer
    from vtdemo.models.vit_config import PRESETS

    repo = "test/big-vit"
    config = {
        "architecture": "vit_base_patch16_224",
        "num_classes": 1000,
        "pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.9, "mean": [0.5] * 3, "std": [0.5] * 3},
    }
    snap = write_repo(cache, repo, {"config.json": json.dumps(config)})
    with torch.no_grad():
        model = VisionTransformer(PRESETS["vit_base_patch16_224"])
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(snap / "model.safetensors"))
    del model, state
    return repo


@pytest.mark.slow
def test_eviction_frees_the_memory(tiny_hub, tmp_path, monkeypatch):
    """Load a ViT-B/16 (344 MB), then a tiny model under a budget that holds one: the RSS goes back down."""
    from tests.support.hubcache import write_repo
    from vtdemo.memory import return_memory

    cache = tmp_path / "hub"
    big = _write_vit_base(cache)
    for repo_dir in tiny_hub.cache.iterdir():  # the tiny ViT beside it
        if repo_dir.name.endswith("tiny-vit"):
            for snap in (repo_dir / "snapshots").iterdir():
                write_repo(cache, tiny_hub.repos["vit"], {p.name: p.read_bytes() for p in snap.iterdir()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    loader.clear_cache()
    return_memory()
    try:
        loader.set_memory_budget(400)
        before = _rss()
        loader.load(big, "cpu")
        return_memory()
        loaded = _rss()
        assert loader.resident() > 300 * MB
        loader.set_memory_budget(1)  # MiB: the tiny ViT fits, the big one must go
        loader.load(tiny_hub.repos["vit"], "cpu")
        after = _rss()
        print(f"RSS before {before / MB:.0f} MB, with ViT-B {loaded / MB:.0f} MB, after eviction {after / MB:.0f} MB")
        assert not loader.is_loaded(big, "cpu")
        assert loaded - before > 300 * MB
        assert after - before < 60 * MB
    finally:
        loader.clear_cache()
        loader.set_memory_budget(None)


def test_a_model_that_cannot_load_evicts_nothing(hub, monkeypatch):
    """At the count cap, a load that fails (a repo that is not there, a visitor's typo) leaves every cached model in
    place: room is made for what comes in, not for an id (the first-visit tier lost the shown result this way)."""
    monkeypatch.setenv("VTDEMO_MODEL_CACHE", "2")
    loader.load(hub["vit"], "cpu")
    loader.load(hub["swin"], "cpu")
    told: list[str] = []

    def listener(gone) -> None:  # noqa: ANN001
        told.append(gone.id)

    loader.on_evict(listener)
    with pytest.raises(Exception, match="nobody/no-such-model"):
        loader.load("nobody/no-such-model", "cpu", limits=loader.Limits(max_bytes=2**31))
    with pytest.raises(Exception, match="nobody/no-such-model"):
        loader.load("nobody/no-such-model", "cpu")  # an operator's or a script's id: the same
    assert loader.is_loaded(hub["vit"], "cpu") and loader.is_loaded(hub["swin"], "cpu") and told == []
    loader.load(hub["detr"], "cpu")  # a real third model still keeps the cap of two
    assert told == [hub["vit"]] and not loader.is_loaded(hub["vit"], "cpu")
