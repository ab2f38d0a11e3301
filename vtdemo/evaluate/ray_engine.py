"""Any of the three evaluations on Ray Data (`--engine ray`): the same records as the local engine, from workers.

`ray.data.read_binary_files` reads the image files; `Dataset.map_batches` runs `_Evaluate` (a callable class, so
each Ray actor loads the model once) over batches of them, calling the protocol's builder from `vtdemo.evaluate.work`
exactly as the local engine does; the driver streams the rows back in order (`preserve_order`) and writes them into
the same JSONL sink, so `--resume`, the summary and the file are identical. Ray is optional: `pip install
"ray[data]"`; it is imported only here, and only when the engine is asked for. `ray.init()` starts a local Ray
instance unless `RAY_ADDRESS` points at a cluster (Ray's own convention); workers inherit the Hugging Face cache
settings and find the `vtdemo` package through PYTHONPATH.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import VtdemoError
from .runner import JsonlSink, RunStats, progress, report_skip

_ENV = ("HF_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "VTDEMO_MAX_PIXELS", "VTDEMO_AUTOCAST")


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise VtdemoError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    return ray


class _Evaluate:
    """Ray Data callable class: a batch of {"bytes", "path"} rows -> {"path", "records" (JSON text), "error"}."""

    def __init__(
        self,
        protocol: str,
        model: str,
        device: str | None,
        options: dict[str, Any],
        names: dict[str, str],
        missing: dict[str, list[str]],
    ) -> None:
        from .. import pipeline
        from .work import BUILDERS

        self.work = BUILDERS[protocol](pipeline.load_model(model, device=device), options)
        self.names, self.missing = names, missing

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        from ..errors import ImageError
        from ..images import load_image

        items, errors = [], {}
        for data, path in zip(batch["bytes"], batch["path"], strict=False):
            name = self.names[os.path.abspath(str(path))]
            try:
                items.append((name, load_image(bytes(data)), self.missing[name]))
            except ImageError as exc:
                errors[name] = f"{name}: {exc}".replace("uploaded bytes: ", "")
        records = self.work(items) if items else []
        out: dict[str, list[str]] = {"path": [], "records": [], "error": []}
        for path in batch["path"]:
            name = self.names[os.path.abspath(str(path))]
            out["path"].append(str(path))
            out["records"].append(json.dumps([r for r in records if r["image"] == name]))
            out["error"].append(errors.get(name, ""))
        return out


def _init(ray: Any, num_cpus: int | None) -> None:
    if ray.is_initialized():
        return
    here = str(Path(__file__).resolve().parents[2])
    env = {k: os.environ[k] for k in _ENV if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    logging.getLogger("ray").setLevel(logging.WARNING)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": env},
    )


def run_ray(
    protocol: str,
    names: Sequence[str],
    folder: str | os.PathLike,
    parts: Sequence[str],
    options: dict[str, Any],
    sink: JsonlSink,
    model: str,
    device: str | None,
    batch_size: int = 1,
    actors: int = 1,
    num_cpus: int | None = None,
) -> RunStats:
    """Evaluate `names` (relative to `folder`) with Ray Data on `actors` model replicas, `batch_size` images per
    call of the protocol's work (see `vtdemo.evaluate.work`); records go to `sink` in the order of `names`."""
    ray = _import_ray()
    stats = RunStats()
    root = Path(folder)
    todo: dict[str, list[str]] = {}
    for name in names:
        missing = [p for p in parts if (name, p) not in sink.done]
        if not missing:
            stats.resumed += 1
        elif not (root / name).is_file():
            report_skip(f"{root / name}: no such file")
            stats.skipped.append(name)
        else:
            todo[name] = missing
    if not todo:
        return stats
    paths = {os.path.abspath(root / n): n for n in todo}
    _init(ray, num_cpus)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    kwargs = {
        "protocol": protocol,
        "model": model,
        "device": device,
        "options": options,
        "names": paths,
        "missing": todo,
    }
    ds = ray.data.read_binary_files(list(paths), include_paths=True)
    ds = ds.map_batches(
        _Evaluate,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_format="numpy",
        fn_constructor_kwargs=kwargs,
    )
    bar = progress(len(names), f"{protocol} (ray)")
    bar.update(stats.resumed + len(stats.skipped))
    try:
        for row in ds.iter_rows():
            if row["error"]:
                report_skip(str(row["error"]))
                stats.skipped.append(paths[os.path.abspath(str(row["path"]))])
            else:
                sink.write(json.loads(row["records"]))
                stats.evaluated += 1
            bar.update(1)
    finally:
        bar.close()
    return stats
