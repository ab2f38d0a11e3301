"""The CLI's explain at another input size, at the photo's aspect ratio, and with high-norm outliers masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.hubcache import write_timm_repo
from tests.support.tiny_models import VIT_ARGS
from tests.support.weights import randomise_classifier
from tests.unit.test_cli import run_cli

pytestmark = pytest.mark.slow  # the CLI in a process of its own per test (5-25 s each on two cores)

ROOT = Path(__file__).resolve().parents[2]
timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def vit224(tmp_path_factory):
    """A tiny timm ViT in the vit_tiny_patch16_224 format at 224 px (14x14 patches)."""
    tmp = tmp_path_factory.mktemp("cli-sizes")
    model = randomise_classifier(timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT_ARGS), 0)
    write_timm_repo(tmp / "hub", "test/vit224", model, VIT_ARGS, tmp, formats=("model.safetensors",))
    return tmp / "hub", "test/vit224"


@pytest.mark.parametrize(
    "flags,grid", [(["--input-size", "448"], [28, 28]), (["--keep-aspect"], [14, 21]), (["--mask-outliers"], [14, 14])]
)
def test_explain_at_other_sizes(vit224, flags, grid):
    cache, repo = vit224
    image = str(ROOT / "assets/examples/chelsea.png")  # 451x300
    proc = run_cli("explain", "--model", repo, "--json", *flags, image, cache=cache)
    assert proc.returncode == 0, proc.stderr
    (item,) = json.loads(proc.stdout)
    assert item["grid"] == grid and len(item["map"]) == grid[0] and len(item["map"][0]) == grid[1]


def test_too_large_a_size_is_one_line(vit224):
    cache, repo = vit224
    proc = run_cli(
        "explain", "--model", repo, "--input-size", "1024", str(ROOT / "assets/examples/chelsea.png"), cache=cache
    )
    assert proc.returncode != 0 and "at most 1024" in proc.stderr and "Traceback" not in proc.stderr
