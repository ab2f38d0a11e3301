"""What the Classify tab's sanity check shows, as pure functions of its results: the deletion and insertion curves
of `vtdemo.explain.api.deletion_check` as small charts with their captions (Petsiuk et al. 2018, RISE,
arXiv 1806.07421, §4.1), and the cascading parameter randomisation curve of
`vtdemo.evaluate.randomisation.map_randomisation` with its verdict (Adebayo et al., NeurIPS 2018, arXiv 1810.03292,
§3.1). `vtdemo.ui.classify.sanity` owns the components and handlers that call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw

from ... import pipeline, render
from ...pipeline import RandomisationCurve


def curve_chart(
    fraction: Sequence[float],
    probability: Sequence[float],
    random_probability: Sequence[float],
    auc: float,
    random_auc: float,
    xlabel: str,
    width: int = 480,
    height: int = 220,
    title: str = "",
) -> Image.Image:
    """Probability of the explained class (y) against the fraction of patches changed (x): in the map's order
    (orange) and in a random order (grey), with both areas under the curves and `title` at the top left."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    small = render.font(12)
    left, right, top, bottom = 48, width - 24, 14, height - 34
    top_p = max(max(probability), max(random_probability), 1e-6)
    draw.rectangle((left, top, right, bottom), outline=(190, 190, 190))
    for frac in (0.0, 0.5, 1.0):
        text = f"{frac:.0%}"
        draw.text(
            (left + frac * (right - left) - draw.textlength(text, font=small) / 2, bottom + 4),
            text,
            fill=(90, 90, 90),
            font=small,
        )
    draw.text((4, top - 2), f"{top_p:.2g}", fill=(90, 90, 90), font=small)
    draw.text((left - 14, bottom - 12), "0", fill=(90, 90, 90), font=small)
    draw.text((left + (right - left) / 2 - 60, height - 15), xlabel, fill=(90, 90, 90), font=small)

    def points(ys: Sequence[float]) -> list[tuple[float, float]]:
        return [(left + f * (right - left), bottom - (p / top_p) * (bottom - top)) for f, p in zip(fraction, ys)]

    draw.text((left + 6, top + 6), title, fill=(40, 40, 40), font=render.font(14))
    draw.line(points(random_probability), fill=(150, 150, 150), width=2)
    draw.line(points(probability), fill=(230, 120, 0), width=3)
    draw.text((right - 200, top + 6), f"this map: area {auc:.3f}", fill=(230, 120, 0), font=small)
    draw.text((right - 200, top + 22), f"random order: area {random_auc:.3f}", fill=(120, 120, 120), font=small)
    return img


def deletion_plot(check: dict[str, Any], width: int = 480, height: int = 220) -> Image.Image:
    """The deletion curves of `deletion_check`: most-relevant-first (orange) and in random order (grey)."""
    return curve_chart(
        check["fraction"],
        check["probability"],
        check["random_probability"],
        check["auc"],
        check["random_auc"],
        "patches deleted",
        width,
        height,
        "Deletion",
    )


def insertion_plot(check: dict[str, Any], width: int = 480, height: int = 220) -> Image.Image:
    """The insertion curves of `deletion_check`: most-relevant patches put back first into a blank image (orange)
    and in random order (grey)."""
    return curve_chart(
        check["fraction"],
        check["insertion_probability"],
        check["random_insertion_probability"],
        check["insertion_auc"],
        check["random_insertion_auc"],
        "patches inserted",
        width,
        height,
        "Insertion",
    )


def deletion_caption(check: dict[str, Any], target: dict[str, Any]) -> str:
    """One line under the charts: what the numbers mean for this map."""
    ratio = check["auc"] / max(check["random_auc"], 1e-12)
    verdict = (
        "the map points at patches the model uses"
        if ratio < 0.9
        else "worse than random: the map points away from what the model uses"
        if ratio > 1.1
        else "about the same as random: this map says little about what the model used"
    )
    text = (
        f"Deleting the patches this map marks first drops *{target['label']}* from {check['probability'][0]:.1%} "
        f"with area **{check['auc']:.3f}** under the curve, against **{check['random_auc']:.3f}** in random "
        f"order (lower is better): {verdict}."
    )
    if "insertion_auc" in check:
        text += (
            f" Inserting them first into a blank image: area **{check['insertion_auc']:.3f}** against "
            f"**{check['random_insertion_auc']:.3f}** at random (higher is better)."
        )
    return text


def randomisation_plot(curve: RandomisationCurve, width: int = 480, height: int = 260) -> Image.Image:
    """Spearman of the map with its original after each cumulative randomisation step (the library's chart)."""
    return pipeline.randomisation_chart([curve.to_dict()], (width, height), curve.threshold)


def randomisation_caption(curve: RandomisationCurve, label: str) -> str:
    """The verdict, in words, under the randomisation chart."""
    final = "undefined (the map became constant)" if curve.final is None else f"{curve.final:.2f}"
    head = (
        "**Fails the check: the map survives randomised weights**"
        if curve.survives
        else "**Passes: the map changes when the weights are randomised**"
    )
    return (
        f"{head}. Cascading parameter randomisation (Adebayo et al. 2018): the model's weights are re-drawn at "
        f"random from the top down (head, then blocks from the last to the first, then the patch embedding) and "
        f"the map is recomputed for *{label}* after each step. Spearman with the original map "
        f"after every block is randomised: **{final}** (|ρ| ≥ {curve.threshold:g} fails: a map that survives does "
        "not show what the model learned, the way an edge detector would not)."
    )
