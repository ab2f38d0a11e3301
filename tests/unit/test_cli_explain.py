"""`python -m vtdemo explain` with the registry's methods: DETR relevance (class and box edges), Grad-CAM, and the
one-line errors (exit 2) for options that do not fit the model or the image."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_cli import ROOT, run_cli, tiny_cache  # noqa: F401  (tiny_cache is a fixture)

pytestmark = pytest.mark.slow  # the CLI in a process of its own per test (5-25 s each on two cores)

IMAGE = str(ROOT / "assets/examples/chelsea.png")


def _one(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    (item,) = json.loads(proc.stdout)
    return item


def test_detr_relevance_class_and_box(tiny_cache):  # noqa: F811
    cache, repos = tiny_cache
    item = _one(
        run_cli(
            "explain",
            "--model",
            repos["detr"],
            "--method",
            "detr-relevance",
            "--threshold",
            "0.1",
            "--detection",
            "1",
            "--json",
            IMAGE,
            cache=cache,
        )
    )
    assert item["method"] == "detr-relevance" and item["grid"] == [10, 16] and "maps" not in item
    assert set(item["target"]) == {"query", "label_id", "label", "score", "box", "kind"}
    assert item["target"]["kind"] == "class" and max(max(r) for r in item["map"]) == pytest.approx(1.0)
    decoder = _one(
        run_cli(
            "explain", "--model", repos["detr"], "--threshold", "0.1", "--detection", "1", "--json", IMAGE, cache=cache
        )
    )
    assert decoder["target"]["query"] == item["target"]["query"]  # the same detection
    box = _one(
        run_cli(
            "explain",
            "--model",
            repos["detr"],
            "--method",
            "detr-relevance",
            "--threshold",
            "0.1",
            "--detection",
            "1",
            "--target",
            "box",
            "--json",
            IMAGE,
            cache=cache,
        )
    )
    assert list(box["maps"]) == ["x0", "y0", "x1", "y1"] and box["target"]["kind"] == "box"
    for m in box["maps"].values():
        assert len(m) == 10 and len(m[0]) == 16 and max(max(r) for r in m) == pytest.approx(1.0)
        assert min(min(r) for r in m) >= 0


def test_gradcam_methods(tiny_cache):  # noqa: F811
    cache, repos = tiny_cache
    item = _one(
        run_cli("explain", "--model", repos["vit"], "--method", "gradcam", "--class", "3", "--json", IMAGE, cache=cache)
    )
    assert item["grid"] == [14, 14] and item["target"]["index"] == 3
    item = _one(run_cli("explain", "--model", repos["swin"], "--method", "swin-gradcam", "--json", IMAGE, cache=cache))
    assert item["grid"] == [7, 7]


@pytest.mark.parametrize(
    "family,args,says",
    [
        ("detr", ["--method", "swin-rollout"], "does not apply to detr models; choose from detr-decoder, detr-encoder"),
        (
            "detr",
            ["--method", "detr-relevance", "--target", "mask"],
            "--target 'mask' is unknown; choose from class, box",
        ),
        ("vit", ["--method", "rollout", "--target", "box"], "--target box applies to no method of this model"),
        ("detr", ["--method", "detr-relevance", "--detection", "99", "--threshold", "0.1"], "choose 0.."),
        ("vit", ["--class", "1000"], "--class 1000 is out of range"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tiny_cache, family, args, says):  # noqa: F811
    cache, repos = tiny_cache
    proc = run_cli("explain", "--model", repos[family], *args, IMAGE, cache=cache)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr
