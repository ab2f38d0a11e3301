"""The faithfulness evaluation on Ray Data (`--engine ray`): the same records as the local engine, from workers.

`ray.data.read_binary_files` reads the image files; `Dataset.map_batches` runs `_Evaluate` (a callable class, so
each Ray actor loads the model once) over batches of them; the driver streams the rows back in order
(`preserve_order`) and writes them into the same JSONL sink as the local engine, so `--resume`, the summary and the
file format are identical. Ray is optional: `pip install "ray[data]"`; it is imported only here, and only when the
engine is asked for. `ray.init()` starts a local Ray instance unless `RAY_ADDRESS` points at a cluster (the
standard Ray convention); workers inherit the Hugging Face cache settings and find the `vtdemo` package through
PYTHONPATH.
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

    def __init__(self, model: str, device: str | None, methods: Sequence[str], batch_size: int, seed: int,
                 names: dict[str, str], labels: dict[str, int], missing: dict[str, list[str]]) -> None:
        from .. import hub
        from .faithfulness import FaithfulnessEvaluator

        self.evaluator = FaithfulnessEvaluator(hub.load(model, device=device), methods, batch_size, seed)
        self.names, self.labels, self.missing = names, labels, missing

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        from ..errors import ImageError
        from ..images import load_image

        out: dict[str, list[str]] = {"path": [], "records": [], "error": []}
        for data, path in zip(batch["bytes"], batch["path"]):
            name = self.names[os.path.abspath(str(path))]
            records, error = [], ""
            try:
                image = load_image(bytes(data))
                records = self.evaluator.evaluate(name, image, self.labels.get(name), self.missing[name])
            except ImageError as exc:
                error = f"{name}: {exc}".replace("uploaded bytes: ", "")
            out["path"].append(str(path))
            out["records"].append(json.dumps(records))
            out["error"].append(error)
        return out


def run_faithfulness(names: Sequence[str], folder: str | os.PathLike, labels: dict[str, int], evaluator: Any,
                     sink: JsonlSink, model: str, device: str | None, actors: int = 1, num_cpus: int | None = None
                     ) -> RunStats:
    """Evaluate `names` (relative to `folder`) with Ray Data, on `actors` model replicas (each loads the model
    once); records go to `sink` in the order of `names`."""
    ray = _import_ray()
    stats = RunStats()
    root = Path(folder)
    todo: dict[str, list[str]] = {}
    for name in names:
        missing = [m for m in evaluator.methods if (name, m) not in sink.done]
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
    if not ray.is_initialized():
        here = str(Path(__file__).resolve().parents[2])
        env = {k: os.environ[k] for k in _ENV if k in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        logging.getLogger("ray").setLevel(logging.WARNING)
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": env})
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ds = ray.data.read_binary_files(list(paths), include_paths=True)
    kwargs = {"model": model, "device": device, "methods": evaluator.methods, "batch_size": evaluator.batch_size,
              "seed": evaluator.seed, "names": paths, "labels": labels, "missing": todo}
    ds = ds.map_batches(_Evaluate, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
                        batch_format="numpy", fn_constructor_kwargs=kwargs)
    bar = progress(len(names), "faithfulness (ray)")
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
