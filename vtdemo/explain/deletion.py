"""Deletion and insertion curves: sanity checks for any relevance map (Petsiuk et al. 2018, "RISE: Randomized Input
Sampling for Explanation of Black-box Models", arXiv 1806.07421, §4.1 "causal metrics").

- Deletion: remove the patches the map marks as most relevant first, re-run the classifier, and watch the
  probability of the explained class: a faithful map makes it fall fast (small area under the curve).
- Insertion: start from the baseline image (every patch removed) and put the most relevant patches back first: a
  faithful map makes the probability rise fast (large area under the curve).
A random order is the baseline for both. Removing a patch sets its pixels to `baseline` in the normalised input
(0 = the dataset's mean colour); RISE blurs the image for insertion instead, we use the same constant for both so
that the two curves share their end points (the full image and the empty one).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def patch_order(relevance: torch.Tensor) -> torch.Tensor:
    """[gh, gw] map -> patch indices (row-major) from most to least relevant (stable for ties)."""
    return relevance.flatten().argsort(descending=True, stable=True)


def _ranks(order: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """[P] order -> [1, 1, H, W] rank of each pixel's patch (when that patch is changed), the grid laid evenly."""
    gh, gw = grid
    P = gh * gw
    rank = torch.empty(P, dtype=torch.long)
    rank[order] = torch.arange(P)  # rank[p] = when patch p is changed
    rank = rank.view(1, 1, gh, gw).float()
    return torch.nn.functional.interpolate(rank, size=size, mode="nearest")  # [1, 1, H, W]


def _curve(
    probability: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    order: torch.Tensor,
    grid: tuple[int, int],
    steps: int,
    baseline: float,
    batch_size: int,
    insert: bool,
    ends: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    gh, gw = grid
    P = gh * gw
    _, _, H, W = x.shape
    counts = torch.linspace(0, P, steps + 1).round().long()  # patches changed at each step
    rank = _ranks(order, grid, (H, W))  # [1, 1, H, W]
    todo = counts[1:-1] if ends is not None else counts  # the end points are the same two images for every order
    probs = []
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        changed = rank < chunk.view(-1, 1, 1, 1).to(rank)  # [b, 1, H, W]
        empty = torch.full_like(x, baseline)
        images = torch.where(changed, x, empty) if insert else torch.where(changed, empty, x)  # [b, 3, H, W]
        probs.append(probability(images).float())
    if ends is not None:
        p_full, p_empty = ends
        first, last = (p_empty, p_full) if insert else (p_full, p_empty)
        probs = [torch.tensor([first]), *probs, torch.tensor([last])]
    return counts.float() / P, torch.cat(probs)


def end_points(
    probability: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, baseline: float = 0.0
) -> tuple[float, float]:
    """(probability of the full image x, probability of the baseline image): where every deletion and insertion curve
    starts and ends, whatever the order. One forward pass of two images; pass it as `ends` to skip them per curve."""
    p = probability(torch.cat([x, torch.full_like(x, baseline)])).float()
    return float(p[0]), float(p[1])


def deletion_curve(
    probability: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    order: torch.Tensor,
    grid: tuple[int, int],
    steps: int = 20,
    baseline: float = 0.0,
    batch_size: int = 8,
    ends: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities as patches are deleted in `order`.

    probability: [B, 3, H, W] -> [B] probability of the explained class.
    x: [1, 3, H, W] model input; grid: (gh, gw) patch grid laid evenly over H x W; order: [P] patch indices.
    ends: `end_points(probability, x, baseline)`, when known (the first and last images are then not run again).
    Returns (fraction deleted [S+1] from 0 to 1, probability [S+1]).
    """
    return _curve(probability, x, order, grid, steps, baseline, batch_size, insert=False, ends=ends)


def insertion_curve(
    probability: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    order: torch.Tensor,
    grid: tuple[int, int],
    steps: int = 20,
    baseline: float = 0.0,
    batch_size: int = 8,
    ends: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities as patches are put back in `order` onto the baseline image (arguments as `deletion_curve`).

    Returns (fraction inserted [S+1] from 0 to 1, probability [S+1]): the first value is the baseline image's, the
    last the full image's. Higher area = the map found what mattered.
    """
    return _curve(probability, x, order, grid, steps, baseline, batch_size, insert=True, ends=ends)


def area_under_curve(fraction: torch.Tensor, probability: torch.Tensor) -> float:
    """Trapezoidal area under probability(fraction), in [0, 1]: lower is better for deletion, higher for
    insertion."""
    return float(torch.trapezoid(probability, fraction))


class CurveStream:
    """The deletion and insertion curves of several orders on one image, run as one batched stream of distinct images.

    The same values as `deletion_curve` / `insertion_curve` for each order (same images, same probabilities) with
    fewer forward passes: an image is identified by the pixels it keeps from x, so an image that two curves share
    (the full image and the empty one, which every curve starts or ends at; the same kept patches under two maps'
    orders) runs once, and the images of every order go through `probability` in batches of `batch_size`, across
    orders. `full`: the probability of x itself when already known (the run's own forward pass), then not run again.

    Usage: `handle = stream.add(order, grid)` for each order (full batches run as they fill), then
    `stream.curves(handle)` -> (fraction [S+1], deletion [S+1], insertion [S+1]) (runs what is still queued).
    """

    def __init__(
        self,
        probability: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        steps: int,
        baseline: float = 0.0,
        batch_size: int = 8,
        full: float | None = None,
    ) -> None:
        self.probability = probability
        self.x = x  # [1, 3, H, W]
        self.steps = steps
        self.baseline = baseline
        self.batch_size = batch_size
        self._index: dict[bytes, int] = {}  # kept-pixel mask -> image number
        self._values: list[float | None] = []  # image number -> probability (None until run)
        self._queue: list[tuple[int, torch.Tensor]] = []  # (image number, kept mask [1, H, W]) not yet run
        self._curves: list[tuple[torch.Tensor, list[int], list[int]]] = []  # (fraction, deletion, insertion images)
        self.images_run = 0  # forward passes' images so far (for tests and benchmarks)
        if full is not None:
            self._image(torch.ones(1, *x.shape[-2:], dtype=torch.bool), known=full)

    def _image(self, kept: torch.Tensor, known: float | None = None) -> int:
        key = kept.numpy().tobytes()
        if key not in self._index:
            self._index[key] = len(self._values)
            self._values.append(known)
            if known is None:
                self._queue.append((self._index[key], kept))
        return self._index[key]

    def add(self, order: torch.Tensor, grid: tuple[int, int]) -> int:
        """Queue one order's curves ([P] patch indices over the (gh, gw) grid); returns its handle."""
        P = grid[0] * grid[1]
        counts = torch.linspace(0, P, self.steps + 1).round().long()  # patches changed at each step
        rank = _ranks(order, grid, (int(self.x.shape[-2]), int(self.x.shape[-1])))[0]  # [1, H, W]
        deleted = [self._image(rank >= c) for c in counts.tolist()]  # deletion keeps the patches not yet removed
        inserted = [self._image(rank < c) for c in counts.tolist()]  # insertion keeps those put back
        self._curves.append((counts.float() / P, deleted, inserted))
        while len(self._queue) >= self.batch_size:
            self._run(self.batch_size)
        return len(self._curves) - 1

    def _run(self, n: int) -> None:
        chunk, self._queue = self._queue[:n], self._queue[n:]
        kept = torch.stack([k for _, k in chunk])  # [b, 1, H, W]
        images = torch.where(kept, self.x, torch.full_like(self.x, self.baseline))  # [b, 3, H, W]
        probs = self.probability(images).float()
        self.images_run += len(chunk)
        for (i, _), p in zip(chunk, probs.tolist(), strict=True):
            self._values[i] = p

    def curves(self, handle: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fraction [S+1] from 0 to 1, deletion probabilities [S+1], insertion probabilities [S+1]) of one order."""
        while self._queue:
            self._run(self.batch_size)
        frac, deleted, inserted = self._curves[handle]
        values = self._values
        return (
            frac,
            torch.tensor([values[i] for i in deleted], dtype=torch.float32),
            torch.tensor([values[i] for i in inserted], dtype=torch.float32),
        )
