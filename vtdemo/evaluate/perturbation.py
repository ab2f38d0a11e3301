"""Positive and negative perturbation tests of a relevance map (Chefer, Gur & Wolf, CVPR 2021, "Transformer
Interpretability Beyond Attention Visualization", arXiv 2012.09838, section 4 and Table 1).

The protocol, as in their public evaluation code (hila-chefer/Transformer-Explainability,
`baselines/ViT/generate_visualizations.py` and `baselines/ViT/pertubation_eval_from_hdf5.py`):
- the map on the patch grid is upsampled to the model input with bilinear interpolation (`align_corners=False`,
  what `F.interpolate(..., scale_factor=16, mode='bilinear')` does on a 14x14 map);
- for each step s in 0.1, 0.2, ..., 0.9, the `int(H * W * s)` pixels with the highest value (positive test: most
  relevant first) or the highest negated value (negative test: least relevant first) are set to 0 in the
  un-normalised [0, 1] image (black), i.e. to `-mean / std` in the normalised model input, all channels alike;
- a "hit" is the model's top-1 class on the perturbed image being the target (the ground-truth label in their
  ImageNet runs; the map itself explains the predicted class, their `--vis-class top`);
- the area under hits(fraction removed), with the unperturbed image at fraction 0, is `np.trapz(y, x) * 100`
  (the authors' answer in their issue #31): the x axis ends at 0.9, so the area is at most 90. Trapezoids are
  linear, so the mean of per-image areas is the area of the mean curve (the number in their Table 1).
Lower positive / higher negative area = a more faithful map.

Where we differ: `torch.topk` breaks ties in an unspecified order; we sort stably, so among equal values the pixel
with the lower row-major index goes first (ties only occur in the flat borders that bilinear upsampling leaves, and
in constant maps). The min-max rescaling they apply to the map changes no order and is skipped. The random
baseline is a map of i.i.d. uniform values on the same patch grid, upsampled the same way (a seeded generator per
image), so it removes blob-shaped regions like a real map does rather than scattered single pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Fractions of the pixels removed, as in the reference code (`perturbation_steps`, `--scale per`).
STEPS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TESTS = ("positive", "negative")


def upsample(relevance: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[gh, gw] map on the patch grid -> [H, W] on the model input (bilinear, align_corners=False)."""
    m = relevance.detach().float().cpu()[None, None]  # [1, 1, gh, gw]
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0]  # [H, W]


def removal_order(pixel_map: torch.Tensor, test: str) -> torch.Tensor:
    """[H, W] map -> [H*W] row-major pixel indices in the order they are removed.

    test: "positive" (most relevant first) or "negative" (least relevant first); ties keep row-major order.
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, not {test!r}")
    flat = pixel_map.flatten()  # [H*W]
    return (flat if test == "positive" else -flat).argsort(descending=True, stable=True)


def removed_counts(num_pixels: int, steps: Sequence[float] = STEPS) -> list[int]:
    """How many pixels each step removes: `int(num_pixels * step)`, as the reference code computes it."""
    return [int(num_pixels * s) for s in steps]


def blank_value(mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The normalised value [3] of a black pixel (0 in the [0, 1] image): -mean / std per channel."""
    return -torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)


def perturb(x: torch.Tensor, order: torch.Tensor, count: int, blank: torch.Tensor) -> torch.Tensor:
    """x: [1, 3, H, W] normalised input; the first `count` pixels of `order` [H*W] set to `blank` [3].

    Returns a new tensor [1, 3, H, W]; `x` is left alone.
    """
    _, C, H, W = x.shape
    removed = torch.zeros(H * W, dtype=torch.bool, device=x.device)
    removed[order[:count].to(x.device)] = True
    removed = removed.view(1, 1, H, W)  # [1, 1, H, W]
    return torch.where(removed, blank.to(x).view(1, C, 1, 1), x)  # [1, 3, H, W]


def random_map(grid: tuple[int, int], seed: int) -> torch.Tensor:
    """The random baseline: i.i.d. uniform [0, 1) values on the patch grid [gh, gw], from a seeded generator."""
    return torch.rand(grid, generator=torch.Generator().manual_seed(seed))


def area(hits: Sequence[float], steps: Sequence[float] = STEPS) -> float:
    """Area x100 under hits(fraction removed): `hits` [1 + len(steps)] starts with the unperturbed image (x = 0).

    Example: steps (0.1, 0.2), hits (1, 1, 0) -> 100 * (0.1 * 1 + 0.1 * 0.5) = 15.
    """
    x = np.array((0.0, *steps), dtype=np.float64)
    y = np.asarray(hits, dtype=np.float64)
    if y.shape != x.shape:
        raise ValueError(f"need {len(x)} hits (the unperturbed image, then one per step), got {len(y)}")
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 * 100)  # the trapezoid rule, as np.trapz


def _jobs(
    x: torch.Tensor, maps: Mapping[str, torch.Tensor], steps: Sequence[float], blank: torch.Tensor
) -> Iterator[tuple[str, str, int, torch.Tensor]]:
    """(method, test, step index, perturbed input [1, 3, H, W]) for every method, test and step, built lazily."""
    H, W = x.shape[-2:]
    counts = removed_counts(H * W, steps)
    for method, relevance in maps.items():
        pixel_map = upsample(relevance, (H, W))  # [H, W]
        for test in TESTS:
            order = removal_order(pixel_map, test)
            for i, count in enumerate(counts):
                yield method, test, i, perturb(x, order, count, blank)


def perturbation_hits(
    predict: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    target: int,
    blank: torch.Tensor,
    unperturbed_hit: bool,
    steps: Sequence[float] = STEPS,
    batch_size: int = 16,
) -> dict[str, dict[str, list[int]]]:
    """Both tests for every map of one image, in batched forward passes.

    predict: [B, 3, H, W] normalised inputs -> [B] top-1 class indices. x: [1, 3, H, W] the unperturbed input.
    maps: method -> [gh, gw] relevance (any scale; only the order matters). target: the class a hit must predict.
    blank: [3] normalised value of a removed pixel (`blank_value`). unperturbed_hit: whether the model already
    predicts `target` on `x` (the point at fraction 0, shared by every map).
    Returns method -> {"positive": hits, "negative": hits}, each hits a list of 0/1 of length 1 + len(steps).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    out = {m: {t: [int(unperturbed_hit)] + [0] * len(steps) for t in TESTS} for m in maps}
    jobs = _jobs(x, maps, steps, blank)
    while True:
        chunk = [job for _, job in zip(range(batch_size), jobs, strict=False)]
        if not chunk:
            break
        batch = torch.cat([job[3] for job in chunk])  # [b, 3, H, W]
        predicted = predict(batch).cpu()  # [b]
        for (method, test, i, _), cls in zip(chunk, predicted.tolist(), strict=False):
            out[method][test][1 + i] = int(cls == target)
    return out
