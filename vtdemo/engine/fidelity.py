"""The fidelity guard: how far the fast path's results are from the exact path's, on real photos.

The issue's bar (checked by tests/parity/test_engine_guard.py and reported by `python -m vtdemo bench --only fast`):
- classifiers: the same top-5 set, max |Δp| <= 0.02 over all classes; the default attention map (rollout for ViT,
  window-aware rollout for Swin) within 0.02 of its maximum (both maps scaled to max 1);
- DETR: at the default threshold 0.7 the same detections (same queries), boxes within 3 px (xyxy, original
  pixels), each detection's decoder cross-attention map and the encoder map at each box centre within 0.02 of
  their maximum (maps scaled to max 1).
The exact path is the one that the parity tests pin to timm / transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from ..families import DEFAULT_THRESHOLD

GUARD = {"top5": True, "dp": 0.02, "map": 0.02, "box_px": 3.0}


def _map_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    from ..explain import normalize_map

    return float((normalize_map(a.float()) - normalize_map(b.float())).abs().max())


def classifier_gaps(exact: Any, fast: Any, image: Image.Image) -> dict[str, float | bool]:
    """{"top5_same", "dp", "map"} for one photo (exact, fast: LoadedModel of the same classifier)."""
    from .. import pipeline

    a, b = pipeline.run_classifier(exact, image), pipeline.run_classifier(fast, image)
    pa, pb = a.logits.softmax(-1), b.logits.softmax(-1)
    same = set(pa.topk(5).indices.tolist()) == set(pb.topk(5).indices.tolist())
    ma, _ = pipeline.classifier_map(a)
    mb, _ = pipeline.classifier_map(b)
    return {"top5_same": same, "dp": float((pa - pb).abs().max()), "map": _map_gap(ma, mb)}


def detr_gaps(
    exact: Any, fast: Any, image: Image.Image, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float | bool | int]:
    """{"same_set", "detections", "box_px", "decoder_map", "encoder_map"} for one photo."""
    from .. import pipeline, postprocess
    from ..explain import detr as ex

    a, b = pipeline.run_detr(exact, image), pipeline.run_detr(fast, image)
    ka = postprocess.select(a.scored, threshold).tolist()
    kb = postprocess.select(b.scored, threshold).tolist()
    out: dict[str, float | bool | int] = {
        "same_set": sorted(ka) == sorted(kb),
        "detections": len(ka),
        "box_px": 0.0,
        "decoder_map": 0.0,
        "encoder_map": 0.0,
    }
    w, h = image.size
    for q in ka:
        out["box_px"] = max(out["box_px"], float((a.scored.boxes[q] - b.scored.boxes[q]).abs().max()))
        out["decoder_map"] = max(
            out["decoder_map"], _map_gap(ex.decoder_attention(a.output, q), ex.decoder_attention(b.output, q))
        )
        x0, y0, x1, y1 = a.scored.boxes[q].tolist()
        point = (min(max((x0 + x1) / 2 / w, 0.0), 0.999), min(max((y0 + y1) / 2 / h, 0.0), 0.999))
        out["encoder_map"] = max(
            out["encoder_map"], _map_gap(ex.encoder_attention(a.output, point), ex.encoder_attention(b.output, point))
        )
    return out


def within_guard(gaps: dict[str, Any]) -> bool:
    """True if one photo's gaps (either kind) meet the bar in `GUARD`."""
    if "top5_same" in gaps:
        return bool(gaps["top5_same"]) and gaps["dp"] <= GUARD["dp"] and gaps["map"] <= GUARD["map"]
    return (
        bool(gaps["same_set"])
        and gaps["box_px"] <= GUARD["box_px"]
        and gaps["decoder_map"] <= GUARD["map"]
        and gaps["encoder_map"] <= GUARD["map"]
    )
