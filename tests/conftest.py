"""Shared fixtures. No test touches the network: the Hub is replaced by a temporary cache in its exact layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Offline before anything imports huggingface_hub (it reads the variable at import), and for our loader too.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hub cache in a temporary folder, used by every Hub call in the test (offline)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from vtdemo import loader

    loader.clear_cache()
    yield cache
    loader.clear_cache()


@pytest.fixture(scope="session")
def photos():
    """The example photos as RGB PIL images, by stem name (chelsea, coffee, astronaut, rocket)."""
    from PIL import Image

    out = {}
    for path in sorted(EXAMPLES.iterdir()):
        if path.suffix.lower() in {".png", ".jpg", ".jpeg"}:
            out[path.stem] = Image.open(path).convert("RGB")
    return out


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory):
    """The tiny ViT, Swin and DETR repos (tests/support/tiny_models.py), written once per test run into a Hub cache
    folder that pytest removes with its other temporary folders: `TinyHub(cache, repos)`."""
    from tests.support.apps import TinyHub
    from tests.support.tiny_models import write_tiny_repos

    cache = tmp_path_factory.mktemp("tiny-hub")
    return TinyHub(cache, write_tiny_repos(cache))


@pytest.fixture(scope="session")
def tiny_panoptic(tiny_hub):
    """`tiny_hub` with the tiny panoptic DETR (`tests.support.tiny_models.write_tiny_panoptic`) added; its repo id."""
    from tests.support.tiny_models import write_tiny_panoptic

    return write_tiny_panoptic(tiny_hub.cache)


@pytest.fixture(scope="session")
def tiny_rtdetr(tiny_hub):
    """`tiny_hub` with a tiny RT-DETR (`tests.support.tiny_models.write_tiny_rtdetr`) added; its repo id."""
    pytest.importorskip("transformers")  # written with its `save_pretrained`
    from tests.support.tiny_models import write_tiny_rtdetr

    return write_tiny_rtdetr(tiny_hub.cache)


@pytest.fixture(scope="module")
def detr(tiny_hub):
    """The tiny DETR (exact, on the CPU), loaded from `tiny_hub` (the video and live-map tests)."""
    from vtdemo import loader

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(tiny_hub.cache))
        loader.clear_cache()
        yield loader.load(tiny_hub.repos["detr"], device="cpu")
        loader.clear_cache()


@pytest.fixture(scope="module")
def rtdetr(tiny_hub, tiny_rtdetr):
    """The tiny RT-DETR (exact, on the CPU; input 320x320), loaded from `tiny_hub` (the webcam and video tests)."""
    from vtdemo import loader

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(tiny_hub.cache))
        loader.clear_cache()
        yield loader.load(tiny_rtdetr, device="cpu")
        loader.clear_cache()
