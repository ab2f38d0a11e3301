"""Downloads beside the queue (issue 21 item 3), through gradio_client: while one visitor's typed model downloads
(from a local stand-in for the Hub, throttled), another visitor's photo on a loaded model is classified; the
downloading visitor sees the megabytes come in as the job's progress, and a second new model from the same visitor
is refused in one line until the first is in. Every event of the "model" group holds a model slot."""

from __future__ import annotations

import inspect
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("timm")
gradio_client = pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from tests.support.apps import TinyHub, launched_app, wait_until  # noqa: E402
from tests.support.fake_hub import FakeHub, online_through  # noqa: E402
from tests.support.hubcache import repo_dir  # noqa: E402
from vtdemo import loader, pipeline  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched

CAT = str(Path(__file__).resolve().parents[2] / "assets" / "examples" / "chelsea.png")
TYPED_SWIN, TYPED_VIT = "test/typed-swin", "test/typed-vit"  # tiny models under names the operator did not configure


@pytest.fixture
def two_caches(tiny_hub, tmp_path):
    """(served, local): the Hub's side holds the tiny repos and two typed copies; the app's cache only the tiny ones."""
    served, local = tmp_path / "served", tmp_path / "local"
    shutil.copytree(tiny_hub.cache, served, symlinks=True)
    shutil.copytree(tiny_hub.cache, local, symlinks=True)
    shutil.copytree(repo_dir(served, tiny_hub.repos["swin"]), repo_dir(served, TYPED_SWIN), symlinks=True)
    shutil.copytree(repo_dir(served, tiny_hub.repos["vit"]), repo_dir(served, TYPED_VIT), symlinks=True)
    yield served, TinyHub(local, tiny_hub.repos)
    loader.set_memory_budget(None)
    loader.set_model_slots(None)


def test_every_model_event_holds_a_model_slot_and_the_group_admits_the_downloads(tiny_hub):
    from vtdemo.ui.app import create_app
    from vtdemo.ui.config import AppConfig

    app = create_app(AppConfig(vit_model=tiny_hub.repos["vit"], device="cpu", concurrency=1, downloads=3))
    model_events = [f for f in app.demo.fns.values() if f.concurrency_id == "model"]
    assert len(model_events) >= 15  # classify x2, detect, export, the panels' runs, ...
    generators = 0
    for block_fn in model_events:
        code = getattr(block_fn.fn, "__code__", None)
        assert code is not None and code.co_name in ("call", "steps"), block_fn.name
        # a generator handler stays one (Gradio would otherwise get an un-run generator as its output)
        assert inspect.isgeneratorfunction(block_fn.fn) == inspect.isgeneratorfunction(block_fn.fn.__wrapped__)
        generators += inspect.isgeneratorfunction(block_fn.fn)
    assert generators >= 2  # the comparisons of both columns show their steps
    assert app.demo._queue.default_concurrency_limit == 4  # 1 model slot + 3 downloads beside it
    loader.set_model_slots(None)


def test_a_visitor_is_served_while_another_visitors_model_downloads(two_caches, monkeypatch):
    served, local = two_caches
    fake = FakeHub(served, bytes_per_s=2.5e6)  # the typed Swin's 10 MB take ~4 s
    with launched_app(local) as (vt, url), online_through(fake, local.cache, monkeypatch):
        downloader = Client(url, verbose=False, download_files=False)
        other = Client(url, verbose=False, download_files=False)
        job = downloader.submit(handle_file(CAT), TYPED_SWIN, "swin-rollout", 0.5, api_name="/classify_swin")
        assert wait_until(lambda: TYPED_SWIN in pipeline.downloads_under_way(), 20)

        out = other.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
        assert len(out[0]["confidences"]) == 5  # the configured ViT ran ...
        assert TYPED_SWIN in pipeline.downloads_under_way()  # ... while the download went on

        refused = downloader.predict(handle_file(CAT), TYPED_VIT, "rollout", 0.5, api_name="/classify_vit")
        assert f"your download of {TYPED_SWIN} is still under way (one download per visitor)" in refused[3]
        assert fake.gets[(TYPED_VIT, "model.safetensors")] == 0

        descriptions: set[str] = set()
        while not job.done():
            for unit in job.status().progress_data or []:
                descriptions.add(unit.desc or "")
            time.sleep(0.05)
        result = job.result()
        assert len(result[0]["confidences"]) == 5 and TYPED_SWIN in result[3]
        megabytes = [d for d in descriptions if d.startswith(f"Downloading {TYPED_SWIN}: ") and d.endswith(" MB")]
        assert megabytes, descriptions
        assert fake.gets[(TYPED_SWIN, "model.safetensors")] == 1
