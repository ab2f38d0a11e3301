"""The built-in explanation methods as registry entries: each a small adapter from (run, options) to the pure
tensor function that implements it (`vtdemo.explain.vit`, `swin`, `detr`, `gradcam`, `detr_relevance`, `rtdetr`).

The API (`vtdemo.explain.api`) resolves the target before calling an adapter: `options.class_index` is the class
to explain (never None here) and, for DETR detections, `options.query` is the decoder query of the detection.
Adapters return un-normalised maps on the model's grid; the API scales them to maximum 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from torch import Tensor

from ..errors import ExplainError
from .registry import ExplainOptions, method
from .runs import ClassifierRun, DetrRun, RtDetrRun

ABNAR = "Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers (arXiv 2005.00928)"
CHEFER = "Chefer, Gur & Wolf, CVPR 2021, Transformer Interpretability Beyond Attention Visualization (arXiv 2012.09838)"
CHEFER_GENERIC = (
    "Chefer, Gur & Wolf, ICCV 2021, Generic Attention-model Explainability for Interpreting "
    "Bi-Modal and Encoder-Decoder Transformers (arXiv 2103.15679)"
)
SWIN = "Liu et al. 2021, Swin Transformer (arXiv 2103.14030)"
DETR = "Carion et al. 2020, End-to-End Object Detection with Transformers (arXiv 2005.12872)"
GRADCAM = "Selvaraju et al., ICCV 2017, Grad-CAM (arXiv 1610.02391)"
ATTNLRP = "Achtibat et al., ICML 2024, AttnLRP: Attention-Aware Layer-Wise Relevance Propagation (arXiv 2402.05602)"
CPLRP = (
    "Ali et al., ICML 2022, XAI for Transformers: Better Explanations through Conservative Propagation "
    "(arXiv 2202.07304)"
)


def _has_cls_token(loaded: Any, run: Any) -> str | None:
    if not getattr(loaded.config, "class_token", True):
        return (
            f"{loaded.id} has no CLS token (it classifies from the mean of its patch tokens): "
            "cls-attention does not apply; use rollout or grad-rollout"
        )
    return None


def _grid(run: ClassifierRun, flat: Tensor) -> Tensor:
    return flat.view(*run.patch_grid)  # [P] -> [gh, gw]: the run's own patch grid (it follows the input size)


def _need_point(name: str, options: ExplainOptions) -> tuple[float, float]:
    if options.point is None:
        raise ExplainError(f"{name} needs a point: --point X,Y in image pixels")
    return options.point


# ----------------------------------------------------------------------------------------------- ViT / DeiT


@method(
    name="rollout",
    label="Attention rollout",
    note="How much each patch flows into the CLS token through all layers (Abnar & Zuidema 2020).",
    paper=ABNAR,
    families={"vit"},
    target="none",
    controls={"head_fusion", "discard", "start_layer", "mask_outliers"},
)
def _rollout(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import artefacts, vit

    cfg = run.loaded.config
    prefix, readout = cfg.num_prefix_tokens, cfg.readout
    if o.mask_outliers:
        outliers = artefacts.inspect(run)["outliers"]
        flat = artefacts.masked_rollout(
            run.attentions, outliers, prefix, readout, o.head_fusion, o.discard, o.start_layer
        )
    else:
        flat = vit.rollout(run.attentions, o.head_fusion, o.discard, o.start_layer, prefix, readout=readout)
    return _grid(run, flat)


@method(
    name="grad-rollout",
    label="Gradient rollout (one class)",
    note="Attention weighted by its gradient for one class (Chefer et al. 2021): click a class to change it.",
    paper=CHEFER,
    families={"vit"},
    target="class",
    needs_gradients=True,
    controls={"class_index"},
)
def _grad_rollout(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import vit

    assert o.class_index is not None
    cfg = run.loaded.config
    _, attns, grads = vit.class_gradients(run.loaded.model, run.x, o.class_index)
    flat = vit.grad_rollout(cast(Sequence[Tensor], attns), grads, cfg.num_prefix_tokens, readout=cfg.readout)
    return _grid(run, flat)


@method(
    name="cls-attention",
    label="CLS attention, last layer",
    note="Where the CLS token looks in the last layer (one head, or the mean of all heads).",
    paper="Dosovitskiy et al. 2021, An Image is Worth 16x16 Words (arXiv 2010.11929)",
    families={"vit"},
    target="none",
    controls={"head"},
    applies=_has_cls_token,
)
def _cls_attention(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import vit

    per_head = vit.cls_attention(run.attentions, run.loaded.config.num_prefix_tokens)  # [nh, P]
    if o.head is not None and not -per_head.shape[0] <= o.head < per_head.shape[0]:
        raise ExplainError(f"head {o.head} is out of range: the model has {per_head.shape[0]} heads")
    return _grid(run, per_head.mean(0) if o.head is None else per_head[o.head])


@method(
    name="gradcam",
    label="Grad-CAM (one class)",
    note="Last block's tokens weighted by the mean gradient of the class (Grad-CAM, the papers' baseline): coarse, "
    "and blind to attention.",
    paper=GRADCAM,
    families={"vit"},
    target="class",
    needs_gradients=True,
    controls={"class_index", "layer"},
)
def _gradcam(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import gradcam

    assert o.class_index is not None
    depth = len(cast(Any, run.loaded.model).blocks)
    if not -depth <= o.layer < depth:
        raise ExplainError(f"layer {o.layer} is out of range: the model has {depth} blocks")
    return gradcam.vit_gradcam(run.loaded.model, run.x, o.class_index, block=o.layer)


# ----------------------------------------------------------------------------------------------- Swin


@method(
    name="swin-rollout",
    label="Window-aware rollout",
    note="Rollout through the shifted windows and patch merging; an approximation, since Swin has no CLS token: it "
    "averages what the final tokens draw on.",
    paper=f"{ABNAR}, carried through {SWIN}",
    families={"swin"},
    target="none",
    controls={"head_fusion", "discard"},
)
def _swin_rollout(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import swin

    return swin.rollout(run.attentions, head_fusion=o.head_fusion, discard_ratio=o.discard)


@method(
    name="swin-grad-rollout",
    label="Gradient rollout (one class)",
    note="Window attention weighted by its gradient for one class (Chefer et al. 2021, carried through the shifted "
    "windows and patch merging; an approximation like the rollout): click a class to change it.",
    paper=f"{CHEFER}, carried through {SWIN}",
    families={"swin"},
    target="class",
    needs_gradients=True,
    controls={"class_index"},
)
def _swin_grad_rollout(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import swin

    assert o.class_index is not None
    _, attns, grads = swin.class_gradients(run.loaded.model, run.x, o.class_index)
    return swin.grad_rollout(cast(Sequence[swin.SwinAttention], attns), grads)


@method(
    name="swin-window",
    label="Window around a clicked point",
    note="Click the image: the attention of the window around that point, in one block.",
    paper=f"{SWIN}; microsoft/Swin-Transformer issue #130",
    families={"swin"},
    target="point",
    controls={"point", "block", "head"},
)
def _swin_window(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import swin

    point = run.point_in_input(_need_point("swin-window", o))
    try:
        return swin.window_attention_at(run.attentions, point, block=o.block, head=o.head)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None


@method(
    name="swin-gradcam",
    label="Grad-CAM (one class)",
    note="Last stage's tokens (7 x 7 for Swin-T) weighted by the mean gradient of the class (Grad-CAM): coarse, and "
    "blind to attention.",
    paper=GRADCAM,
    families={"swin"},
    target="class",
    needs_gradients=True,
    controls={"class_index", "layer"},
)
def _swin_gradcam(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import gradcam

    assert o.class_index is not None
    stages = len(cast(Any, run.loaded.model).layers)
    if not -stages <= o.layer < stages:
        raise ExplainError(f"layer {o.layer} is out of range: the model has {stages} stages")
    return gradcam.swin_gradcam(run.loaded.model, run.x, o.class_index, stage=o.layer)


# ----------------------------------------------------------------------------------------------- LRP


def _vit_lrp_walkable(loaded: Any, run: Any) -> str | None:
    """The ViT LRP walk (`explain.lrp`) covers a plain ViT / DeiT with a CLS token at its trained input size."""
    cfg = loaded.config
    if not cfg.class_token or cfg.reg_tokens or cfg.init_values is not None:
        return (
            f"LRP is implemented for ViT / DeiT with a CLS token, without LayerScale or registers; {loaded.id} "
            "is not one: use grad-rollout"
        )
    if run is not None and run.prep is not None:
        return "LRP is implemented at the trained input size only: use grad-rollout at another size"
    return None


def _swin_lrp_walkable(loaded: Any, run: Any) -> str | None:
    """The Swin LRP walk (`explain.lrp_swin`) covers Swin V1 at any input size (a fast model wraps its skeleton)."""
    model = getattr(loaded.model, "skeleton", loaded.model)
    if type(model).__name__ != "SwinTransformer":
        return f"LRP is implemented for Swin (V1) only; {loaded.id} is not one: use swin-grad-rollout"
    return None


def _lrp_map(run: ClassifierRun, o: ExplainOptions, rule: str) -> Tensor:
    """`vtdemo.explain.lrp.vit_lrp` / `lrp_swin.swin_lrp` with one rule ("attnlrp" / "cplrp"); signed (the API
    keeps the positive part). The entries' `applies` has checked the model."""
    assert o.class_index is not None
    from .lrp import vit_lrp
    from .lrp_swin import swin_lrp

    explain_fn: Any = vit_lrp if run.family == "vit" else swin_lrp
    try:
        return explain_fn(run.loaded.model, run.x, o.class_index, rule=rule)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None


@method(
    name="attn-lrp",
    label="AttnLRP (one class)",
    note="Relevance of each patch for the class, propagated back through every layer including softmax and the q/k "
    "products (AttnLRP); positive evidence shown.",
    paper=ATTNLRP,
    families={"vit"},
    target="class",
    needs_gradients=True,
    controls={"class_index"},
    applies=_vit_lrp_walkable,
)
def _vit_attn_lrp(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    return _lrp_map(run, o, "attnlrp")


@method(
    name="swin-attn-lrp",
    label="AttnLRP (one class)",
    note="AttnLRP through Swin's shifted windows, mask, position bias and patch merges, on the stage-1 grid; positive "
    "evidence shown.",
    paper=f"{ATTNLRP}, carried through {SWIN}",
    families={"swin"},
    target="class",
    needs_gradients=True,
    controls={"class_index"},
    applies=_swin_lrp_walkable,
)
def _swin_attn_lrp(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    return _lrp_map(run, o, "attnlrp")


@method(
    name="cp-lrp",
    label="CP-LRP (one class)",
    note="Relevance for the class with the attention weights held fixed (conservative propagation: the map plus what "
    "the biases keep adds up to the logit); positive evidence shown.",
    paper=CPLRP,
    families={"vit"},
    target="class",
    needs_gradients=True,
    controls={"class_index"},
    applies=_vit_lrp_walkable,
)
def _vit_cp_lrp(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    return _lrp_map(run, o, "cplrp")


@method(
    name="swin-cp-lrp",
    label="CP-LRP (one class)",
    note="CP-LRP through Swin's windows and merges (attention held fixed, relevance conserved), on the stage-1 grid; "
    "positive evidence shown.",
    paper=f"{CPLRP}, carried through {SWIN}",
    families={"swin"},
    target="class",
    needs_gradients=True,
    controls={"class_index"},
    applies=_swin_lrp_walkable,
)
def _swin_cp_lrp(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    return _lrp_map(run, o, "cplrp")


# ----------------------------------------------------------------------------------------------- DETR


@method(
    name="detr-decoder",
    label="Decoder cross-attention",
    note="Where the detection's query gathered its evidence in one decoder layer (raw attention, not relevance).",
    paper=f"{DETR}, Fig. 6",
    families={"detr"},
    target="detection",
    controls={"query", "layer", "head"},
)
def _detr_decoder(run: DetrRun, o: ExplainOptions) -> Tensor:
    from . import detr

    if o.query is None:
        raise ExplainError("detr-decoder needs a detection (query index)")
    return detr.decoder_attention(run.output, o.query, layer=o.layer, head=o.head)


@method(
    name="detr-encoder",
    label="Encoder self-attention at a point",
    note="Click the image: where that position looks in one encoder layer ('row'), or who looks at it ('column').",
    paper=f"{DETR}, Fig. 3",
    families={"detr"},
    target="point",
    controls={"point", "layer", "head", "direction"},
)
def _detr_encoder(run: DetrRun, o: ExplainOptions) -> Tensor:
    from . import detr

    x, y = _need_point("detr-encoder", o)
    w, h = run.image.size
    try:
        return detr.encoder_attention(run.output, (x / w, y / h), layer=o.layer, head=o.head, direction=o.direction)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None


@method(
    name="detr-relevance",
    label="Relevance for the detection",
    note="Which image positions the detection's class (or, with target 'box', each box edge) depends on, through "
    "every encoder and decoder layer: gradient-weighted attention (Chefer et al. 2021), not raw attention.",
    paper=CHEFER_GENERIC,
    families={"detr"},
    target="detection",
    needs_gradients=True,
    controls={"query", "target_kind"},
)
def _detr_relevance(run: DetrRun, o: ExplainOptions) -> Tensor | dict[str, Tensor]:
    from . import detr_relevance

    if o.query is None:
        raise ExplainError("detr-relevance needs a detection (query index)")
    values, mask = run.inputs()
    maps = detr_relevance.relevance_maps(run.loaded.model, values, mask, o.query, o.target_kind)
    return maps["class"] if o.target_kind == "class" else maps


# ----------------------------------------------------------------------------------------------- RT-DETR

RTDETR = "Zhao et al., CVPR 2024, DETRs Beat YOLOs on Real-time Object Detection (arXiv 2304.08069)"
DEFORMABLE = "Zhu et al., ICLR 2021, Deformable DETR (arXiv 2010.04159)"


@method(
    name="rtdetr-sampling",
    label="Where the detection looked (sampling points)",
    note="The points the detection's query sampled in one decoder layer, every head and feature level, weighted by "
    "their attention (deformable attention has no full map; as a map: the weights splatted on the stride-8 grid).",
    paper=f"{RTDETR}; {DEFORMABLE}, Fig. 5",
    families={"rtdetr"},
    target="detection",
    controls={"query", "layer", "head"},
)
def _rtdetr_sampling(run: RtDetrRun, o: ExplainOptions) -> Tensor:
    from . import rtdetr

    if o.query is None:
        raise ExplainError("rtdetr-sampling needs a detection (query index)")
    try:
        points = rtdetr.sampling_points(run.output, o.query, layer=o.layer)
        return rtdetr.sampling_splat(points, run.feature_size, head=o.head)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None


@method(
    name="rtdetr-aifi",
    label="Encoder self-attention at a point (AIFI)",
    note="Click the image: where that position looks in AIFI, the one dense self-attention (on the stride-32 level), "
    "('row'), or who looks at it ('column').",
    paper=f"{RTDETR}, §4.2",
    families={"rtdetr"},
    target="point",
    controls={"point", "layer", "head", "direction"},
)
def _rtdetr_aifi(run: RtDetrRun, o: ExplainOptions) -> Tensor:
    from . import rtdetr

    x, y = _need_point("rtdetr-aifi", o)
    w, h = run.image.size
    try:
        return rtdetr.aifi_attention(run.output, (x / w, y / h), layer=o.layer, head=o.head, direction=o.direction)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None


@method(
    name="rtdetr-gradcam",
    label="Relevance for the detection (Grad-CAM on the encoder)",
    note="Grad-CAM on the hybrid encoder's fused maps (every level, summed on the stride-8 grid) for the detection's "
    "class logit, or with target 'box' for each box edge: the features every decoder layer samples from.",
    paper=f"{GRADCAM}, on {RTDETR}",
    families={"rtdetr"},
    target="detection",
    needs_gradients=True,
    controls={"query", "class_index", "target_kind"},
)
def _rtdetr_gradcam(run: RtDetrRun, o: ExplainOptions) -> Tensor | dict[str, Tensor]:
    from . import rtdetr

    if o.query is None or o.class_index is None:
        raise ExplainError("rtdetr-gradcam needs a detection (query index)")
    maps = rtdetr.encoder_gradcam(run.loaded.model, run.x, o.query, o.class_index, o.target_kind)
    return maps["class"] if o.target_kind == "class" else maps
