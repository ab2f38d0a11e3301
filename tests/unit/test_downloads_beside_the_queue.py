"""Issue 21 item 3: a visitor's model download runs out of the model slot (other visitors' runs on loaded models go
on), shows its progress, one per visitor and a few at once; two visitors asking for one new model get one download.

Real downloads: `hf_hub_download` fetches the tiny repos from a local stand-in for the Hub's file server
(`tests.support.fake_hub`, throttled so that a download takes seconds) into an empty Hub cache.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tests.support.fake_hub import FakeHub, online_through
from tests.support.hubcache import repo_dir
from vtdemo import fetching, loader, pipeline
from vtdemo.errors import BusyError


@pytest.fixture
def hub(tiny_hub, tmp_path, monkeypatch):
    """The tiny repos served at 4 MB/s (the tiny Swin's 10 MB take ~2.5 s) into an empty cache; one model slot."""
    fake = FakeHub(tiny_hub.cache, bytes_per_s=4e6)
    loader.clear_cache()
    loader.set_model_slots(1)
    fetching.set_download_slots(2)
    with online_through(fake, tmp_path / "cache", monkeypatch):
        yield fake
    loader.set_model_slots(None)
    fetching.set_download_slots(2)
    loader.clear_cache()


def _in_thread(target, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = target(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
        out["done"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _visitor_loads(model: str, session: str) -> pipeline.LoadedModel:
    """What an app handler does: hold a model slot, load (downloading if needed)."""
    with pipeline.models_in_use(slot=True):
        return pipeline.load_model(model, device="cpu", session=session)


def _wait_for_download(repo: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while repo not in pipeline.downloads_under_way():
        assert time.monotonic() < deadline, f"{repo} never started downloading"
        time.sleep(0.02)


def test_a_download_reports_its_megabytes_and_leaves_the_files_in_the_cache(hub, tiny_hub, tmp_path):
    """The tiny DETR (90 MB: huggingface_hub counts in 10 MB chunks) at 40 MB/s."""
    hub.bytes_per_s = 40e6
    detr = tiny_hub.repos["detr"]
    weights = next((repo_dir(tiny_hub.cache, detr) / "snapshots").iterdir()) / "model.safetensors"
    size = f"{weights.stat().st_size / 2**20:,.0f}"
    heard: list[tuple[float, str]] = []
    pipeline.load_model(detr, device="cpu", progress=lambda fraction, text: heard.append((fraction, text)))
    counted = [text for _, text in heard if text.endswith(f" of {size} MB")]
    assert len(counted) >= 5, heard  # the bytes coming in, several times over ~2.3 s
    assert heard[-1] == (pytest.approx(0.45), f"Downloading {detr}: {size} of {size} MB")
    fractions = [fraction for fraction, _ in heard]
    assert fractions == sorted(fractions)
    assert hub.gets[(detr, "model.safetensors")] == 1
    loader.clear_cache()  # loaded again from the files now cached: nothing downloaded twice
    pipeline.load_model(detr, device="cpu")
    assert hub.gets[(detr, "model.safetensors")] == 1


def test_runs_on_a_loaded_model_go_on_while_another_visitor_downloads(hub, tiny_hub):
    vit, swin = tiny_hub.repos["vit"], tiny_hub.repos["swin"]
    _visitor_loads(vit, "a")  # loaded (a quick download: 0.4 MB)
    downloading, out = _in_thread(_visitor_loads, swin, "b")
    _wait_for_download(swin)
    with pipeline.models_in_use(slot=True):  # visitor a's next photo, on the one model slot
        loaded = pipeline.load_model(vit, device="cpu", session="a")
        logits = loaded.model(torch.zeros(1, 3, 224, 224)).logits
    finished = time.monotonic()
    assert logits.shape[-1] == len(loaded.labels)
    assert swin in pipeline.downloads_under_way(), "the run waited for the other visitor's download"
    downloading.join(30)
    assert "error" not in out and out["value"].id == swin
    assert out["done"] > finished


def test_one_download_per_visitor(hub, tiny_hub):
    swin, detr = tiny_hub.repos["swin"], tiny_hub.repos["detr"]
    downloading, out = _in_thread(_visitor_loads, swin, "a")
    _wait_for_download(swin)
    started = time.monotonic()
    with pytest.raises(BusyError) as refused:
        _visitor_loads(detr, "a")
    assert time.monotonic() - started < 1.0  # said at once, not after waiting
    assert str(refused.value) == (
        f"{detr} was not loaded: your download of {swin} is still under way (one download per visitor). "
        "Wait for it to finish, then pick this model again."
    )
    assert hub.gets[(detr, "model.safetensors")] == 0
    downloading.join(30)
    assert "error" not in out


def test_downloads_at_once_are_limited_and_a_visitor_past_them_hears_busy(hub, tiny_hub, monkeypatch):
    swin, detr = tiny_hub.repos["swin"], tiny_hub.repos["detr"]
    pipeline.set_download_slots(1)
    monkeypatch.setattr(fetching, "WAIT_S", 0.5)
    downloading, out = _in_thread(_visitor_loads, swin, "a")
    _wait_for_download(swin)
    with pytest.raises(BusyError, match=r"downloading models for other visitors \(1 at once\)"):
        _visitor_loads(detr, "b")
    assert hub.gets[(detr, "model.safetensors")] == 0
    downloading.join(30)
    assert "error" not in out


def test_two_visitors_asking_for_one_new_model_get_one_download_and_both_are_served(hub, tiny_hub):
    swin = tiny_hub.repos["swin"]
    first, out_a = _in_thread(_visitor_loads, swin, "a")
    _wait_for_download(swin)
    second, out_b = _in_thread(_visitor_loads, swin, "b")
    first.join(30)
    second.join(30)
    assert "error" not in out_a and "error" not in out_b
    assert out_a["value"] is out_b["value"]
    assert hub.gets[(swin, "model.safetensors")] == 1


def test_a_repo_that_does_not_exist_says_so_in_one_line_and_downloads_nothing(hub):
    from vtdemo.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError) as refused:
        _visitor_loads("nobody/no-such-model", "a")
    assert "nobody/no-such-model" in str(refused.value) and "\n" not in str(refused.value)
    assert not pipeline.downloads_under_way()
