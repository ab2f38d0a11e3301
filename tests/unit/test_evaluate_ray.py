"""`--engine ray`: the faithfulness evaluation on Ray Data (a local Ray instance) writes the same file as the plain
run, byte for byte; the COCO evaluation (resumed) the same detections up to float rounding. Without Ray installed
the engine fails with one line, and this test is skipped."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from tests.unit.test_evaluate_runner import METHODS, coco_set, make_folder, repos  # noqa: F401  (repos is a fixture)
from vtdemo import cli


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, err.getvalue(), out.getvalue()


@pytest.mark.slow
def test_ray_engine_writes_what_the_local_engine_writes(repos, tmp_path, photos):  # noqa: F811
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'ray[data]'")
    pytest.importorskip("ray.data")
    make_folder(tmp_path / "imgs", 3)
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
    folder = coco_set(tmp_path, photos)
    coco = [
        "evaluate",
        "coco",
        "--model",
        repos["detr"],
        "--images",
        str(folder),
        "--annotations",
        str(tmp_path / "ann.json"),
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--json",
    ]
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert run(*args, "--out", str(local))[0] == 1  # broken.jpg skipped
    code, _, local_ap = run(*coco, "--out", str(tmp_path / "coco-local.jsonl"))
    assert code == 0
    first = (tmp_path / "coco-local.jsonl").read_text().splitlines()[0]
    (tmp_path / "coco-ray.jsonl").write_text(first + "\n")  # the Ray run resumes a file with one image done
    try:
        code, err, _ = run(*args, "--out", str(distributed), "--engine", "ray")
        assert code == 1 and "skipped: broken.jpg" in err
        assert distributed.read_bytes() == local.read_bytes()
        code, _, ray_ap = run(*coco, "--out", str(tmp_path / "coco-ray.jsonl"), "--engine", "ray", "--resume")
        assert code == 0
    finally:
        ray.shutdown()
    # DETR's floats: a Ray actor runs torch on one thread (Ray sets OMP_NUM_THREADS to the actor's CPUs), so sums are
    # ordered differently and the last digits may differ; the structure and labels must be the same
    ours = [json.loads(x) for x in (tmp_path / "coco-ray.jsonl").read_text().splitlines()]
    theirs = [json.loads(x) for x in (tmp_path / "coco-local.jsonl").read_text().splitlines()]
    assert [r["image"] for r in ours] == [r["image"] for r in theirs]
    for a, b in zip(ours, theirs, strict=False):
        assert [d["category_id"] for d in a["detections"]] == [d["category_id"] for d in b["detections"]]
        assert [v for d in a["detections"] for v in d["bbox"]] == pytest.approx(
            [v for d in b["detections"] for v in d["bbox"]], abs=1e-3
        )
        assert [d["score"] for d in a["detections"]] == pytest.approx([d["score"] for d in b["detections"]], abs=1e-5)
    assert json.loads(ray_ap) == pytest.approx(json.loads(local_ap), abs=1e-6)


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    import builtins

    from vtdemo.errors import VtdemoError
    from vtdemo.evaluate import ray_engine

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(VtdemoError, match=r"pip install 'ray\[data\]'"):
        ray_engine._import_ray()
