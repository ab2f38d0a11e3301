"""`python -m vtdemo evaluate ...` on a folder: JSONL streaming, labels, bad input, resume after a kill, COCO end
to end.

The models are the tiny random checkpoints of `tests/support/tiny_models.py` in a temporary Hub cache (offline).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vtdemo import cli, loader
from vtdemo.evaluate import coco as cc
from vtdemo.evaluate import perturbation as pt
from vtdemo.evaluate.faithfulness import FaithfulnessEvaluator

ROOT = Path(__file__).resolve().parents[2]
METHODS = "rollout,grad-rollout,edge"
ALL = ["rollout", "grad-rollout", "edge", "random"]


@pytest.fixture(scope="module")
def repos(tiny_hub):
    cache, ids = tiny_hub
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_CACHE", str(cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    loader.clear_cache()
    yield ids
    loader.clear_cache()
    mp.undo()


def make_folder(path: Path, count: int, broken: bool = True) -> list[str]:
    """`count` small random photos (some in a sub-folder) and, if asked, a file that is not an image."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        name = f"sub/img{i}.png" if i % 2 else f"img{i}.png"
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48 + 4 * i, 64, 3), dtype=np.uint8)).save(path / name)
        names.append(name)
    if broken:
        (path / "broken.jpg").write_bytes(b"<html>not an image</html>")
    return sorted(names)


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_faithfulness_streams_a_line_per_image_and_method(repos, tmp_path):
    names = make_folder(tmp_path / "imgs", 3)
    out = tmp_path / "r.jsonl"
    code, stdout, stderr = run_cli(
        "evaluate",
        "faithfulness",
        "--model",
        repos["vit"],
        "--methods",
        METHODS,
        "--images",
        str(tmp_path / "imgs"),
        "--out",
        str(out),
        "--json",
        "--device",
        "cpu",
    )
    assert code == 1  # an image was skipped
    skipped = [line for line in stderr.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0]
    records = lines(out)
    assert [(r["image"], r["method"]) for r in records] == [(n, m) for n in names for m in ALL]
    for r in records:
        assert r["target"] == r["predicted"] and r["label"] is None
        assert r["steps"] == [0.0, *pt.STEPS]
        assert r["positive"][0] == r["negative"][0] == 1  # the unperturbed image predicts its own class
        assert set(r["positive"] + r["negative"]) <= {0, 1}
        assert r["positive_auc"] == pytest.approx(pt.area(r["positive"]))
    summary = json.loads(stdout)
    assert summary["skipped"] == ["broken.jpg"] and [m["method"] for m in summary["methods"]] == ALL
    rollout = [r["negative_auc"] for r in records if r["method"] == "rollout"]
    assert summary["methods"][0]["negative_auc"] == pytest.approx(np.mean(rollout))


def test_labels_set_the_target_and_must_match(repos, tmp_path):
    names = make_folder(tmp_path / "imgs", 2, broken=False)
    labels = tmp_path / "labels.txt"
    labels.write_text("# ImageNet style\n" + "".join(f"{Path(n).name} {7 + i}\n" for i, n in enumerate(names)))
    out = tmp_path / "r.jsonl"
    code, _, _ = run_cli(
        "evaluate",
        "faithfulness",
        "--model",
        repos["vit"],
        "--methods",
        "rollout",
        "--images",
        str(tmp_path / "imgs"),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert code == 0
    for r in lines(out):
        assert r["label"] == r["target"] == 7 + names.index(r["image"])
        assert r["positive"][0] == int(r["predicted"] == r["target"])
    as_json = tmp_path / "labels.json"
    as_json.write_text(json.dumps({names[0]: 3}))  # no label for the second image
    code, _, stderr = run_cli(
        "evaluate",
        "faithfulness",
        "--model",
        repos["vit"],
        "--images",
        str(tmp_path / "imgs"),
        "--labels",
        str(as_json),
        "--device",
        "cpu",
    )
    assert code == 2 and stderr.strip().count("\n") == 0
    assert "does not match the images: no label for 1 of 2" in stderr
    as_json.write_text(json.dumps({names[0]: 3, names[1]: 1000}))
    code, _, stderr = run_cli(
        "evaluate",
        "faithfulness",
        "--model",
        repos["vit"],
        "--images",
        str(tmp_path / "imgs"),
        "--labels",
        str(as_json),
        "--device",
        "cpu",
    )
    assert code == 2 and "outside 0..999" in stderr


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_file(repos, tmp_path, monkeypatch):
    make_folder(tmp_path / "imgs", 3, broken=False)
    args = [
        "evaluate",
        "faithfulness",
        "--model",
        repos["vit"],
        "--methods",
        METHODS,
        "--images",
        str(tmp_path / "imgs"),
        "--device",
        "cpu",
    ]
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert run_cli(*args, "--out", str(full))[0] == 0
    original = FaithfulnessEvaluator.evaluate
    calls = []

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(FaithfulnessEvaluator, "evaluate", interrupted)
    assert run_cli(*args, "--out", str(part))[0] == 130
    monkeypatch.setattr(FaithfulnessEvaluator, "evaluate", original)
    assert len(lines(part)) == 2 * len(ALL)  # the two finished images were kept
    with part.open("a") as f:
        f.write('{"image": "img2.png", "method": "roll')  # a write cut short
    code, _, stderr = run_cli(*args, "--out", str(part))
    assert code == 2 and "--resume" in stderr  # never overwrites without being asked
    assert run_cli(*args, "--out", str(part), "--resume")[0] == 0
    assert part.read_bytes() == full.read_bytes()


@pytest.mark.slow
def test_a_killed_process_loses_nothing_written(repos, tiny_hub, tmp_path):
    make_folder(tmp_path / "imgs", 4, broken=False)
    cache, _ = tiny_hub
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = tmp_path / "r.jsonl"
    args = [
        "evaluate",
        "faithfulness",
        "--model",
        repos["vit"],
        "--methods",
        "rollout,edge",
        "--images",
        str(tmp_path / "imgs"),
        "--device",
        "cpu",
    ]
    cmd = [sys.executable, "-m", "vtdemo", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 3:  # one image done (rollout, edge, random)
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = out.read_text().count("\n")
    assert 3 <= kept < 4 * 3, "the kill should land mid-run"
    assert subprocess.run(cmd + ["--resume"], env=env, capture_output=True).returncode == 0
    full = tmp_path / "full.jsonl"
    assert run_cli(*args, "--out", str(full))[0] == 0
    assert out.read_bytes() == full.read_bytes()


def coco_set(tmp_path: Path, photos) -> Path:
    folder = tmp_path / "coco"
    folder.mkdir()
    for name in ("chelsea", "coffee"):
        photos[name].resize((160, 120)).save(folder / f"{name}.jpg")
    ann = {
        "images": [
            {"id": 11, "file_name": "chelsea.jpg", "width": 160, "height": 120},
            {"id": 12, "file_name": "coffee.jpg", "width": 160, "height": 120},
            {"id": 13, "file_name": "absent.jpg", "width": 160, "height": 120},
        ],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 17, "bbox": [20, 10, 90, 100]},
            {"id": 2, "image_id": 12, "category_id": 47, "bbox": [30, 20, 100, 80]},
            {"id": 3, "image_id": 13, "category_id": 1, "bbox": [0, 0, 50, 50]},
        ],
        "categories": [{"id": i, "name": str(i)} for i in (1, 17, 47)],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    return folder


def test_coco_json_equals_pycocotools_on_the_written_detections(repos, tmp_path, photos):
    folder = coco_set(tmp_path, photos)
    out = tmp_path / "det.jsonl"
    code, stdout, stderr = run_cli(
        "evaluate",
        "coco",
        "--model",
        repos["detr"],
        "--images",
        str(folder),
        "--annotations",
        str(tmp_path / "ann.json"),
        "--out",
        str(out),
        "--json",
        "--device",
        "cpu",
    )
    assert code == 0, stderr
    numbers = json.loads(stdout)
    assert list(numbers) == list(cc.KEYS)
    assert "1 of the 3 annotated images are not in" in stderr
    written = tmp_path / "det.detections.json"
    results = json.loads(written.read_text())
    assert len(results) == 2 * 100  # every query of both images, no threshold
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "ann.json"))  # has area / iscrowd missing: give them as COCO files have them
        for a in gt.dataset["annotations"]:
            a["area"], a["iscrowd"] = a["bbox"][2] * a["bbox"][3], 0
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(str(written)), "bbox")
        ev.params.imgIds = [11, 12]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [numbers[k] for k in cc.KEYS] == pytest.approx(list(ev.stats), abs=0)
    code, stdout, _ = run_cli(
        "evaluate",
        "coco",
        "--model",
        repos["detr"],
        "--images",
        str(folder),
        "--annotations",
        str(tmp_path / "ann.json"),
        "--out",
        str(out),
        "--resume",
        "--device",
        "cpu",
    )
    assert code == 0 and "AP" in stdout and len(lines(out)) == 2


def test_coco_refuses_a_file_that_is_not_coco_before_loading_anything(tmp_path, photos):
    folder = coco_set(tmp_path, photos)
    (tmp_path / "ann.json").write_text(json.dumps({"images": [], "annotations": {}}))
    code, _, stderr = run_cli(
        "evaluate",
        "coco",
        "--model",
        "nobody/nothing",
        "--images",
        str(folder),
        "--annotations",
        str(tmp_path / "ann.json"),
    )
    assert code == 2 and stderr.strip() == (
        f"error: --annotations {tmp_path / 'ann.json'} is not a COCO instances file: no 'annotations' list"
    )


def test_resume_refuses_a_file_of_another_model(repos, tmp_path):
    make_folder(tmp_path / "imgs", 1, broken=False)
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps({"image": "img0.png", "method": "rollout", "model": "someone/else"}) + "\n")
    code, _, stderr = run_cli(
        "evaluate",
        "faithfulness",
        "--model",
        repos["vit"],
        "--images",
        str(tmp_path / "imgs"),
        "--out",
        str(out),
        "--resume",
        "--device",
        "cpu",
    )
    assert code == 2 and f"holds results of someone/else, not {repos['vit']}" in stderr
    assert out.read_text().count("\n") == 1


def test_method_choices_follow_the_registry(repos, tmp_path):
    """--methods takes every registered method of the model that needs no point (Grad-CAM and the LRP rules among
    them, the anchors of Chefer et al.'s table); the default is that whole list; a point method is refused."""
    from vtdemo.evaluate.cli import _methods
    from vtdemo.explain.registry import methods_for

    loaded = loader.load(repos["vit"], device="cpu")
    registered = [m.name for m in methods_for("vit") if m.target != "point"]
    assert {"gradcam", "attn-lrp", "cp-lrp", "rollout"} <= set(_methods(loaded, None)) <= set(registered)
    make_folder(tmp_path / "imgs", 1, broken=False)
    out = tmp_path / "r.jsonl"
    code, _, stderr = run_cli(
        "evaluate", "faithfulness", "--model", repos["vit"], "--methods", "gradcam,attn-lrp",
        "--images", str(tmp_path / "imgs"), "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert code == 0, stderr
    assert [r["method"] for r in lines(out)] == ["gradcam", "attn-lrp", "random"]
    swin = loader.load(repos["swin"], device="cpu")
    code, _, stderr = run_cli(
        "evaluate", "faithfulness", "--model", repos["swin"], "--methods", "swin-window",
        "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "s.jsonl"), "--device", "cpu",
    )  # fmt: skip
    assert code == 2 and "needs a point" in stderr
    assert "swin-window" not in _methods(swin, None)
