"""The result records of the public API (`vtdemo.classify`, `vtdemo.detect`, the webcam): small dataclasses whose
`to_dict()` is exactly the CLI's JSON schema, and the two functions that fill them from a model's outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import postprocess
from .hub import LoadedModel


@dataclass
class Prediction:
    index: int
    label: str
    score: float  # softmax probability


@dataclass
class ClassifyResult:
    image: str
    model: str
    predictions: list[Prediction]
    runtime: dict[str, Any] = field(default_factory=dict)  # engine and precision (`engine.runtime_info`)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["runtime"]:  # a result built without it (older callers): no empty key in the JSON
            d.pop("runtime")
        return d


@dataclass
class Detection:
    label_id: int
    label: str
    score: float
    box: list[float]  # [x0, y0, x1, y1] pixels of the original image
    query: int = field(default=-1, repr=False)  # which of the decoder's queries produced it (not in the JSON)


@dataclass
class DetectResult:
    image: str
    model: str
    size: list[int]  # [width, height]
    detections: list[Detection]
    runtime: dict[str, Any] = field(default_factory=dict)  # engine and precision (`engine.runtime_info`)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for det in d["detections"]:
            det.pop("query")
        if not d["runtime"]:
            d.pop("runtime")
        return d


def predictions(loaded: LoadedModel, logits: torch.Tensor, top_k: int) -> list[Prediction]:
    """logits [K] -> the top-k predictions with names; none for a model without a head (its output is features)."""
    if not loaded.labels:
        return []
    probs, idx = postprocess.top_k(logits.detach().cpu(), top_k)
    return [Prediction(int(i), loaded.labels[int(i)], float(p)) for p, i in zip(probs, idx, strict=True)]


def no_head_note(loaded: LoadedModel) -> str | None:
    """One line for a model without a head (a feature model), which shows no top 5; None for a classifier."""
    if loaded.labels:
        return None
    return (
        f"{loaded.id} is a feature model (no classifier head): it predicts no classes. Its maps show where its "
        "CLS token looks; see What a self-supervised ViT sees."
    )


def detections(loaded: LoadedModel, scored: postprocess.DetrScores, keep: torch.Tensor) -> list[Detection]:
    """Selected entries of `scored` -> Detection records (box rounded to 0.01 px); `query` is the decoder query behind
    each (for RT-DETR an entry is a (query, class) pair: `DetrScores.query_of`)."""
    return [
        Detection(
            label_id=int(scored.labels[q]),
            label=loaded.labels[int(scored.labels[q])],
            score=float(scored.scores[q]),
            box=[round(float(v), 2) for v in scored.boxes[q]],
            query=scored.query_of(int(q)),
        )
        for q in keep
    ]
