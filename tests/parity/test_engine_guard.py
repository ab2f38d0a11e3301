"""The fidelity guard of the fast path on full-size models (ViT-B/16, Swin-T, DETR-R50; random weights in the real
Hub formats, tests/support/full_models.py), on the example photos: fast vs exact, the issue's bar (`pipeline.fidelity`).

The exact path is pinned to timm / transformers by the parity tests; this pins the fast path to the exact one.
Slow (three conversions, ~1-3 min each on two busy cores); the engine cache is per test session.
"""

from __future__ import annotations

import pytest

pytest.importorskip("openvino")
pytest.importorskip("timm")
pytest.importorskip("transformers")

from vtdemo import loader  # noqa: E402
from vtdemo.engine import runtime_info  # noqa: E402
from vtdemo.pipeline import fidelity  # noqa: E402

pytestmark = pytest.mark.slow  # full-size models and three conversions to the fast engine


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    from tests.support.full_models import write_full_repos

    root = tmp_path_factory.mktemp("full")
    repos = write_full_repos(root / "hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(root / "hub"))
        mp.setenv("VTDEMO_ENGINE_CACHE", str(root / "engine"))
        loader.clear_cache()
        yield repos
        loader.clear_cache()


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_classifier_guard(full, photos, family):
    exact, fast = loader.load(full[family]), loader.load(full[family], precision="fast")
    assert runtime_info(fast)["engine"] == "openvino"
    for name, image in photos.items():
        gaps = fidelity.classifier_gaps(exact, fast, image)
        assert fidelity.within_guard(gaps), (family, name, gaps)


def test_detr_guard(full, photos):
    exact, fast = loader.load(full["detr"]), loader.load(full["detr"], precision="fast")
    compared = 0
    for name, image in photos.items():
        gaps = fidelity.detr_gaps(exact, fast, image)
        assert fidelity.within_guard(gaps), (name, gaps)
        compared += int(gaps["detections"])
    assert compared >= 5  # the fixture's heads give detections above 0.7 on the photos
