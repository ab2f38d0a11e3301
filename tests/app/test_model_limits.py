"""The app's model budgets (issue 21 items 1 and 2), through gradio_client on the tiny checkpoints: a model typed by a
visitor over `VTDEMO_MAX_MODEL_MB` is refused in one line naming its size and the limit (no server path), while the
configured model of the same size runs; a model memory budget that holds less than all three models evicts the least
recently used, and the cached runs of an evicted model are released with it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("timm")
gradio_client = pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from tests.support.apps import TinyHub, launched_app  # noqa: E402
from tests.support.hubcache import repo_dir  # noqa: E402
from vtdemo import loader  # noqa: E402

pytestmark = pytest.mark.slow  # the app launched per test

CAT = str(Path(__file__).resolve().parents[2] / "assets" / "examples" / "chelsea.png")
SERVER_PATH = re.compile(r"(/tmp/|/home/|/root/|\\.cache|snapshots)")
TYPED = "test/typed-swin"  # the tiny Swin under another name: not one the operator configured


@pytest.fixture
def hub_with_typed(tiny_hub, tmp_path):
    """A copy of the tiny Hub cache with the tiny Swin also under the name `TYPED`; the default budgets after."""
    cache = tmp_path / "hub"
    shutil.copytree(tiny_hub.cache, cache, symlinks=True)
    shutil.copytree(repo_dir(cache, tiny_hub.repos["swin"]), repo_dir(cache, TYPED), symlinks=True)
    yield TinyHub(cache, tiny_hub.repos)
    loader.set_memory_budget(None)  # the app set the process's model budget: back to the default


def test_a_typed_model_over_the_limit_is_refused_the_configured_one_runs(hub_with_typed):
    with launched_app(hub_with_typed, max_model_mb=5) as (vt, url):
        client = Client(url, verbose=False, download_files=False)
        out = client.predict(handle_file(CAT), TYPED, "swin-rollout", 0.5, api_name="/classify_swin")
        status = out[3]
        assert f"{TYPED} was not loaded: its weights are 10 MB" in status and "at most 5 MB" in status, status
        assert not SERVER_PATH.search(status), status
        assert not loader.is_loaded(TYPED, "cpu")
        out = client.predict(handle_file(CAT), "", "swin-rollout", 0.5, api_name="/classify_swin")
        assert len(out[0]["confidences"]) == 5  # the configured Swin (10 MB too) is allowed


def test_a_small_memory_budget_evicts_and_releases_the_runs_of_the_evicted_model(hub_with_typed):
    repos = hub_with_typed.repos
    with launched_app(hub_with_typed, model_memory_mb=100) as (vt, url):  # ViT 0.4 + Swin 11 + DETR 95 MB > 100
        client = Client(url, verbose=False, download_files=False)
        client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
        client.predict(handle_file(CAT), "", "swin-rollout", 0.5, api_name="/classify_swin")
        assert loader.is_loaded(repos["vit"], "cpu") and loader.is_loaded(repos["swin"], "cpu")
        released = vt.services.runs.released
        out = client.predict(
            handle_file(CAT), "", 0.5, [], 100, False, 0.5, "mean", "last", "where it looks", 0.55, api_name="/detect"
        )
        assert out[0] is not None
        assert loader.is_loaded(repos["detr"], "cpu")
        assert not loader.is_loaded(repos["vit"], "cpu") and not loader.is_loaded(repos["swin"], "cpu")
        assert loader.resident() <= 100 * 2**20
        assert vt.services.runs.released - released == 2  # the ViT's and the Swin's cached runs went with them
