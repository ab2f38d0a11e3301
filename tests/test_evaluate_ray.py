"""`--engine ray`: the faithfulness evaluation on Ray Data (a local Ray instance) writes the same file as the plain
run, byte for byte; without Ray installed the engine fails with one line, and this test is skipped."""

from __future__ import annotations

import contextlib
import io

import pytest

from test_evaluate_runner import METHODS, make_folder, repos  # noqa: F401  (repos is a fixture)
from vtdemo import cli


def run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        return cli.main(list(argv)), err.getvalue()


def test_ray_engine_writes_what_the_local_engine_writes(repos, tmp_path):  # noqa: F811
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'ray[data]'")
    pytest.importorskip("ray.data")
    make_folder(tmp_path / "imgs", 3)
    args = ["evaluate", "faithfulness", "--model", repos["vit"], "--methods", METHODS, "--images",
            str(tmp_path / "imgs"), "--device", "cpu"]
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert run(*args, "--out", str(local))[0] == 1  # broken.jpg skipped
    try:
        code, err = run(*args, "--out", str(distributed), "--engine", "ray")
        assert code == 1 and "skipped: broken.jpg" in err
        assert distributed.read_bytes() == local.read_bytes()
        lines = distributed.read_text().splitlines()
        distributed.write_text("\n".join(lines[:5]) + "\n")  # resume on Ray too
        assert run(*args, "--out", str(distributed), "--engine", "ray", "--resume")[0] == 1
        assert distributed.read_bytes() == local.read_bytes()
    finally:
        ray.shutdown()


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
