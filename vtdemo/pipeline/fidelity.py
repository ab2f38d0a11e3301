"""The fidelity guard: how far the fast path's results are from the exact path's, on real photos, judged on what a
person sees.

The bar (`GUARD`; tests/parity/test_engine_guard.py and tests/unit/test_engine.py check it, `bf16_verdict`
applies it at run time; the engine calls it through `vtdemo.engine.set_guard`, given by this package):
- classifiers: the same top-5 set, up to classes whose exact probability lies within 0.02 of the fifth's (two
  classes a hair apart may swap places 5 and 6, as a DETR score may cross a threshold), max |Δp| <= 0.02 over all
  classes; the default attention map (rollout for ViT, window-aware rollout for Swin) within 0.02 of its maximum
  (both maps scaled to max 1);
- DETR, for **every query** (the threshold slider goes down to 0, so any of them can be shown): its score (the best
  class probability) within 0.02 and its box within 3 px (xyxy, original pixels); at each threshold of `THRESHOLDS`
  the kept sets may differ only by detections whose exact score lies within 0.02 of that threshold (a score that
  moves by 0.001 across the threshold is not a different result); for every detection kept by both at the default
  threshold, its decoder cross-attention map and the encoder map at its box centre within 0.02 of their maximum;
- RT-DETR (`rtdetr_gaps`), queries paired by the encoder position they were selected from: every (query, class)
  score (sigmoid) within 0.02 and every query's box within 3 px; the kept (query, class) sets at each threshold of
  `THRESHOLDS` differ only by pairs whose exact score lies within 0.02 of it; every decoder layer's sampling
  locations within 3 px of the photo and its sampling weights within 0.02; AIFI's attention at each kept
  detection's box centre within 0.02 of its maximum. A position selected by one path only must be among the last
  1% of that path's selection (a near-tie at the top-Q boundary of the query selection, which the parity tests
  against transformers allow too; its query is not compared).
The exact path is the one that the parity tests pin to timm / transformers.

Reduced precision for the detectors sits behind this guard at run time: a DETR or RT-DETR compiled at bf16 (the CPU
has bf16 units) is checked against its exact model on the example photos when it is first prepared (`bf16_verdict`,
once per weight file: the verdict is kept in the engine cache); outside the guard it runs f32 instead, and says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..families import DEFAULT_THRESHOLD
from .runs import run_classifier, run_detr, run_rtdetr

log = logging.getLogger(__name__)

GUARD = {"top5": True, "dp": 0.02, "score": 0.02, "map": 0.02, "box_px": 3.0, "boundary": 0.01}
#: The thresholds at which DETR's kept sets are compared (the default, 0.7, among them).
THRESHOLDS = (0.3, 0.5, DEFAULT_THRESHOLD, 0.9)


def _map_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    from ..explain import normalize_map

    return float((normalize_map(a.float()) - normalize_map(b.float())).abs().max())


def classifier_gaps(exact: Any, fast: Any, image: Image.Image) -> dict[str, float | bool]:
    """{"top5_agree", "dp", "map"} for one photo (exact, fast: LoadedModel of the same classifier)."""
    from ..explain.api import classifier_map

    a, b = run_classifier(exact, image), run_classifier(fast, image)
    pa, pb = a.logits.softmax(-1), b.logits.softmax(-1)
    same = top5_agree(pa.flatten(), pb.flatten())
    ma, _ = classifier_map(a)
    mb, _ = classifier_map(b)
    return {"top5_agree": same, "dp": float((pa - pb).abs().max()), "map": _map_gap(ma, mb)}


def top5_agree(exact: torch.Tensor, fast: torch.Tensor, tol: float = GUARD["dp"]) -> bool:
    """Are the top-5 classes the same, up to classes whose exact probability lies within `tol` of the exact fifth's?
    exact, fast: [K] probabilities of the same classes."""
    top = exact.topk(5)
    differ = set(top.indices.tolist()) ^ set(fast.topk(5).indices.tolist())  # in one top-5 only
    fifth = float(top.values[-1])
    return all(abs(float(exact[k]) - fifth) <= tol for k in differ)


def kept_sets_agree(exact: torch.Tensor, fast: torch.Tensor, threshold: float, tol: float = GUARD["score"]) -> bool:
    """Do the detections kept at `threshold` (score >= threshold) agree, up to queries whose exact score lies within
    `tol` of the threshold? exact, fast: [Q] scores of the same queries."""
    differ = (exact >= threshold) ^ (fast >= threshold)  # [Q]: kept by one only
    return bool(((exact[differ] - threshold).abs() <= tol).all())


def detr_gaps(
    exact: Any, fast: Any, image: Image.Image, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float | bool | int]:
    """{"score", "box_px", "sets_agree", "detections", "decoder_map", "encoder_map"} for one photo (module
    docstring): the largest gaps over every query, and whether the kept sets agree at each of `THRESHOLDS`."""
    from .. import postprocess
    from ..explain import detr as ex

    a, b = run_detr(exact, image), run_detr(fast, image)
    sa, sb = a.scored.scores.float(), b.scored.scores.float()  # [Q]
    both = postprocess.select(a.scored, threshold).tolist()
    both = [q for q in both if float(sb[q]) >= threshold]
    out: dict[str, float | bool | int] = {
        "score": float((sa - sb).abs().max()),
        "box_px": float((a.scored.boxes - b.scored.boxes).abs().max()),
        "sets_agree": all(kept_sets_agree(sa, sb, t) for t in sorted({*THRESHOLDS, threshold})),
        "detections": len(both),
        "decoder_map": 0.0,
        "encoder_map": 0.0,
    }
    w, h = image.size
    for q in both:
        out["decoder_map"] = max(
            out["decoder_map"], _map_gap(ex.decoder_attention(a.output, q), ex.decoder_attention(b.output, q))
        )
        x0, y0, x1, y1 = a.scored.boxes[q].tolist()
        point = (min(max((x0 + x1) / 2 / w, 0.0), 0.999), min(max((y0 + y1) / 2 / h, 0.0), 0.999))
        out["encoder_map"] = max(
            out["encoder_map"], _map_gap(ex.encoder_attention(a.output, point), ex.encoder_attention(b.output, point))
        )
    return out


def rtdetr_gaps(
    exact: Any, fast: Any, image: Image.Image, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float | bool | int]:
    """{"score", "box_px", "sets_agree", "detections", "unpaired", "unpaired_depth", "sampling_px", "sampling_weight",
    "aifi_map"} for one photo (module docstring): the largest gaps over every paired query and decoder layer. Queries
    are paired by their encoder position (`query_index`): equal scores may leave top-k in another order; `unpaired`
    counts the positions selected by one path only (their queries are not compared) and `unpaired_depth` is how far
    from the end of its path's selection (sorted by selection score) the earliest of them lies, as a fraction of Q."""
    from torchvision.ops import box_convert

    from ..explain import rtdetr as ex

    a, b = run_rtdetr(exact, image), run_rtdetr(fast, image)
    oa, ob = a.output, b.output
    pos_a, pos_b = oa.query_index[0].tolist(), ob.query_index[0].tolist()
    where = {int(p): q for q, p in enumerate(pos_b)}
    qa, qb = [], []
    for q, p in enumerate(pos_a):
        if int(p) in where:
            qa.append(q)
            qb.append(where[int(p)])
    Q = len(pos_a)
    alone = [q for q in range(Q) if q not in set(qa)] + [q for q in range(Q) if q not in set(qb)]
    ia, ib = torch.tensor(qa, dtype=torch.long), torch.tensor(qb, dtype=torch.long)
    sa, sb = oa.logits[0, ia].float().sigmoid(), ob.logits[0, ib].float().sigmoid()  # [Q', K]
    w, h = image.size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    ba = box_convert(oa.boxes[0, ia].float(), "cxcywh", "xyxy") * scale  # [Q', 4] pixels
    bb = box_convert(ob.boxes[0, ib].float(), "cxcywh", "xyxy") * scale
    px = torch.tensor([float(w), float(h)])
    sampling_px = max(
        _largest((la[0, ia] - lb[0, ib]).float() * px)
        for la, lb in zip(oa.sampling_locations, ob.sampling_locations, strict=True)
    )
    sampling_weight = max(
        _largest((wa[0, ia] - wb[0, ib]).float())
        for wa, wb in zip(oa.sampling_weights, ob.sampling_weights, strict=True)
    )
    kept = (sa >= threshold) & (sb >= threshold)  # [Q', K]: detections kept by both at the threshold
    out: dict[str, float | bool | int] = {
        "score": _largest(sa - sb),
        "box_px": _largest(ba - bb),
        "sets_agree": all(kept_sets_agree(sa.flatten(), sb.flatten(), t) for t in sorted({*THRESHOLDS, threshold})),
        "detections": int(kept.sum()),
        "unpaired": Q - len(qa),
        "unpaired_depth": (Q - min(alone)) / Q if alone else 0.0,
        "sampling_px": sampling_px,
        "sampling_weight": sampling_weight,
        "aifi_map": 0.0,
    }
    if oa.aifi_attn:
        for i in kept.any(-1).nonzero().flatten().tolist():
            x0, y0, x1, y1 = ba[i].tolist()
            point = (min(max((x0 + x1) / 2 / w, 0.0), 0.999), min(max((y0 + y1) / 2 / h, 0.0), 0.999))
            gap = _map_gap(ex.aifi_attention(oa, point), ex.aifi_attention(ob, point))
            out["aifi_map"] = max(out["aifi_map"], gap)
    return out


def _largest(gaps: torch.Tensor) -> float:
    """max |gaps|, 0.0 when nothing is compared (no query paired: `unpaired` then says why it fails)."""
    return float(gaps.abs().max()) if gaps.numel() else 0.0


def within_guard(gaps: dict[str, Any]) -> bool:
    """True if one photo's gaps (any kind) meet the bar in `GUARD`."""
    if "top5_agree" in gaps:
        return bool(gaps["top5_agree"]) and gaps["dp"] <= GUARD["dp"] and gaps["map"] <= GUARD["map"]
    if "sampling_px" in gaps:  # RT-DETR
        return (
            bool(gaps["sets_agree"])
            and gaps["unpaired_depth"] <= GUARD["boundary"]
            and gaps["score"] <= GUARD["score"]
            and gaps["box_px"] <= GUARD["box_px"]
            and gaps["sampling_px"] <= GUARD["box_px"]
            and gaps["sampling_weight"] <= GUARD["score"]
            and gaps["aifi_map"] <= GUARD["map"]
        )
    return (
        bool(gaps["sets_agree"])
        and gaps["score"] <= GUARD["score"]
        and gaps["box_px"] <= GUARD["box_px"]
        and gaps["decoder_map"] <= GUARD["map"]
        and gaps["encoder_map"] <= GUARD["map"]
    )


#: Bump when the guard's rules change: verdicts kept in the engine cache are then not read.
GUARD_VERSION = 1


def _outside(name: str, gaps: dict[str, Any]) -> str:
    """The one line that says why bf16 is outside the guard on photo `name`, with the gaps that decide it."""
    if "sampling_px" in gaps:  # RT-DETR
        measured = (
            f"score gap {gaps['score']:.3f}, box {gaps['box_px']:.1f} px, sampling points {gaps['sampling_px']:.1f} px "
            f"/ weights {gaps['sampling_weight']:.3f}, AIFI map {gaps['aifi_map']:.3f}"
        )
        if gaps["unpaired_depth"] > GUARD["boundary"]:
            measured += f", {gaps['unpaired']} queries selected from other encoder positions"
        elif not gaps["sets_agree"]:
            measured += ", other detections kept"
    else:
        measured = (
            f"score gap {gaps['score']:.3f}, box {gaps['box_px']:.1f} px, maps "
            f"{max(gaps['decoder_map'], gaps['encoder_map']):.3f}"
        )
        if not gaps["sets_agree"]:
            measured += ", other detections kept"
    return f"bf16 is outside the fidelity guard on {name} ({measured}; bar 0.02 / 3 px / 0.02)"


def bf16_verdict(fast: Any, progress: Callable[[str], None] | None = None) -> str | None:
    """Is this fast DETR or RT-DETR (compiled at bf16) within the guard against its exact model on the example
    photos (`detr_gaps`, `rtdetr_gaps`)? None if so, else the reason in one line. Kept in the engine cache per weight
    file and runtime version, so a model is checked once, not at every start."""
    from ..assets import examples_dir
    from ..engine import cache, exact_model, openvino_runtime

    model = fast.model
    key = cache.entry_key(
        model.model_id, model.weights, "openvino", openvino_runtime.version(), "bf16-guard", f"v{GUARD_VERSION}"
    )
    folder = cache.lookup(key)
    if folder is not None:
        verdict = json.loads((folder / "verdict.json").read_text(encoding="utf-8"))
        return verdict["reason"]
    if progress is not None:
        progress(f"Checking the fast engine's bf16 {model.model_id} against the exact model (first use only)…")
    exact = exact_model(fast)
    gaps_of = rtdetr_gaps if fast.family == "rtdetr" else detr_gaps
    reason = None
    for path in sorted(p for p in examples_dir().iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"}):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        gaps = gaps_of(exact, fast, image)
        log.info("%s bf16 vs f32 exact on %s: %s", model.model_id, path.name, gaps)
        if not within_guard(gaps):
            reason = _outside(path.name, gaps)
            break

    def write(folder: Path) -> None:
        (folder / "verdict.json").write_text(json.dumps({"reason": reason}), encoding="utf-8")

    cache.store(key, write)
    return reason
