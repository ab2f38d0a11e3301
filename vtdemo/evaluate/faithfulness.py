"""One image through the perturbation tests for several explanation methods (see `perturbation` for the protocol).

Besides the methods of the classifier (called through `vtdemo.explain.api.classifier_map`), two controls are offered:
- `random`: the random baseline of `perturbation.random_map` (always evaluated, as the reference point);
- `edge`: a map computed from the input alone, the Sobel gradient magnitude of the model input (channel mean)
  averaged onto the patch grid (`scipy.ndimage.sobel`): the edge-detector comparison of Adebayo et al. 2018.

The map of every method explains the model's predicted class (the reference code's `--vis-class top`); a hit is the
top-1 class equalling the ground-truth label when one is given, else the predicted class of the unperturbed image.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import perturbation

CONTROLS = ("random", "edge")


def edge_map(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """x: [1, 3, H, W] model input -> [gh, gw] mean Sobel gradient magnitude per patch (depends on the input only)."""
    from scipy import ndimage

    grey = x[0].detach().float().mean(0).cpu().numpy()  # [H, W]
    magnitude = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))  # [H, W]
    m = torch.from_numpy(magnitude)[None, None]  # [1, 1, H, W]
    return F.adaptive_avg_pool2d(m, grid)[0, 0].float()  # [gh, gw]


def image_seed(name: str, seed: int) -> int:
    """A per-image seed that does not depend on the order images are processed in (resume, Ray)."""
    return zlib.crc32(name.encode("utf-8")) ^ seed


def method_maps(run: Any, methods: Sequence[str], class_index: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """method -> [gh, gw] map of one cached classifier run (`vtdemo.explain.runs.run_classifier`), for `class_index`.

    The controls are laid on the grid of the first real map (or a 16-pixel grid when only controls are asked for).
    """
    from ..explain.api import classifier_map

    maps: dict[str, torch.Tensor] = {}
    for method in methods:
        if method not in CONTROLS:
            maps[method], _ = classifier_map(run, method, class_index=class_index)
    first = next(iter(maps.values()), None)
    gh, gw = first.shape if first is not None else (run.x.shape[-2] // 16, run.x.shape[-1] // 16)
    grid = (int(gh), int(gw))
    for method in methods:
        if method == "random":
            maps[method] = perturbation.random_map(grid, seed)
        elif method == "edge":
            maps[method] = edge_map(run.x, grid)
    return {m: maps[m] for m in methods}


def method_list(methods: Sequence[str]) -> list[str]:
    """The methods asked for, without repeats, with the random baseline added at the end when not named."""
    out = list(dict.fromkeys(m.strip() for m in methods if m.strip()))
    return out if "random" in out else out + ["random"]


class FaithfulnessEvaluator:
    """Perturbation tests of several maps on one classifier. `evaluate` is what the local and Ray engines call.

    loaded: a `vtdemo.hub.LoadedModel` (ViT/DeiT/Swin); methods: pipeline method names plus `CONTROLS`.
    """

    def __init__(
        self,
        loaded: Any,
        methods: Sequence[str],
        batch_size: int = 16,
        seed: int = 0,
        steps: Sequence[float] = perturbation.STEPS,
    ) -> None:
        self.loaded = loaded
        self.methods = method_list(methods)
        self.batch_size = batch_size
        self.seed = seed
        self.steps = tuple(steps)
        cfg = loaded.preprocess
        self.blank = perturbation.blank_value(cfg.mean, cfg.std)

    def _predict(self, batch: torch.Tensor) -> torch.Tensor:
        from ..device import inference

        with inference(self.loaded.device):
            return self.loaded.model(batch.to(self.loaded.device)).logits.float().argmax(-1)  # [B]

    def evaluate(
        self, name: str, image: Image.Image, label: int | None = None, methods: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """One record per method: {"image", "model", "method", "label", "predicted", "target", "steps",
        "positive", "negative" (hits 0/1 at fraction 0 then each step), "positive_auc", "negative_auc" (x100)}."""
        from ..explain.runs import run_classifier

        methods = list(methods) if methods is not None else self.methods
        run = run_classifier(self.loaded, image)
        predicted = int(run.logits.argmax())
        target = predicted if label is None else int(label)
        maps = method_maps(run, methods, predicted, image_seed(name, self.seed))
        hits = perturbation.perturbation_hits(
            self._predict, run.x, maps, target, self.blank, predicted == target, self.steps, self.batch_size
        )
        return [
            {
                "image": name,
                "model": self.loaded.id,
                "method": m,
                "label": label,
                "predicted": predicted,
                "target": target,
                "steps": [0.0, *self.steps],
                "positive": hits[m]["positive"],
                "negative": hits[m]["negative"],
                "positive_auc": round(perturbation.area(hits[m]["positive"], self.steps), 6),
                "negative_auc": round(perturbation.area(hits[m]["negative"], self.steps), 6),
            }
            for m in methods
        ]


def summarise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method (first-seen order): {"method", "images", "positive_auc", "negative_auc"} (means, x100)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["method"], []).append(r)
    return [
        {
            "method": m,
            "images": len(rs),
            "positive_auc": float(np.mean([r["positive_auc"] for r in rs])),
            "negative_auc": float(np.mean([r["negative_auc"] for r in rs])),
        }
        for m, rs in by.items()
    ]
