"""All methods side by side: for one cached run and one target, every applicable registered method's map, how
faithful each is by the deletion and insertion curves (each against a random order), and how much the methods
agree (Spearman rank correlation between the maps, `scipy.stats.spearmanr`).

The perturbation protocol is that of Chefer, Gur & Wolf (CVPR 2021, arXiv 2012.09838, §4 "perturbation tests"),
which compares rollout, Grad-CAM, raw attention and their relevance this way, with the curves of Petsiuk et al.
2018 (RISE): remove (or add) patches by decreasing relevance and follow the target's probability; see
`vtdemo.explain.deletion`. Classifiers: the probability of the explained class. DETR: the probability that the
detection's query gives its predicted class (the query stays the same slot under perturbation).

Cost: the run's forward pass (with attention) is shared by every attention method; a gradient method runs its own
forward and backward pass once; each map's curves then cost (steps - 1) perturbed images each (every curve starts
and ends at the same two images, the full one and the empty one: the empty one runs once, the full one's probability
is the run's own), and the random order's curves are computed once per grid size. All of them go through the model
as one batched stream of distinct images (`deletion.CurveStream`: an image two curves share runs once). Methods that
explain a point are included only when a point is given (they are listed under `skipped` otherwise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..device import inference
from ..errors import ExplainError
from . import deletion, registry
from .api import class_probability, explain_run
from .registry import ExplainOptions
from .runs import ClassifierRun, DetrRun

Progress = Callable[[int, int, str], None]  # (done, total, method name) before each method
#: Curve steps of the app's comparison grid (points at 0, 25, 50, 75, 100 % of the patches; the CLI's default is 20).
GRID_STEPS = 4


@dataclass
class MethodScore:
    """One method's map and scores. AUCs are areas under probability(fraction of patches), in [0, 1]; deletion:
    lower = more faithful, insertion: higher = more faithful; random_*: the same curve in a random patch order."""

    method: str
    label: str
    needs_gradients: bool
    map: torch.Tensor  # [rows, cols], max 1
    maps: dict[str, torch.Tensor] | None
    deletion_auc: float
    random_deletion_auc: float
    insertion_auc: float
    random_insertion_auc: float
    seconds: float  # computing the map (not the curves)

    @property
    def scored(self) -> bool:
        """Are the curves measured (`score_maps`)? Until then the four AUCs are NaN."""
        return not math.isnan(self.deletion_auc)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "method": self.method,
            "label": self.label,
            "needs_gradients": self.needs_gradients,
            "grid": list(self.map.shape),
            "map": _rows(self.map),
        }
        if self.maps is not None:
            d["maps"] = {k: _rows(v) for k, v in self.maps.items()}
        for k in ("deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc", "seconds"):
            d[k] = round(getattr(self, k), 6)
        return d


@dataclass
class Comparison:
    """Every applicable method on one target. spearman[i][j]: rank correlation of methods i and j over the cells of
    `spearman_grid` (each map area-averaged onto the coarsest grid among them), None where a map is constant."""

    image: str
    model: str
    target: dict[str, Any]
    scores: list[MethodScore]
    spearman: list[list[float | None]]
    spearman_grid: list[int]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return [s.method for s in self.scores]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "model": self.model,
            "method": "all",
            "target": self.target,
            "methods": [s.to_dict() for s in self.scores],
            "skipped": self.skipped,
            "spearman": {
                "methods": self.methods,
                "grid": self.spearman_grid,
                "matrix": [[None if v is None else round(v, 6) for v in row] for row in self.spearman],
            },
        }


def _rows(m: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in m]


def detection_probability(run: DetrRun, query: int, label: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """images [B, 3, H, W] (the run's input, perturbed) -> [B] softmax probability of class `label` for `query`."""
    _, mask = run.inputs()

    def probability(images: torch.Tensor) -> torch.Tensor:
        with inference(run.loaded.device):
            out = run.loaded.model(images, mask.expand(images.shape[0], -1, -1))
        return out.logits.float().softmax(-1)[:, query, label].cpu()

    return probability


def spearman_matrix(maps: list[torch.Tensor]) -> tuple[list[list[float | None]], list[int]]:
    """Pairwise Spearman rank correlation of maps (any grids: each is area-averaged onto the smallest grid).

    Returns (matrix [M][M] with 1.0 on the diagonal and None for a constant map, the common grid [rows, cols])."""
    from scipy.stats import spearmanr

    grid = min(((int(m.shape[0]), int(m.shape[1])) for m in maps), key=lambda s: s[0] * s[1])
    flat = [F.adaptive_avg_pool2d(m.float()[None, None], grid).flatten().numpy() for m in maps]  # [rows*cols]
    M = len(flat)
    out: list[list[float | None]] = [[None] * M for _ in range(M)]
    for i in range(M):
        for j in range(i, M):
            if flat[i].std() == 0 or flat[j].std() == 0:
                continue
            rho = 1.0 if i == j else float(spearmanr(flat[i], flat[j]).statistic)
            out[i][j] = out[j][i] = None if math.isnan(rho) else rho
    return out, [int(grid[0]), int(grid[1])]


def compare(
    run: ClassifierRun | DetrRun,
    options: ExplainOptions | None = None,
    steps: int | None = None,
    seed: int = 0,
    methods: list[str] | None = None,
    progress: Progress | None = None,
    image_name: str = "image",
) -> Comparison:
    """Every applicable method (or those in `methods`) on the run's target, scored and compared: `compare_maps`,
    then `score_maps`.

    options: as for `explain_run` (class_index for classifiers; query for DETR, required); steps: points of each
    curve (default 20 for classifiers, 10 for DETR, whose forward pass is dearer); seed: the random order.
    progress(done, total, name) is called before each method's map, once with name "agreement", then before each
    method's curves (name "<method> curves") and once more at the end (name "scored").
    """
    result = compare_maps(run, options, methods, progress, image_name)
    return score_maps(run, result, options, steps, seed, progress)


def compare_maps(
    run: ClassifierRun | DetrRun,
    options: ExplainOptions | None = None,
    methods: list[str] | None = None,
    progress: Progress | None = None,
    image_name: str = "image",
) -> Comparison:
    """Phase one: every method's map and the agreement matrix, without the curves (each score's AUCs are NaN until
    `score_maps`): what the app shows first, while the curves are still being measured."""
    options = options or ExplainOptions()
    family = run.family
    if isinstance(run, DetrRun) and options.query is None:
        raise ExplainError("comparing DETR methods needs a detection (query index)")
    candidates = registry.methods_for(family)
    if methods is not None:
        candidates = [registry.get(name, family) for name in methods]
    skipped: dict[str, str] = {}
    chosen = []
    for m in candidates:
        if m.target == "point" and options.point is None:
            skipped[m.name] = "explains a point: give one to include it"
        elif isinstance(run, DetrRun) and m.target not in ("detection", "point"):
            skipped[m.name] = "does not explain a detection"
        else:
            chosen.append(m)
    if not chosen:
        raise ExplainError(f"no method to compare for {family}; skipped: {', '.join(skipped)}")

    scores: list[MethodScore] = []
    target: dict[str, Any] = {}
    nan = math.nan
    for i, m in enumerate(chosen):
        if progress is not None:
            progress(i, len(chosen), m.name)
        t0 = time.perf_counter()
        result = explain_run(run, m.name, options)
        seconds = time.perf_counter() - t0
        target = target or result.target  # every method explains the same target
        label, grads = result.method.label, result.method.needs_gradients
        scores.append(
            MethodScore(result.method.name, label, grads, result.map, result.maps, nan, nan, nan, nan, seconds)
        )
    if progress is not None:
        progress(len(chosen), len(chosen), "agreement")
    matrix, common = spearman_matrix([s.map for s in scores])
    return Comparison(image_name, run.loaded.id, target, scores, matrix, common, skipped)


def score_maps(
    run: ClassifierRun | DetrRun,
    result: Comparison,
    options: ExplainOptions | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Comparison:
    """Phase two: each map's deletion and insertion curves (and the random order's, once per grid), filled into
    `result`'s scores in place; returns `result`."""
    options = options or ExplainOptions()
    x, probability, n_steps, batch, full = _measure(run, options, result.target, steps)
    # every curve's images in one batched stream; an image shared by curves (the end points, the same kept patches
    # under two orders) runs once, and the full image's probability is the run's own
    stream = deletion.CurveStream(probability, x, n_steps, batch_size=batch, full=full)
    random_orders: dict[tuple[int, int], int] = {}
    handles: list[tuple[int, int]] = []  # (random order's handle, map's handle) per score
    for i, score in enumerate(result.scores):
        if progress is not None:
            progress(i, len(result.scores), f"{score.method} curves")
        grid = (int(score.map.shape[0]), int(score.map.shape[1]))
        if grid not in random_orders:  # the random order's curves, once per grid size
            order = torch.randperm(grid[0] * grid[1], generator=torch.Generator().manual_seed(seed))
            random_orders[grid] = stream.add(order, grid)
        handles.append((random_orders[grid], stream.add(deletion.patch_order(score.map), grid)))
    for score, (random_handle, handle) in zip(result.scores, handles, strict=True):
        frac, d, ins = stream.curves(handle)
        score.deletion_auc, score.insertion_auc = (
            deletion.area_under_curve(frac, d),
            deletion.area_under_curve(frac, ins),
        )
        frac, d, ins = stream.curves(random_handle)
        score.random_deletion_auc = deletion.area_under_curve(frac, d)
        score.random_insertion_auc = deletion.area_under_curve(frac, ins)
    if progress is not None:
        progress(len(result.scores), len(result.scores), "scored")
    return result


def _measure(
    run: ClassifierRun | DetrRun, options: ExplainOptions, target: dict[str, Any], steps: int | None
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], int, int, float | None]:
    """(model input, probability of the target, curve steps, batch size, the probability of the unperturbed input
    when the run already knows it) for the perturbation curves."""
    if isinstance(run, DetrRun):
        assert options.query is not None
        x, _ = run.inputs()
        return x, detection_probability(run, options.query, int(target["label_id"])), steps or 10, 2, None
    index = int(target["index"])
    full = float(run.logits.float().softmax(-1)[index])  # the run's own forward pass of run.x: no need to run it again
    return run.x, class_probability(run, index), steps or 20, 8, full
