"""What a soak visitor does: the mix of actions (drawn with a seeded RNG), the models it switches among, and each
endpoint's positional arguments (the order of tests/app/test_api_contract.py; tests/support/overload_clients.py
builds its requests with the same functions).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("vit", "swin", "detr")
#: The attention view of a detection: head, layer, encoder direction, opacity.
VIEW: tuple[str, str, str, float] = ("mean", "last", "where it looks", 0.55)
#: The default explanation method of each classifier endpoint.
METHODS = {"classify_vit": "rollout", "classify_swin": "swin-rollout"}
#: Relative weights of the actions (a visitor on the page: mostly looking at results and moving sliders, sometimes a
#: new photo or model, rarely a comparison, which runs every method).
MIX: dict[str, float] = {
    "classify": 16,  # a photo in the Classify tab, ViT or Swin
    "explain": 16,  # another method, class, head fusion or discard on the shown photo
    "compare": 2,  # every method side by side
    "detect": 12,  # a photo in the Detect tab
    "threshold": 20,  # the DETR threshold slider (a view of the cached run)
    "attention": 5,  # another head / layer of the detection's attention
    "switch_model": 7,  # another repo in a model picker
    "webcam": 6,  # a burst of webcam frames
    "bad_input": 4,  # a text file named .jpg, a truncated JPEG or an unknown model id
}
BAD_INPUTS = ("bad_text_jpg", "bad_truncated_jpg", "bad_model_id")
THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
LIVE_SIZES = (256, 320, 384)


@dataclass
class Models:
    """The repos each picker switches among (the first is where a visitor starts)."""

    vit: list[str]
    swin: list[str]
    detr: list[str]

    def of(self, family: str) -> list[str]:
        return {"vit": self.vit, "swin": self.swin, "detr": self.detr}[family]

    def all(self) -> list[tuple[str, str]]:
        return [(f, m) for f in FAMILIES for m in self.of(f)]


def guess_family(repo: str, choices: Mapping[str, Sequence[str]] | None = None) -> str:
    """The picker a repo id belongs to: the app's list that names it, else its name (swin / detr), else ViT."""
    for family, names in (choices or {}).items():
        if repo in names:
            return family
    low = repo.lower()
    return "swin" if "swin" in low else "detr" if "detr" in low else "vit"


def parse_models(
    specs: Iterable[str], defaults: Mapping[str, str], choices: Mapping[str, Sequence[str]] | None = None
) -> Models:
    """`--models` values, `family=repo` or a bare repo id (family guessed); a family not named keeps the app's
    default. Raises ValueError on an unknown family."""
    picked: dict[str, list[str]] = {f: [] for f in FAMILIES}
    for spec in specs:
        family, sep, repo = spec.partition("=")
        if not sep:
            family, repo = guess_family(spec, choices), spec
        if family not in picked:
            raise ValueError(f"--models: '{family}' is not one of {', '.join(FAMILIES)} (family=repo)")
        if repo and repo not in picked[family]:
            picked[family].append(repo)
    return Models(*(picked[f] or [defaults[f]] for f in FAMILIES))


@dataclass
class VisitorState:
    """What a visitor's session has on the page (the server keeps the matching runs in the session)."""

    model: dict[str, str]
    classified: dict[str, list[str]] = field(default_factory=dict)  # family -> the shown top-5 labels
    detected: bool = False


def choose(rng: random.Random, state: VisitorState, mix: dict[str, float] = MIX) -> tuple[str, str]:
    """(action, family) of the next action. Views of a result (explain, compare, threshold, attention) fall back to
    making that result first when the session has none."""
    action = rng.choices(list(mix), weights=list(mix.values()))[0]
    family = rng.choice(("vit", "swin"))
    if action in ("explain", "compare") and family not in state.classified:
        action = "classify"
    if action in ("threshold", "attention") and not state.detected:
        action = "detect"
    if action in ("detect", "threshold", "attention", "webcam"):
        family = "detr"
    if action == "switch_model":
        family = rng.choice(FAMILIES)
    if action == "bad_input":
        action = rng.choice(BAD_INPUTS)
        family = rng.choice(FAMILIES)
    return action, family


def think_s(rng: random.Random, mean_s: float) -> float:
    """Think time between two actions: exponential around the mean, within [mean / 10, 4 x mean]."""
    if mean_s <= 0:
        return 0.0
    return min(4 * mean_s, max(mean_s / 10, rng.expovariate(1 / mean_s)))


# ------------------------------------------------------------------------------------------------- arguments


def classify_args(photo: Any, model: str, method: str, opacity: float = 0.5) -> tuple:
    """/classify_vit, /classify_swin: image, model id, method, opacity."""
    return (photo, model, method, opacity)


def explain_args(
    method: str, class_name: str | None, fusion: str = "mean", discard: float = 0.0, opacity: float = 0.5
) -> tuple:
    """/explain_vit, /explain_swin: method, class, head fusion, discard ratio, head, block, opacity."""
    return (method, class_name, fusion, discard, "mean", None, opacity)


def detect_args(
    photo: Any, model: str, threshold: float, classes: Sequence[str] = (), view: Sequence[Any] = VIEW
) -> tuple:
    """/detect: image, model id, threshold, class filter, max detections, NMS, NMS IoU, then the attention view."""
    return (photo, model, threshold, list(classes), 100, False, 0.5, *view)


def rerender_args(threshold: float, classes: Sequence[str] = ()) -> tuple:
    """/rerender: threshold, class filter, max detections, NMS, NMS IoU."""
    return (threshold, list(classes), 100, False, 0.5)


def attention_args(head: str = "mean", layer: str = "last", direction: str = "where it looks") -> tuple:
    """/attention_view: head, layer, encoder direction, opacity."""
    return (head, layer, direction, VIEW[3])


def webcam_args(frame: Any, threshold: float, live_size: int, model: str, extra: Sequence[Any] = ()) -> tuple:
    """/webcam: frame, threshold, live input size, model id, then `extra`: the defaults of any later parameter the
    app's API lists (e.g. a map overlay switch), read by the soak from the app."""
    return (frame, threshold, live_size, model, *extra)
