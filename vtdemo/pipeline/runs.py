"""Run records: one forward pass of one model on one photo, kept, that answers everything asked of it afterwards.

`run_classifier(loaded, image, input_size, keep_aspect)` -> `ClassifierRun` (`run_classifier_at`: at a size chosen
for another model, or else at the trained size, saying why); `run_detr(loaded, image)` -> `DetrRun`;
`run_rtdetr(loaded, image)` -> `RtDetrRun` (`run_detector` picks by family).
A record knows its predictions or detections, the methods that apply to it, its maps (`explain(method, options)`),
its sanity checks and its comparison grid; it calls the model again only where a method needs it (a backward pass,
block outputs, stage colours, a randomised copy). The data of a run and the pure functions on it live in
`vtdemo.explain.runs` and `vtdemo.explain`; these records are what the app, the CLI and `evaluate` hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from .. import input_size as sizes
from .. import postprocess
from ..errors import ExplainError, VtdemoError
from ..evaluate.randomisation import RandomisationCurve, map_randomisation
from ..explain import api, artefacts, compare, dino, rtdetr, stages
from ..explain import runs as base
from ..explain.registry import ExplainOptions, Method
from ..hub import LoadedModel
from ..records import Detection, Prediction, detections, predictions

Progress = Callable[[int, int, str], None]


class ClassifierRun(base.ClassifierRun):
    """A classifier's run (see `vtdemo.explain.runs.ClassifierRun` for its fields: loaded, image, x, logits, ...),
    with the input size it ran at (`choice`) and, when the size asked for was refused, why (`refused`)."""

    choice: sizes.SizeChoice = sizes.SizeChoice()  # the size it ran at ("trained" or a side in px; the aspect flag)
    refused: str | None = None  # why the size asked for was not used (`run_classifier_at`)

    @property
    def size_note(self) -> str | None:
        """One line when the run is not at the trained input size, or the size asked for was refused; else None
        (`vtdemo.input_size.size_note`)."""
        return self.refused or sizes.size_note(self.model_as_loaded, self)

    @property
    def model_as_loaded(self) -> LoadedModel:
        """The model as loaded (trained size) behind this run's model, which may be a Swin rebuilt for another size."""
        return sizes.base_of(self.loaded)

    def predictions(self, top_k: int = 5) -> list[Prediction]:
        return predictions(self.loaded, self.logits, top_k)

    def methods(self) -> list[Method]:
        """The registered methods that apply to this run (each entry decides: `Method.why_not`)."""
        return api.methods_for_run(self)

    def explain(self, method: str | None = None, options: ExplainOptions | None = None) -> api.MapResult:
        """One map (max 1) on the model's grid, with the target it explains (`vtdemo.explain.api.explain_run`)."""
        return api.explain_run(self, method, options)

    def need_classes(self, what: str) -> None:
        """Raise one line when this run's model has no head: `what` measures a class probability."""
        if not self.loaded.labels:
            raise ExplainError(
                f"{self.loaded.id} has no classifier head (a feature model): {what} measures how a class's "
                "probability changes, so it needs a model with classes (e.g. a *-imagenet1k-1-layer DINOv2)"
            )

    def deletion_check(self, relevance: torch.Tensor, class_index: int) -> dict[str, Any]:
        """Deletion and insertion curves of a map, each against a random order (`explain.api.deletion_check`)."""
        self.need_classes("the deletion check")
        return api.deletion_check(self, relevance, class_index)

    def randomisation(self, method: Method, options: ExplainOptions) -> RandomisationCurve:
        """Cascading parameter randomisation of one map (Adebayo et al. 2018; `evaluate.randomisation`)."""
        self.need_classes("the randomisation check")
        return map_randomisation(self, lambda run: api.explain_run(run, method.name, options).map, method.label)

    def compare_maps(
        self, options: ExplainOptions, methods: list[str] | None = None, progress: Progress | None = None
    ) -> compare.Comparison:
        """Every applicable method's map and their agreement (`explain.compare.compare_maps`)."""
        self.need_classes("the comparison (its maps explain one class and are scored on it)")
        return compare.compare_maps(self, options, methods, progress)

    def score_maps(
        self, result: compare.Comparison, options: ExplainOptions, steps: int, progress: Progress | None = None
    ) -> compare.Comparison:
        """Deletion and insertion areas of a comparison's maps (`explain.compare.score_maps`)."""
        self.need_classes("scoring the maps")
        return compare.score_maps(self, result, options, steps, progress=progress)

    def with_block_outputs(self) -> ClassifierRun:
        """This run with its per-block output tokens (one exact pass for a fast run; kept)."""
        base.with_block_outputs(self)
        return self

    def artefacts(self, layer: int = -1) -> dict[str, Any]:
        """The high-norm artefact tokens of a ViT run (`explain.artefacts.inspect`)."""
        return artefacts.inspect(self, layer)

    def heads(self, layer: int = -1, keep: float = dino.MASS_KEPT) -> tuple[torch.Tensor, torch.Tensor]:
        """A ViT run's CLS attention per head at one layer (default the last) on the patch grid, and DINO's mask of
        each (the largest values holding `keep` of the head's mass): ([nh, gh, gw], bool [nh, gh, gw])."""
        if self.family != "vit" or not self.loaded.config.class_token:
            raise ExplainError(f"{self.loaded.id} has no CLS token: its heads have no CLS attention to show")
        maps = dino.head_maps(self.attentions[layer], self.loaded.config.num_prefix_tokens, self.patch_grid)
        return maps, dino.mass_mask(maps, keep)

    def patch_features(self) -> torch.Tensor:
        """A ViT run's patch tokens after the final norm [P, C] (DINOv2's features; one exact pass for a fast run)."""
        if self.family != "vit":
            raise ExplainError(f"patch features are read from ViT models; {self.loaded.id} is {self.family}")
        from ..engine import exact_model

        self.with_block_outputs()
        assert self.tokens is not None
        exact = exact_model(self.loaded)
        norm: Any = exact.model.norm  # the final LayerNorm of `vtdemo.models.vit.VisionTransformer`
        with torch.inference_mode():
            tokens = norm(self.tokens[-1].to(exact.device))  # [N, C]
        return tokens[self.loaded.config.num_prefix_tokens :].float().cpu()  # [P, C]

    def stage_pca(self) -> list[stages.StagePCA]:
        """A Swin run's stages as colours (`explain.stages.run_stage_pca`)."""
        return stages.run_stage_pca(self)


class DetectorFace:
    """What DETR and RT-DETR runs answer alike: the detections shown at given settings (`select`, then
    `detections`), their methods and maps. Mixed into the run records below, which hold `loaded` and `scored`."""

    loaded: Any
    scored: Any

    def select(
        self,
        threshold: float = postprocess.DEFAULT_THRESHOLD,
        classes: set[int] | None = None,
        max_detections: int | None = None,
        nms_iou: float | None = None,
    ) -> torch.Tensor:
        """Indices of the entries shown at these settings, by score (`postprocess.select`): DETR's queries,
        RT-DETR's (query, class) pairs."""
        return postprocess.select(self.scored, threshold, classes, max_detections, nms_iou)

    def detections(self, keep: torch.Tensor) -> list[Detection]:
        return detections(self.loaded, self.scored, keep)

    def methods(self) -> list[Method]:
        """The registered methods of the run's family."""
        return api.methods_for_run(self)  # type: ignore[arg-type]

    def explain(self, method: str | None = None, options: ExplainOptions | None = None) -> api.MapResult:
        """One map (max 1) with the target it explains (`vtdemo.explain.api.explain_run`): `options.query` is the
        decoder query (RT-DETR: `options.class_index` its class, None = its best)."""
        return api.explain_run(self, method, options)  # type: ignore[arg-type]


class DetrRun(DetectorFace, base.DetrRun):
    """A DETR run (see `vtdemo.explain.runs.DetrRun`: loaded, image, output, scored, masks)."""


class RtDetrRun(DetectorFace, base.RtDetrRun):
    """An RT-DETR / RT-DETRv2 run (see `vtdemo.explain.runs.RtDetrRun`: loaded, image, x, output, scored), with the
    same face as `DetrRun` for detections: `select` then `detections`. Its entries are (query, class) pairs."""

    def sampling_points(self, query: int, layer: int = -1) -> rtdetr.SamplingPoints:
        """Where decoder query `query` looked in one decoder layer (-1 = the last): its points, weights and reference
        box (`vtdemo.explain.rtdetr.sampling_points`); one line when the query or layer is out of range."""
        try:
            return rtdetr.sampling_points(self.output, int(query), layer)
        except ValueError as exc:
            raise ExplainError(str(exc)) from None


def _as(cls: type, run: Any) -> Any:
    return cls(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})


def run_classifier(
    loaded: LoadedModel, image: Image.Image, input_size: int | None = None, keep_aspect: bool = False
) -> ClassifierRun:
    """Forward once with attention at an input size (short side in px; None = the trained size): a ViT at any
    multiple of its patch (optionally at the photo's aspect ratio; `explain.runs.input_preprocess` checks it), a
    Swin at the sizes its windows allow (`input_size.parse` checks it: one line naming them otherwise)."""
    if loaded.family == "swin" and (input_size is not None or keep_aspect):
        choice = sizes.parse(loaded, input_size or sizes.TRAINED, keep_aspect)
    else:
        choice = sizes.SizeChoice(input_size, keep_aspect)
    return _run_at(loaded, image, choice)


def _run_at(loaded: LoadedModel, image: Image.Image, choice: sizes.SizeChoice) -> ClassifierRun:
    """One forward pass at a checked size choice (`input_size.run_at`), recorded on the run."""
    run: ClassifierRun = _as(ClassifierRun, sizes.run_at(loaded, image, choice))
    run.choice = choice
    return run


def run_classifier_at(loaded: LoadedModel, image: Image.Image, choice: sizes.SizeChoice | None) -> ClassifierRun:
    """`run_classifier` at a size chosen before the model was (the Classify column keeps its size across models):
    at `choice` if this model runs at it, else at its trained size with the reason in the run's `size_note`."""
    choice = choice if isinstance(choice, sizes.SizeChoice) else sizes.SizeChoice()
    refused = None
    try:
        side = sizes.TRAINED if choice.size is None else str(choice.size)
        choice = sizes.parse(loaded, side, choice.keep_aspect)
    except VtdemoError as exc:
        choice, refused = sizes.SizeChoice(), f"{exc}; running at the trained size"
    run = _run_at(loaded, image, choice)  # checked above: not parsed a second time
    run.refused = refused
    return run


def feature_colours(runs: list[ClassifierRun]) -> list[dino.FeatureColours]:
    """DINOv2's patch-feature colours for one or more runs, with one PCA fitted on all of them (matching parts of two
    photos get the same colours; `explain.dino.feature_colours`)."""
    return dino.feature_colours([run.patch_features() for run in runs], [run.patch_grid for run in runs])


def run_detr(loaded: LoadedModel, image: Image.Image, keep_dtype: torch.dtype | None = None) -> DetrRun:
    """Forward once with attention; per-query scores and boxes in original pixels (`explain.runs.run_detr`)."""
    run: DetrRun = _as(DetrRun, base.run_detr(loaded, image, keep_dtype))
    return run


def run_rtdetr(loaded: LoadedModel, image: Image.Image) -> RtDetrRun:
    """Forward once (AIFI attention and every decoder layer's sampling points kept); the top (query, class) pairs
    in original pixels (`explain.runs.run_rtdetr`)."""
    run: RtDetrRun = _as(RtDetrRun, base.run_rtdetr(loaded, image))
    return run


def run_detector(loaded: LoadedModel, image: Image.Image, keep_dtype: torch.dtype | None = None) -> DetrRun | RtDetrRun:
    """`run_detr` or `run_rtdetr`, by the model's family: the detection face (`select`, `detections`) is the same.
    keep_dtype: what a DETR run keeps its attention maps in (e.g. float16 to halve a cached run's memory)."""
    return run_rtdetr(loaded, image) if loaded.family == "rtdetr" else run_detr(loaded, image, keep_dtype)
