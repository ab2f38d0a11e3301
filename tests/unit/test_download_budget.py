"""The disk budget of visitors' downloads (`vtdemo.downloads`, issue 21 item 4): past the budget the least recently
loaded visitor's repo and its engine-cache entries are deleted; a configured model, and a repo that was in the cache
before a visitor asked for it, never are. Downloads are simulated by copying a tiny repo into the Hub cache between
`before_load` and the load (no network here); the loads themselves go through `vtdemo.loader` with `Limits`."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.hubcache import repo_dir
from vtdemo import loader
from vtdemo.downloads import DownloadBudget
from vtdemo.engine import cache as engine_cache
from vtdemo.hub import parse_model_id
from vtdemo.memory import MB


@pytest.fixture
def hub(tiny_hub, tmp_path, monkeypatch):
    """A Hub cache of our own holding the tiny Swin (the configured model) and an engine cache beside it."""
    cache = tmp_path / "hub"
    cache.mkdir()
    shutil.copytree(repo_dir(tiny_hub.cache, tiny_hub.repos["swin"]), repo_dir(cache, tiny_hub.repos["swin"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("VTDEMO_ENGINE_CACHE", str(tmp_path / "engine"))
    loader.clear_cache()
    yield tiny_hub, cache
    loader.clear_cache()


def _visitor_loads(budget: DownloadBudget, tiny_hub, cache, repo: str) -> None:
    """A visitor types `repo`: it is 'downloaded' (a copy of the tiny Swin, 10 MB) and loaded with the limits, and
    an engine-cache entry of 1 MB is written for it, as the fast engine would."""
    limits = loader.Limits(2048 * MB, before_load=budget.before_load, after_load=budget.after_load)
    source = repo_dir(tiny_hub.cache, tiny_hub.repos["swin"])
    original = limits.before_load

    def before(ref):  # the check, then the download the load would do
        original(ref)
        shutil.copytree(source, repo_dir(cache, repo))

    key = engine_cache.entry_key(repo, None, "openvino", "test", "attn", "fixed")
    engine_cache.store(key, lambda folder: (folder / "model.bin").write_bytes(b"\0" * MB))
    loader.load(repo, "cpu", limits=loader.Limits(limits.max_bytes, before, limits.after_load))


def test_the_oldest_visitor_repo_goes_first_and_configured_never(hub):
    tiny_hub, cache = hub
    budget = DownloadBudget(25 * MB, {tiny_hub.repos["swin"]})  # two visitor repos (11 MB each) fit, not three
    for repo in ("visitor/a", "visitor/b"):
        _visitor_loads(budget, tiny_hub, cache, repo)
    assert repo_dir(cache, "visitor/a").exists() and repo_dir(cache, "visitor/b").exists()
    assert 20 * MB < budget.visitor_bytes() <= 25 * MB
    _visitor_loads(budget, tiny_hub, cache, "visitor/c")
    assert not repo_dir(cache, "visitor/a").exists()  # the least recently loaded
    assert repo_dir(cache, "visitor/b").exists() and repo_dir(cache, "visitor/c").exists()
    assert repo_dir(cache, tiny_hub.repos["swin"]).exists()  # configured: never
    models = {json.loads((f / "entry.json").read_text())["key"]["model"] for f in engine_cache.cache_root().iterdir()}
    assert models == {"visitor/b", "visitor/c"}  # its engine-cache entry went with it
    assert budget.visitor_bytes() <= 25 * MB


def test_a_repo_loaded_again_is_the_newest(hub):
    tiny_hub, cache = hub
    budget = DownloadBudget(25 * MB, set())
    _visitor_loads(budget, tiny_hub, cache, "visitor/a")
    _visitor_loads(budget, tiny_hub, cache, "visitor/b")
    budget.after_load(parse_model_id("visitor/a"))  # loaded again (already cached): now the most recent
    _visitor_loads(budget, tiny_hub, cache, "visitor/c")
    assert repo_dir(cache, "visitor/a").exists() and not repo_dir(cache, "visitor/b").exists()


def test_repos_that_were_in_the_cache_before_are_not_the_visitors(hub):
    """A repo the operator placed in the cache (e.g. preload_from_hub), then typed by a visitor: never deleted."""
    tiny_hub, cache = hub
    budget = DownloadBudget(0, set())  # nothing of the visitors' may stay
    swin = tiny_hub.repos["swin"]
    loader.load(swin, "cpu", limits=loader.Limits(2048 * MB, budget.before_load, budget.after_load))
    assert repo_dir(cache, swin).exists()
    _visitor_loads(budget, tiny_hub, cache, "visitor/a")  # the one just loaded stays, even over the budget
    _visitor_loads(budget, tiny_hub, cache, "visitor/b")
    assert repo_dir(cache, swin).exists() and not repo_dir(cache, "visitor/a").exists()
    assert repo_dir(cache, "visitor/b").exists()
