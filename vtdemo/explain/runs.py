"""Cached forward passes for explanations: one image's model output with attention, kept so that every map (and a
change of class, head or layer) is computed without running the model again, except for the methods that need a
backward pass of their own (`Method.needs_gradients`).

`ClassifierRun` (ViT / DeiT, Swin) and `DetrRun` (DETR) are what every registered method function receives;
`RtDetrRun` (RT-DETR, RT-DETRv2) keeps every decoder layer's sampling points and AIFI's attention for its views
(`vtdemo.explain.rtdetr`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from .. import hub, postprocess, postprocess_panoptic, preprocess
from ..device import inference
from ..errors import VtdemoError


@dataclass
class ClassifierRun:
    """One classifier forward pass kept for explanations. logits: [K]; attentions as the model returned them."""

    loaded: hub.LoadedModel
    image: Image.Image
    x: torch.Tensor  # [1, 3, h, w] model input
    logits: torch.Tensor  # [K]
    attentions: list[Any]
    grid: tuple[int, int] | None = None  # ViT: the patch grid of this input (rows, cols)
    tokens: list[torch.Tensor] | None = None  # ViT: per-block output tokens [N, C] (for the artefact inspector)
    prep: preprocess.PreprocessConfig | None = None  # the recipe used, when not the checkpoint's own

    @property
    def family(self) -> str:
        return self.loaded.family

    @property
    def region(self) -> tuple[float, float, float, float]:
        """Original-image pixels (x0, y0, x1, y1) that the model input covers."""
        return preprocess.input_region(self.image.size, self.prep or self.loaded.preprocess)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """ViT: (rows, cols) of this run's patch grid (it follows the input size; a fast run reports none, so it is
        read from the input's shape)."""
        if self.grid:
            return self.grid
        p = self.loaded.config.patch_size
        return int(self.x.shape[-2]) // p, int(self.x.shape[-1]) // p  # [1, 3, h, w] -> (h / p, w / p)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input of this run."""
        return int(self.x.shape[-2]), int(self.x.shape[-1])

    @property
    def trained_size(self) -> tuple[int, int]:
        """(height, width) of the input the checkpoint's own preprocessing gives (the size it was trained at)."""
        return preprocess.trained_input_size(self.loaded.preprocess)

    @property
    def num_heads(self) -> int:
        """Heads of the last attention layer (ViT tensors [nh, N, N]; Swin records `.attn` [nW, nh, N, N])."""
        last = self.attentions[-1]
        return int((last.attn if hasattr(last, "attn") else last).shape[-3])

    def blocks(self) -> list[tuple[str, int]]:
        """(label, index) per Swin block, e.g. ("stage 1 · block 2 · shifted", 1); empty for ViT."""
        if self.family != "swin":
            return []
        return [
            (f"stage {r.stage + 1} · block {r.block + 1}{' · shifted' if r.shift else ''}", i)
            for i, r in enumerate(self.attentions)
        ]

    def default_block(self) -> int | None:
        """The Swin block a window view shows by default (`vtdemo.explain.swin.default_block`); None for ViT."""
        if self.family != "swin":
            return None
        from .swin import default_block

        return default_block(self.attentions)

    def point_in_input(self, point: tuple[float, float]) -> tuple[float, float]:
        """(x, y) in original pixels -> (x, y) as fractions [0, 1) of the model input (clamped to the seen region)."""
        x0, y0, x1, y1 = self.region
        fx = min(max((point[0] - x0) / (x1 - x0), 0.0), 1.0 - 1e-6)
        fy = min(max((point[1] - y0) / (y1 - y0), 0.0), 1.0 - 1e-6)
        return fx, fy


@dataclass
class PanopticMasks:
    """What panoptic post-processing needs of one run, at every threshold: the queries whose best class is not "no
    object" (no other query can become a segment) with their class logits and mask logits, in float32."""

    queries: torch.Tensor  # [S] query indices
    logits: torch.Tensor  # [S, K+1]
    masks: torch.Tensor  # [S, h, w] mask logits on the stride-4 grid of the (unpadded) input

    def segments(self, image_size: tuple[int, int], threshold: float) -> postprocess_panoptic.PanopticResult:
        """`postprocess_panoptic.panoptic_segments` at the original size (width, height), "stuff" labels fused (one
        sky, as DETR's `PostProcessPanoptic`); segment queries are the run's query indices."""
        width, height = image_size
        result = postprocess_panoptic.panoptic_segments(
            self.logits,
            self.masks,
            threshold=threshold,
            fuse=postprocess_panoptic.coco_stuff_ids(self.logits.shape[-1] - 1),
            target_size=(height, width),
        )
        for seg in result.segments:
            seg.queries = [int(self.queries[q]) for q in seg.queries]
        return result


@dataclass
class DetrRun:
    """One DETR forward pass (batch of one) kept for explanations and re-thresholding."""

    loaded: hub.LoadedModel
    image: Image.Image
    output: Any  # vtdemo.models.detr.DetrOutput with attentions
    scored: postprocess.DetrScores
    masks: PanopticMasks | None = None  # a panoptic checkpoint's (DetrForSegmentation) mask logits

    @property
    def family(self) -> str:
        return "detr"

    @property
    def region(self) -> tuple[float, float, float, float]:
        """DETR sees the whole image: (0, 0, width, height)."""
        return (0.0, 0.0, float(self.image.width), float(self.image.height))

    @property
    def num_heads(self) -> int:
        return int(self.output.decoder_cross_attn[-1].shape[1])  # [B, nh, Q, hw]

    @property
    def decoder_layers(self) -> int:
        return len(self.output.decoder_cross_attn)

    @property
    def encoder_layers(self) -> int:
        return len(self.output.encoder_attn)

    @property
    def feature_size(self) -> tuple[int, int]:
        """(h, w) of the backbone grid the maps live on."""
        return tuple(self.output.feature_size)

    def unpadded(self, relevance: torch.Tensor) -> torch.Tensor:
        """Crop a [h, w] map to the feature cells that cover the image (a batch of one has none padded)."""
        mask = self.output.feature_mask[0]  # [h, w], True = real
        rows, cols = int(mask.any(dim=1).sum()), int(mask.any(dim=0).sum())
        return relevance[: max(rows, 1), : max(cols, 1)]

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The model input again (pixel_values [1, 3, H, W], pixel_mask [1, H, W] bool), on the model's device."""
        values, mask = preprocess.detr_inputs([self.image], self.loaded.preprocess)
        return values.to(self.loaded.device), mask.to(self.loaded.device)


@dataclass
class RtDetrRun:
    """One RT-DETR forward pass (batch of one) kept for re-thresholding and explanations.

    x: the model input [1, 3, H, W]; output: `vtdemo.models.rtdetr.RtDetrOutput` with AIFI's attention (its tensors
    on the model's device, batch of one); scored: the top (query, class) pairs in original pixels
    (`postprocess.rtdetr_scores`).
    """

    loaded: hub.LoadedModel
    image: Image.Image
    x: torch.Tensor
    output: Any
    scored: postprocess.DetrScores

    @property
    def family(self) -> str:
        return "rtdetr"

    @property
    def region(self) -> tuple[float, float, float, float]:
        """RT-DETR sees the whole image (squashed to its input size): (0, 0, width, height)."""
        return (0.0, 0.0, float(self.image.width), float(self.image.height))

    @property
    def decoder_layers(self) -> int:
        return len(self.output.sampling_locations)

    @property
    def encoder_layers(self) -> int:
        """AIFI layers (the one dense self-attention, on the top level)."""
        return len(self.output.aifi_attn or [])

    @property
    def num_heads(self) -> int:
        """Decoder heads (each samples its own points): [B, Q, nh, L, P, 2]."""
        return int(self.output.sampling_locations[-1].shape[2])

    @property
    def feature_size(self) -> tuple[int, int]:
        """(h, w) of the finest (stride-8) level, the grid the detection maps live on."""
        return tuple(self.output.shapes[0])

    @property
    def masks(self) -> None:
        """RT-DETR has no mask head (the Detect tab's Masks view asks)."""
        return None

    def unpadded(self, relevance: torch.Tensor) -> torch.Tensor:
        """The photo is squashed to the input, never padded: every cell covers the photo."""
        return relevance


def run_rtdetr(loaded: hub.LoadedModel, image: Image.Image) -> RtDetrRun:
    """Forward once (AIFI attention kept); per (query, class) pair scores and boxes in original-image pixels."""
    x = preprocess.classifier_input(image, loaded.preprocess).to(loaded.device)  # [1, 3, H, W], squashed
    with inference(loaded.device):
        out = loaded.model(x, return_attn=True)
    out.logits, out.boxes = out.logits.float(), out.boxes.float()
    scored = postprocess.rtdetr_scores(out.logits[0].cpu(), out.boxes[0].cpu(), image.size)
    return RtDetrRun(loaded=loaded, image=image, x=x, output=out, scored=scored)


#: Most patch tokens a ViT run may have at another input size (the attention of every layer is kept: 1024 patches
#: of ViT-B are ~0.6 GB of attention; 32x32 patches = 512 px at patch 16).
MAX_PATCHES = 1024


def input_preprocess(
    loaded: hub.LoadedModel, image_size: tuple[int, int], input_size: int | None = None, keep_aspect: bool = False
) -> preprocess.PreprocessConfig:
    """The recipe for a run at another input size (see `preprocess.for_input_size`; image_size = (width, height)):
    the checkpoint's own when nothing is asked. ViT/DeiT only; sizes round to multiples of the patch size."""
    if input_size is None and not keep_aspect:
        return loaded.preprocess
    if loaded.family != "vit":
        raise VtdemoError(f"{loaded.id}: other input sizes are supported for ViT/DeiT models only")
    patch = loaded.config.patch_size
    prep = preprocess.for_input_size(loaded.preprocess, image_size, input_size, keep_aspect, multiple=patch)
    h, w = preprocess.trained_input_size(prep)
    if (h // patch) * (w // patch) > MAX_PATCHES:
        raise VtdemoError(
            f"input {w}x{h} px would be {(h // patch) * (w // patch)} patches; at most {MAX_PATCHES} "
            "(choose a smaller size)"
        )
    return prep


def run_classifier(
    loaded: hub.LoadedModel, image: Image.Image, input_size: int | None = None, keep_aspect: bool = False
) -> ClassifierRun:
    """Forward once with attention (plain softmax path); ViT runs keep their block outputs and patch grid too.

    input_size / keep_aspect: run a ViT at another input size (short side in pixels) and/or at the photo's aspect
    ratio (`input_preprocess`); by default the checkpoint's own preprocessing.
    """
    prep = input_preprocess(loaded, image.size, input_size, keep_aspect)
    x = preprocess.classifier_input(image, prep).to(loaded.device)
    vit = loaded.family == "vit"
    tokens_wanted = vit and getattr(loaded, "precision", "exact") == "exact"  # the fast engine has no block outputs
    with inference(loaded.device):
        out = (
            loaded.model(x, return_attn=True, return_tokens=True)
            if tokens_wanted
            else loaded.model(x, return_attn=True)
        )
    attentions = [a[0] for a in out.attentions] if vit else list(out.attentions)
    tokens = [t[0].float() for t in out.tokens] if vit and out.tokens else None
    return ClassifierRun(
        loaded=loaded,
        image=image,
        x=x,
        logits=out.logits[0].float().cpu(),
        attentions=attentions,
        grid=getattr(out, "grid", None) if vit else None,
        tokens=tokens,
        prep=None if prep is loaded.preprocess else prep,
    )


def run_detr(loaded: hub.LoadedModel, image: Image.Image, keep_dtype: torch.dtype | None = None) -> DetrRun:
    """Forward once with attention; keeps per-query scores and boxes in original-image pixels.

    keep_dtype: store the attention maps in this dtype (the app keeps float16: an 800-px photo's six encoder maps
    are ~150 MB in float32); maps are computed in float32 either way. A panoptic model's mask logits are kept in
    `DetrRun.masks` (float32, object queries only); with keep_dtype the output's full `pred_masks` are dropped.
    """
    pixel_values, pixel_mask = preprocess.detr_inputs([image], loaded.preprocess)
    with inference(loaded.device):
        out = loaded.model(pixel_values.to(loaded.device), pixel_mask.to(loaded.device), return_attn=True)
    out.logits, out.boxes = out.logits.float(), out.boxes.float()
    if keep_dtype is not None:
        for name in ("encoder_attn", "decoder_self_attn", "decoder_cross_attn"):
            setattr(out, name, [a.to(keep_dtype) for a in getattr(out, name)])
    scored = postprocess.detr_scores(out.logits[0].cpu(), out.boxes[0].cpu(), image.size)
    masks = None
    if getattr(out, "pred_masks", None) is not None:
        logits = out.logits[0].cpu()  # [Q, K+1]
        objects = (logits.argmax(-1) != logits.shape[-1] - 1).nonzero().flatten()  # [S]
        masks = PanopticMasks(
            objects, logits[objects], out.pred_masks[0, objects.to(out.pred_masks.device)].float().cpu()
        )
        if keep_dtype is not None:
            out.pred_masks = None
    return DetrRun(loaded=loaded, image=image, output=out, scored=scored, masks=masks)


def with_block_outputs(run: ClassifierRun) -> ClassifierRun:
    """A ViT run with its per-block output tokens: a fast run has none (the compiled graph returns logits and
    attention only), so they are computed once on the exact PyTorch model (`vtdemo.engine.exact_model`) and kept."""
    if run.tokens is not None or run.family != "vit":
        return run
    from ..engine import exact_model

    exact = exact_model(run.loaded)
    with inference(exact.device):
        out = exact.model(run.x, return_attn=True, return_tokens=True)
    run.tokens = [t[0].float() for t in out.tokens]
    run.grid = run.grid or getattr(out, "grid", None) or run.patch_grid
    return run
