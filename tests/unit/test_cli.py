"""The command line contract: `python -m vtdemo classify|detect`, JSON schema, tables, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.hubcache import write_timm_repo

pytestmark = pytest.mark.slow  # the CLI in a process of its own per test (5-25 s each on two cores)

ROOT = Path(__file__).resolve().parents[2]
timm = pytest.importorskip("timm")
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "vtdemo", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


@pytest.fixture(scope="module")
def vit_repo(tmp_path_factory):
    """A tiny timm ViT with 1000 classes (so ImageNet names apply) in a Hub cache; returns (cache, repo, model)."""
    tmp = tmp_path_factory.mktemp("cli")
    cache = tmp / "hub"
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000, **TINY).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    write_timm_repo(cache, "timm/vit_tiny_patch16_224.test", model, TINY, tmp)
    return cache, "timm/vit_tiny_patch16_224.test", model


def test_classify_json_contract(vit_repo, tmp_path):
    cache, repo, model = vit_repo
    images = [ROOT / "assets/examples/chelsea.png", ROOT / "assets/examples/rocket.jpg"]
    proc = run_cli("classify", "--model", repo, "--top-k", "3", "--json", *map(str, images), cache=cache)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [o["image"] for o in out] == [str(p) for p in images]  # argument order
    from torchvision.models import ResNet50_Weights

    names = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    for item in out:
        assert set(item) == {"image", "model", "predictions", "runtime"} and item["model"] == repo
        preds = item["predictions"]
        assert len(preds) == 3 and all(set(p) == {"index", "label", "score"} for p in preds)
        scores = [p["score"] for p in preds]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert all(p["label"] == names[p["index"]] for p in preds)


def test_top_k_may_be_every_class_and_scores_sum_to_one(vit_repo):
    cache, repo, _ = vit_repo
    proc = run_cli(
        "classify", "--model", repo, "--top-k", "1000", "--json", str(ROOT / "assets/examples/coffee.png"), cache=cache
    )
    preds = json.loads(proc.stdout)[0]["predictions"]
    assert len(preds) == 1000 and sum(p["score"] for p in preds) == pytest.approx(1.0, abs=1e-4)
    assert len({p["index"] for p in preds}) == 1000


def test_table_output(vit_repo):
    cache, repo, _ = vit_repo
    proc = run_cli("classify", "--model", repo, str(ROOT / "assets/examples/chelsea.png"), cache=cache)
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(str(ROOT / "assets/examples/chelsea.png")) and len(lines) == 6
    assert lines[1].lstrip().startswith("1.") and "%" in lines[1]


def test_bad_images_give_one_line_errors_and_the_rest_still_runs(vit_repo, tmp_path):
    cache, repo, _ = vit_repo
    fake = tmp_path / "page.jpg"
    fake.write_text("<html><body>not a picture</body></html>")
    missing = tmp_path / "missing.png"
    good = ROOT / "assets/examples/chelsea.png"
    proc = run_cli("classify", "--model", repo, "--json", str(missing), str(fake), str(good), cache=cache)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2
    assert str(missing) in errors[0] and "no such file" in errors[0]
    assert str(fake) in errors[1] and "unsupported format" in errors[1]
    out = json.loads(proc.stdout)
    assert [o["image"] for o in out] == [str(missing), str(fake), str(good)]
    assert "error" in out[0] and "error" in out[1] and len(out[2]["predictions"]) == 5


def test_unknown_repo_offline(tmp_path):
    proc = run_cli(
        "classify",
        "--model",
        "someone/unknown-vit",
        str(ROOT / "assets/examples/chelsea.png"),
        cache=tmp_path / "empty",
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "someone/unknown-vit" in line and "connect once" in line and "folder" in line


def test_corrupt_safetensors(vit_repo, tmp_path):
    _, _, model = vit_repo
    cache = tmp_path / "hub"
    snap = write_timm_repo(cache, "org/corrupt", model, TINY, tmp_path, formats=("model.safetensors",))
    (snap / "model.safetensors").write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}')
    proc = run_cli("classify", "--model", "org/corrupt", str(ROOT / "assets/examples/chelsea.png"), cache=cache)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "model.safetensors" in proc.stderr and "delete it" in proc.stderr


@pytest.fixture(scope="module")
def tiny_cache(tiny_hub):
    """The tiny ViT / Swin / DETR repos that the app tests use (DETR with spread-out scores)."""
    return tiny_hub


def test_detect_json_contract_threshold_and_save(tiny_cache, tmp_path):
    cache, repos = tiny_cache
    image = ROOT / "assets/examples/astronaut.png"
    proc = run_cli(
        "detect",
        "--model",
        repos["detr"],
        "--threshold",
        "0",
        "--json",
        "--save",
        str(tmp_path),
        str(image),
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    (item,) = json.loads(proc.stdout)
    assert set(item) == {"image", "model", "size", "detections", "runtime"}
    from PIL import Image

    width, height = Image.open(image).size
    assert item["size"] == [width, height] and item["image"] == str(image)
    dets = item["detections"]
    assert len(dets) == 100  # threshold 0: every query
    scores = [d["score"] for d in dets]
    assert scores == sorted(scores, reverse=True)
    for d in dets:
        assert set(d) == {"label_id", "label", "score", "box"}
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    saved = tmp_path / "astronaut.detections.png"
    assert saved.exists() and Image.open(saved).size == (width, height)

    proc = run_cli("detect", "--model", repos["detr"], "--threshold", "0.7", "--json", str(image), cache=cache)
    kept = json.loads(proc.stdout)[0]["detections"]
    assert kept == [d for d in dets if d["score"] >= 0.7]


def test_detect_table_and_classifier_given_to_detect(tiny_cache):
    cache, repos = tiny_cache
    image = str(ROOT / "assets/examples/rocket.jpg")
    proc = run_cli("detect", "--model", repos["detr"], "--threshold", "0.5", image, cache=cache)
    assert proc.returncode == 0 and "detections with score >= 0.5" in proc.stdout.splitlines()[0]
    proc = run_cli("detect", "--model", repos["vit"], image, cache=cache)
    assert proc.returncode != 0 and "image classifier" in proc.stderr and "Traceback" not in proc.stderr


def test_explain_json_contract(tiny_cache, tmp_path):
    cache, repos = tiny_cache
    image = str(ROOT / "assets/examples/chelsea.png")
    proc = run_cli("explain", "--model", repos["vit"], "--json", "--out", str(tmp_path), image, cache=cache)
    assert proc.returncode == 0, proc.stderr
    (item,) = json.loads(proc.stdout)
    assert set(item) == {"image", "model", "method", "target", "grid", "map", "runtime"}
    assert item["method"] == "rollout" and item["grid"] == [14, 14]
    assert set(item["target"]) == {"index", "label", "score"}
    assert max(max(r) for r in item["map"]) == pytest.approx(1.0)
    assert (tmp_path / "chelsea.rollout.png").exists()
    proc = run_cli("explain", "--model", repos["swin"], "--json", image, cache=cache)
    (item,) = json.loads(proc.stdout)
    assert item["method"] == "swin-rollout" and item["grid"] == [56, 56]
    proc = run_cli("explain", "--model", repos["detr"], "--json", "--threshold", "0.1", image, cache=cache)
    (item,) = json.loads(proc.stdout)
    assert item["method"] == "detr-decoder" and set(item["target"]) == {"query", "label_id", "label", "score", "box"}
    assert item["grid"] == [10, 16]  # 451x300 -> 481x320 input; ResNet strides give ceil(/32)


def test_match_command(tiny_cache, tmp_path):
    cache, repos = tiny_cache
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps([["person", 150, 20, 350, 500], [17, 10, 10, 100, 100]]))
    proc = run_cli(
        "match",
        "--model",
        repos["detr"],
        "--gt",
        str(gt),
        "--json",
        str(ROOT / "assets/examples/astronaut.png"),
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [p["object"] for p in out["pairs"]] == [0, 1] and len({p["query"] for p in out["pairs"]}) == 2
    assert set(out["losses"]) == {"classification", "l1", "giou", "total"}
    proc = run_cli(
        "match", "--model", repos["detr"], "--gt", str(gt), str(ROOT / "assets/examples/astronaut.png"), cache=cache
    )
    assert "loss: classification" in proc.stdout


def test_explain_deletion_check(tiny_cache):
    cache, repos = tiny_cache
    image = str(ROOT / "assets/examples/coffee.png")
    proc = run_cli("explain", "--model", repos["vit"], "--deletion", "--json", image, cache=cache)
    assert proc.returncode == 0, proc.stderr
    (item,) = json.loads(proc.stdout)
    d = item["deletion"]
    assert set(d) == {
        "auc",
        "random_auc",
        "fraction",
        "probability",
        "random_probability",
        "insertion_auc",
        "random_insertion_auc",
        "insertion_probability",
        "random_insertion_probability",
    }
    assert len(d["fraction"]) == len(d["probability"]) == 21 and d["fraction"][0] == 0 and d["fraction"][-1] == 1
    assert 0 <= d["auc"] <= 1 and 0 <= d["random_auc"] <= 1
    # nothing deleted yet: the probability is the classifier's own score for the explained class
    assert d["probability"][0] == pytest.approx(item["target"]["score"], abs=1e-5)
    assert d["random_probability"][0] == pytest.approx(item["target"]["score"], abs=1e-5)
    # insertion ends on the full image, and both insertion curves start from the same empty image
    assert d["insertion_probability"][-1] == pytest.approx(item["target"]["score"], abs=1e-5)
    assert d["insertion_probability"][0] == pytest.approx(d["random_insertion_probability"][0], abs=1e-6)
    assert 0 <= d["insertion_auc"] <= 1 and 0 <= d["random_insertion_auc"] <= 1
