"""Cascading parameter randomisation (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps",
arXiv 1810.03292, section 3.1; their code: adebayoj/sanity_checks_saliency).

The model's weights are randomised from the top down, one block at a time and cumulatively (the classifier head
with the final norm first, then the encoder blocks from the last to the first, then the patch embedding), and after
each step every method's map is recomputed for the class the *original* model predicted. The Spearman rank
correlation (`scipy.stats.spearmanr`) between each new map and the method's original map is recorded. A map that
explains the model must change once the weights it reads are gone: a method whose map stays correlated with its
original after every block is randomised ignores the model and *fails* the check (an edge detector, which reads
only the image, is the paper's example of such a map).

Where we differ: Adebayo et al. re-draw weights from the network's initialiser; our models carry no training-time
initialiser, so each parameter tensor is re-drawn i.i.d. from a normal with that tensor's own mean and standard
deviation (learned structure gone, activation scale kept). The randomisation runs on a deep copy of the model; the
loaded (cached) model is never touched. The verdict uses the final step (everything randomised): |rho| >=
`threshold` (0.5 by default, our choice: the paper judges by eye and by rank correlation curves). A constant map has
no rank correlation: it is recorded as None and counts as "changed".
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image, ImageDraw

DEFAULT_THRESHOLD = 0.5


@dataclasses.dataclass
class RandomisationCurve:
    """One method on one image. steps[0] = "original" (spearman 1.0); spearman[i] after randomising steps[1..i]."""

    method: str
    steps: list[str]
    spearman: list[float | None]
    threshold: float = DEFAULT_THRESHOLD

    @property
    def final(self) -> float | None:
        return self.spearman[-1]

    @property
    def survives(self) -> bool:
        """True when the map is still correlated with the original after every block is randomised."""
        return self.final is not None and abs(self.final) >= self.threshold

    @property
    def verdict(self) -> str:
        if self.survives:
            return (
                f"fails: the {self.method} map survives randomised weights (Spearman {self.final:.2f} with the "
                "original), so it does not show what the model uses"
            )
        shown = "undefined (constant map)" if self.final is None else f"{self.final:.2f}"
        return f"passes: the {self.method} map changes when the weights are randomised (Spearman {shown})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "steps": self.steps,
            "spearman": [None if r is None else round(r, 6) for r in self.spearman],
            "final_spearman": None if self.final is None else round(self.final, 6),
            "threshold": self.threshold,
            "survives": self.survives,
            "passes": not self.survives,
            "verdict": self.verdict,
        }


def stages(model: torch.nn.Module, family: str) -> list[tuple[str, list[str]]]:
    """The cascade, top down: (step name, parameter-name prefixes) for a ViT/DeiT ("vit") or Swin ("swin") model."""
    names = [n for n, _ in model.named_parameters()]
    out: list[tuple[str, list[str]]] = [("head", ["head.", "head_dist.", "norm."])]
    if family == "vit":
        depth = len(model.blocks)  # type: ignore[arg-type]
        out += [(f"block {i}", [f"blocks.{i}."]) for i in reversed(range(depth))]
        out.append(("embedding", ["patch_embed.", "cls_token", "dist_token", "pos_embed"]))
    elif family == "swin":
        layers: Any = model.layers
        for s in reversed(range(len(layers))):
            depth = len(layers[s].blocks)
            for b in reversed(range(depth)):
                prefixes = [f"layers.{s}.blocks.{b}."] + ([f"layers.{s}.downsample."] if b == 0 else [])
                out.append((f"stage {s} block {b}", prefixes))
        out.append(("embedding", ["patch_embed."]))
    else:
        raise ValueError(f"cascading randomisation needs a ViT/DeiT or Swin classifier, not {family!r}")
    covered = [n for n in names if any(n.startswith(p) for _, ps in out for p in ps)]
    if len(covered) != len(names):  # every parameter must be randomised by the last step
        missing = sorted(set(names) - set(covered))
        raise ValueError(f"parameters outside every step: {missing[:3]}")
    return out


def randomise_(model: torch.nn.Module, prefixes: Sequence[str], generator: torch.Generator) -> int:
    """Re-draw, in place, every parameter whose name starts with one of `prefixes` from N(its mean, its std).

    Returns how many tensors were re-drawn.
    """
    count = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(name.startswith(pre) for pre in prefixes):
                values = p.detach().float().cpu()
                std = values.std() if values.numel() > 1 else torch.tensor(0.0)
                p.copy_((values.mean() + std * torch.randn(p.shape, generator=generator)).to(p))
                count += 1
    return count


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman rank correlation of two maps of the same shape (None when either is constant)."""
    from scipy.stats import spearmanr

    x, y = a.flatten().double().numpy(), b.flatten().double().numpy()
    if x.min() == x.max() or y.min() == y.max():
        return None
    return float(spearmanr(x, y).statistic)


def cascading_randomisation(
    loaded: Any,
    image: Image.Image,
    methods: Sequence[str],
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    class_index: int | None = None,
) -> dict[str, RandomisationCurve]:
    """The check for one image: method -> curve (see module docstring).

    loaded: a ViT/DeiT/Swin `vtdemo.hub.LoadedModel`; image: RGB; methods: registered classifier methods
    and/or the controls of `vtdemo.evaluate.faithfulness` ("edge", "random"); class_index: the class every map
    explains (default: the original model's top class). Costs (1 + number of steps) forward passes with attention,
    plus a backward pass per step for gradient methods.
    """
    from ..explain.runs import run_classifier

    return randomisation_for_run(run_classifier(loaded, image), methods, seed, threshold, class_index)


def randomisation_for_run(
    run: Any,
    methods: Sequence[str],
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    class_index: int | None = None,
) -> dict[str, RandomisationCurve]:
    """As `cascading_randomisation`, from a cached `vtdemo.explain.runs.ClassifierRun` (what the app keeps)."""
    from ..explain.runs import run_classifier
    from .faithfulness import method_maps

    loaded, image = run.loaded, run.image
    target = int(run.logits.argmax()) if class_index is None else int(class_index)
    original = method_maps(run, methods, target, seed)
    model = copy.deepcopy(loaded.model)  # never the cached model
    randomised = dataclasses.replace(loaded, model=model)
    generator = torch.Generator().manual_seed(seed)
    steps = ["original"]
    rhos: dict[str, list[float | None]] = {m: [1.0] for m in methods}
    for name, prefixes in stages(model, loaded.family):
        randomise_(model, prefixes, generator)
        maps = method_maps(run_classifier(randomised, image), methods, target, seed)
        steps.append(name)
        for m in methods:
            rhos[m].append(spearman(original[m], maps[m]))
    return {m: RandomisationCurve(m, steps, rhos[m], threshold) for m in methods}


def map_randomisation(
    run: Any,
    map_of: Callable[[Any], torch.Tensor],
    name: str,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
) -> RandomisationCurve:
    """The cascade for one map of a cached `ClassifierRun`, whatever its options (the app's map on screen).

    map_of(run) -> [rows, cols] map; it is called on `run` (the original) and then on a re-run of the run's own
    input `run.x` (same size and preprocessing) through a deep copy of the exact model, randomised cumulatively by
    `stages`. name: what the verdict calls the map. Costs one forward pass with attention per step (plus what
    `map_of` costs: a backward pass for gradient methods), and the copy of the model.
    """
    from ..engine import exact_model
    from ..explain.runs import run_classifier

    loaded = exact_model(run.loaded)
    original = map_of(run)
    model = copy.deepcopy(loaded.model)  # never the cached model
    prep = run.prep or loaded.preprocess
    randomised = dataclasses.replace(loaded, model=model, preprocess=prep)  # re-runs give run.x again
    generator = torch.Generator().manual_seed(seed)
    steps, rhos = ["original"], [1.0 if spearman(original, original) is not None else None]
    for step, prefixes in stages(model, loaded.family):
        randomise_(model, prefixes, generator)
        steps.append(step)
        rhos.append(spearman(original, map_of(run_classifier(randomised, run.image))))
    return RandomisationCurve(name, steps, rhos, threshold)


def summarise(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per method over images: {"method", "images", "steps", "mean_spearman" (per step, None-free mean), "fails"
    (images where the map survived), "passes" (overall: survived on at most half of the images)}."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by.setdefault(r["method"], []).append(r)
    out = []
    for method, rs in by.items():
        steps = rs[0]["steps"]
        means = []
        for i in range(len(steps)):
            vals = [r["spearman"][i] for r in rs if r["spearman"][i] is not None]
            means.append(round(sum(vals) / len(vals), 6) if vals else None)
        fails = sum(bool(r["survives"]) for r in rs)
        out.append(
            {
                "method": method,
                "images": len(rs),
                "steps": steps,
                "mean_spearman": means,
                "fails": fails,
                "passes": fails * 2 <= len(rs),
            }
        )
    return out


PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75))


def chart(
    curves: Sequence[Mapping[str, Any]], size: tuple[int, int] = (640, 360), threshold: float = DEFAULT_THRESHOLD
) -> Image.Image:
    """Spearman correlation per randomisation step, one line per method: a white RGB PIL image of `size`.

    curves: dicts with "method", "steps" and "spearman" (or "mean_spearman"), e.g. `RandomisationCurve.to_dict()`
    or a `summarise` row; None values are left as gaps. The dashed line is the verdict threshold.
    """
    W, H = size
    left, right, top, bottom = 58, 12, 12, 78
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    steps = list(curves[0]["steps"]) if curves else ["original"]
    n = max(len(steps) - 1, 1)

    def xy(i: int, r: float) -> tuple[float, float]:
        return left + (W - left - right) * i / n, top + (H - top - bottom) * (1 - r) / 2

    for r in (-1.0, -0.5, 0.0, 0.5, 1.0):
        y = xy(0, r)[1]
        draw.line([(left, y), (W - right, y)], fill=(225, 225, 225))
        draw.text((left - 34, y - 6), f"{r:+.1f}" if r else "0", fill=(90, 90, 90))
    for t in (threshold, -threshold):
        y = xy(0, t)[1]
        for x0 in range(left, W - right, 10):
            draw.line([(x0, y), (min(x0 + 5, W - right), y)], fill=(150, 150, 150))
    # the y axis' name, written upwards along the left edge
    name = "Spearman with the original map"
    label = Image.new("RGB", (int(draw.textlength(name)) + 4, 14), "white")
    ImageDraw.Draw(label).text((2, 1), name, fill=(60, 60, 60))
    label = label.rotate(90, expand=True)
    img.paste(label, (2, max(0, int(top + (H - top - bottom - label.height) / 2))))

    # step names under the axis, each only where it does not run into the one before it
    def place(i: int) -> tuple[float, float]:  # (x, width) of step i's name, centred under its point
        width = draw.textlength(steps[i])
        return min(max(xy(i, -1)[0] - width / 2, left - 10), W - width - 2), width

    last_x = place(len(steps) - 1)[0]  # the last step is always named
    shown_until = -1.0
    for i, step in enumerate(steps):
        x, width = place(i)
        if i == len(steps) - 1 or (x > shown_until + 6 and x + width + 6 < last_x):
            draw.text((x, H - bottom + 4), step, fill=(60, 60, 60))
            shown_until = x + width
    axis = "weights randomised block by block, from the top down"
    draw.text((left + (W - left - right - draw.textlength(axis)) / 2, H - bottom + 20), axis, fill=(60, 60, 60))
    for k, c in enumerate(curves):
        colour = PALETTE[k % len(PALETTE)]
        values = c.get("spearman", c.get("mean_spearman")) or []
        points = [xy(i, r) if r is not None else None for i, r in enumerate(values)]
        for a, b in itertools.pairwise(points):
            if a is not None and b is not None:
                draw.line([a, b], fill=colour, width=2)
        for p in points:
            if p is not None:
                draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
        draw.text((left + 130 * k, H - 22), f"- {c['method']}", fill=colour)
    return img
