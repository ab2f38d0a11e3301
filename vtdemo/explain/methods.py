"""The built-in explanation methods as registry entries: each a small adapter from (run, options) to the pure
tensor function that implements it (`vtdemo.explain.vit`, `swin`, `detr`, `gradcam`, `detr_relevance`).

The API (`vtdemo.explain.api`) resolves the target before calling an adapter: `options.class_index` is the class
to explain (never None here) and, for DETR detections, `options.query` is the decoder query of the detection.
Adapters return un-normalised maps on the model's grid; the API scales them to maximum 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from torch import Tensor

from ..errors import ExplainError
from .registry import ExplainOptions, Method, register
from .runs import ClassifierRun, DetrRun

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


def _grid(run: ClassifierRun, flat: Tensor) -> Tensor:
    return flat.view(*run.patch_grid)  # [P] -> [gh, gw]: the run's own patch grid (it follows the input size)


def _need_point(name: str, options: ExplainOptions) -> tuple[float, float]:
    if options.point is None:
        raise ExplainError(f"{name} needs a point: --point X,Y in image pixels")
    return options.point


# ----------------------------------------------------------------------------------------------- ViT / DeiT


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


def _grad_rollout(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import vit

    assert o.class_index is not None
    cfg = run.loaded.config
    _, attns, grads = vit.class_gradients(run.loaded.model, run.x, o.class_index)
    flat = vit.grad_rollout(cast(Sequence[Tensor], attns), grads, cfg.num_prefix_tokens, readout=cfg.readout)
    return _grid(run, flat)


def _cls_attention(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import vit

    if not run.loaded.config.class_token:
        raise ExplainError(
            f"{run.loaded.id} has no CLS token (it classifies from the mean of its patch tokens): "
            "cls-attention does not apply; use rollout or grad-rollout"
        )

    per_head = vit.cls_attention(run.attentions, run.loaded.config.num_prefix_tokens)  # [nh, P]
    if o.head is not None and not -per_head.shape[0] <= o.head < per_head.shape[0]:
        raise ExplainError(f"head {o.head} is out of range: the model has {per_head.shape[0]} heads")
    return _grid(run, per_head.mean(0) if o.head is None else per_head[o.head])


def _gradcam(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import gradcam

    assert o.class_index is not None
    depth = len(cast(Any, run.loaded.model).blocks)
    if not -depth <= o.layer < depth:
        raise ExplainError(f"layer {o.layer} is out of range: the model has {depth} blocks")
    return gradcam.vit_gradcam(run.loaded.model, run.x, o.class_index, block=o.layer)


# ----------------------------------------------------------------------------------------------- Swin


def _swin_rollout(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import swin

    return swin.rollout(run.attentions, head_fusion=o.head_fusion, discard_ratio=o.discard)


def _swin_grad_rollout(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import swin

    assert o.class_index is not None
    _, attns, grads = swin.class_gradients(run.loaded.model, run.x, o.class_index)
    return swin.grad_rollout(cast(Sequence[swin.SwinAttention], attns), grads)


def _swin_window(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import swin

    point = run.point_in_input(_need_point("swin-window", o))
    try:
        return swin.window_attention_at(run.attentions, point, block=o.block, head=o.head)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None


def _swin_gradcam(run: ClassifierRun, o: ExplainOptions) -> Tensor:
    from . import gradcam

    assert o.class_index is not None
    stages = len(cast(Any, run.loaded.model).layers)
    if not -stages <= o.layer < stages:
        raise ExplainError(f"layer {o.layer} is out of range: the model has {stages} stages")
    return gradcam.swin_gradcam(run.loaded.model, run.x, o.class_index, stage=o.layer)


# ----------------------------------------------------------------------------------------------- LRP


def _lrp(rule: str) -> Any:
    """An adapter for `vtdemo.explain.lrp.vit_lrp` / `lrp_swin.swin_lrp` with one rule ("attnlrp" / "cplrp")."""

    def fn(run: ClassifierRun, o: ExplainOptions) -> Tensor:
        assert o.class_index is not None
        if run.family == "vit":
            from .lrp import vit_lrp

            cfg = run.loaded.config
            if not cfg.class_token or cfg.reg_tokens or cfg.init_values is not None or run.prep is not None:
                raise ExplainError(
                    f"LRP is implemented for ViT / DeiT with a CLS token, without LayerScale or "
                    f"registers, at the trained input size; {run.loaded.id} is not one: use "
                    "grad-rollout"
                )
            explain_fn: Any = vit_lrp
        else:
            from ..models.swin import SwinTransformer
            from .lrp_swin import swin_lrp

            if type(run.loaded.model) is not SwinTransformer:
                raise ExplainError(
                    f"LRP is implemented for Swin (V1) only; {run.loaded.id} is not one: use swin-grad-rollout"
                )
            explain_fn = swin_lrp
        try:
            return explain_fn(run.loaded.model, run.x, o.class_index, rule=rule)  # signed: the API keeps the positive
        except ValueError as exc:
            raise ExplainError(str(exc)) from None

    return fn


# ----------------------------------------------------------------------------------------------- DETR


def _detr_decoder(run: DetrRun, o: ExplainOptions) -> Tensor:
    from . import detr

    if o.query is None:
        raise ExplainError("detr-decoder needs a detection (query index)")
    return detr.decoder_attention(run.output, o.query, layer=o.layer, head=o.head)


def _detr_encoder(run: DetrRun, o: ExplainOptions) -> Tensor:
    from . import detr

    x, y = _need_point("detr-encoder", o)
    w, h = run.image.size
    try:
        return detr.encoder_attention(run.output, (x / w, y / h), layer=o.layer, head=o.head, direction=o.direction)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None


def _detr_relevance(run: DetrRun, o: ExplainOptions) -> Tensor | dict[str, Tensor]:
    from . import detr_relevance

    if o.query is None:
        raise ExplainError("detr-relevance needs a detection (query index)")
    values, mask = run.inputs()
    maps = detr_relevance.relevance_maps(run.loaded.model, values, mask, o.query, o.target_kind)
    return maps["class"] if o.target_kind == "class" else maps


def _entry(
    name: str,
    label: str,
    note: str,
    paper: str,
    families: set[str],
    target: str,
    grads: bool,
    controls: set[str],
    fn: Any,
) -> Method:
    return register(Method(name, label, note, paper, frozenset(families), target, grads, frozenset(controls), fn))


_entry(
    "rollout",
    "Attention rollout",
    "How much each patch flows into the CLS token through all layers (Abnar & Zuidema 2020).",
    ABNAR,
    {"vit"},
    "none",
    False,
    {"head_fusion", "discard", "start_layer", "mask_outliers"},
    _rollout,
)
_entry(
    "grad-rollout",
    "Gradient rollout (one class)",
    "Attention weighted by its gradient for one class (Chefer et al. 2021): click a class to change it.",
    CHEFER,
    {"vit"},
    "class",
    True,
    {"class_index"},
    _grad_rollout,
)
_entry(
    "cls-attention",
    "CLS attention, last layer",
    "Where the CLS token looks in the last layer (one head, or the mean of all heads).",
    "Dosovitskiy et al. 2021, An Image is Worth 16x16 Words (arXiv 2010.11929)",
    {"vit"},
    "none",
    False,
    {"head"},
    _cls_attention,
)
_entry(
    "swin-rollout",
    "Window-aware rollout",
    "Rollout through the shifted windows and patch merging; an approximation, since Swin has no CLS token: it "
    "averages what the final tokens draw on.",
    f"{ABNAR}, carried through {SWIN}",
    {"swin"},
    "none",
    False,
    {"head_fusion", "discard"},
    _swin_rollout,
)
_entry(
    "swin-grad-rollout",
    "Gradient rollout (one class)",
    "Window attention weighted by its gradient for one class (Chefer et al. 2021, carried through the shifted "
    "windows and patch merging; an approximation like the rollout): click a class to change it.",
    f"{CHEFER}, carried through {SWIN}",
    {"swin"},
    "class",
    True,
    {"class_index"},
    _swin_grad_rollout,
)
_entry(
    "swin-window",
    "Window around a clicked point",
    "Click the image: the attention of the window around that point, in one block.",
    f"{SWIN}; microsoft/Swin-Transformer issue #130",
    {"swin"},
    "point",
    False,
    {"point", "block", "head"},
    _swin_window,
)
_entry(
    "detr-decoder",
    "Decoder cross-attention",
    "Where the detection's query gathered its evidence in one decoder layer (raw attention, not relevance).",
    f"{DETR}, Fig. 6",
    {"detr"},
    "detection",
    False,
    {"query", "layer", "head"},
    _detr_decoder,
)
_entry(
    "detr-encoder",
    "Encoder self-attention at a point",
    "Click the image: where that position looks in one encoder layer ('row'), or who looks at it ('column').",
    f"{DETR}, Fig. 3",
    {"detr"},
    "point",
    False,
    {"point", "layer", "head", "direction"},
    _detr_encoder,
)
_entry(
    "gradcam",
    "Grad-CAM (one class)",
    "Last block's tokens weighted by the mean gradient of the class (Grad-CAM, the papers' baseline): coarse, "
    "and blind to attention.",
    GRADCAM,
    {"vit"},
    "class",
    True,
    {"class_index", "layer"},
    _gradcam,
)
_entry(
    "swin-gradcam",
    "Grad-CAM (one class)",
    "Last stage's tokens (7 x 7 for Swin-T) weighted by the mean gradient of the class (Grad-CAM): coarse, and "
    "blind to attention.",
    GRADCAM,
    {"swin"},
    "class",
    True,
    {"class_index", "layer"},
    _swin_gradcam,
)
_entry(
    "detr-relevance",
    "Relevance for the detection",
    "Which image positions the detection's class (or, with target 'box', each box edge) depends on, through "
    "every encoder and decoder layer: gradient-weighted attention (Chefer et al. 2021), not raw attention.",
    CHEFER_GENERIC,
    {"detr"},
    "detection",
    True,
    {"query", "target_kind"},
    _detr_relevance,
)
_entry(
    "attn-lrp",
    "AttnLRP (one class)",
    "Relevance of each patch for the class, propagated back through every layer including softmax and the q/k "
    "products (AttnLRP); positive evidence shown.",
    ATTNLRP,
    {"vit"},
    "class",
    True,
    {"class_index"},
    _lrp("attnlrp"),
)
_entry(
    "cp-lrp",
    "CP-LRP (one class)",
    "Relevance for the class with the attention weights held fixed (conservative propagation: the map plus what "
    "the biases keep adds up to the logit); positive evidence shown.",
    CPLRP,
    {"vit"},
    "class",
    True,
    {"class_index"},
    _lrp("cplrp"),
)
_entry(
    "swin-attn-lrp",
    "AttnLRP (one class)",
    "AttnLRP through Swin's shifted windows, mask, position bias and patch merges, on the stage-1 grid; positive "
    "evidence shown.",
    f"{ATTNLRP}, carried through {SWIN}",
    {"swin"},
    "class",
    True,
    {"class_index"},
    _lrp("attnlrp"),
)
_entry(
    "swin-cp-lrp",
    "CP-LRP (one class)",
    "CP-LRP through Swin's windows and merges (attention held fixed, relevance conserved), on the stage-1 grid; "
    "positive evidence shown.",
    f"{CPLRP}, carried through {SWIN}",
    {"swin"},
    "class",
    True,
    {"class_index"},
    _lrp("cplrp"),
)
