"""The method registry: what every explanation method *is*, in one place.

An entry (`Method`) names the method, says what it shows in one line, which paper it comes from, which model
families it applies to, what it explains (a class, a detection, a point, or nothing in particular), whether it
needs a backward pass, which options it reads, and the function that computes it. The CLI's `--method` choices and
help, the Python API's dispatch (`vtdemo.explain.api`) and the app's dropdowns read this table, so adding a method
is one function with a `@method(...)` decorator above it (as timm's `@register_model`). An entry also decides when it
applies to a model or run (`applies`: None, or the reason it does not), and every caller asks it (`why_not`).

Every method function has the same signature, `fn(run, options) -> Tensor | dict[str, Tensor]`: `run` is a cached
forward pass (`vtdemo.explain.runs.ClassifierRun` or `DetrRun`), `options` one `ExplainOptions`; it returns a
non-negative map on the model's own grid ([rows, cols], any scale: the API scales it to maximum 1), or several
named maps (e.g. one per box edge) in a dict. The built-in entries live in `vtdemo.explain.methods`; this module
imports none of them (the package's `__init__` imports `methods`, as timm's `models/__init__.py` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ExplainError
from ..families import FAMILIES as _FAMILY_TABLE

FAMILIES = tuple(_FAMILY_TABLE)  # ("vit", "swin", "detr"): the family registry's names
TARGETS = ("class", "detection", "point", "none")
TARGET_KINDS = ("class", "box")


@dataclass(frozen=True)
class ExplainOptions:
    """Every option any method reads; each method reads only those in its `controls`.

    class_index: the class to explain (None = the top class); head_fusion: mean | max | min (rollouts);
    discard: fraction of the lowest attention dropped per layer (rollouts); start_layer: first layer of the ViT
    rollout; head: one attention head instead of the fusion (None = mean of heads); point: (x, y) in original-image
    pixels; block: Swin block index (None = the method's default); layer: DETR layer (-1 = last); query: the DETR
    decoder query of the detection; direction: 'row' | 'column' (DETR encoder attention); target_kind: 'class' |
    'box' (DETR relevance: the class logit, or one map per box edge); mask_outliers: ViT rollout with the high-norm
    artefact tokens masked out (`vtdemo.explain.artefacts.masked_rollout`).
    """

    class_index: int | None = None
    head_fusion: str = "mean"
    discard: float = 0.0
    start_layer: int = 0
    head: int | None = None
    point: tuple[float, float] | None = None
    block: int | None = None
    layer: int = -1
    query: int | None = None
    direction: str = "row"
    target_kind: str = "class"
    mask_outliers: bool = False


MethodFn = Callable[[Any, ExplainOptions], Any]
#: (loaded model, run or None) -> None when the method applies, else the reason in one line (naming what to use).
AppliesFn = Callable[[Any, Any], "str | None"]


@dataclass(frozen=True)
class Method:
    """One explanation method. families: subset of FAMILIES; target: one of TARGETS; controls: names of the
    `ExplainOptions` fields the method reads (the app shows only those controls); applies: when it applies beyond
    its family (see `why_not`), None = always."""

    name: str
    label: str
    note: str
    paper: str
    families: frozenset[str]
    target: str
    needs_gradients: bool
    controls: frozenset[str]
    fn: MethodFn
    applies: AppliesFn | None = None

    def __post_init__(self) -> None:
        unknown = self.families - set(FAMILIES)
        if unknown or not self.families:
            raise ValueError(
                f"method {self.name}: families must be a non-empty subset of {FAMILIES}, not {sorted(self.families)}"
            )
        if self.target not in TARGETS:
            raise ValueError(f"method {self.name}: target must be one of {TARGETS}, not {self.target!r}")
        fields = set(ExplainOptions.__dataclass_fields__)
        if not self.controls <= fields:
            raise ValueError(f"method {self.name}: unknown controls {sorted(self.controls - fields)}")

    def why_not(self, loaded: Any, run: Any = None) -> str | None:
        """None when this method applies to `loaded` (and to `run`, a cached forward pass of it, when given: e.g. at
        another input size); else one line saying why not and what to use instead. The one place each rule lives."""
        if loaded.family not in self.families:
            return f"method '{self.name}' does not apply to {loaded.family} models"
        if self.target == "class" and not loaded.labels:
            return (
                f"{loaded.id} has no classifier head (a feature model): there is no class for '{self.name}' to "
                "explain; use rollout or cls-attention"
            )
        return self.applies(loaded, run) if self.applies is not None else None


#: All registered methods by name, in registration order (the first one of a family is its default).
METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (a name may be registered once); returns it."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def method(
    *,
    name: str,
    label: str,
    note: str,
    paper: str,
    families: set[str],
    target: str,
    needs_gradients: bool = False,
    controls: set[str] = frozenset(),  # type: ignore[assignment]
    applies: AppliesFn | None = None,
) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register the function below as a method (keywords as `Method`'s fields); returns the function."""

    def add(fn: MethodFn) -> MethodFn:
        register(
            Method(
                name=name,
                label=label,
                note=note,
                paper=paper,
                families=frozenset(families),
                target=target,
                needs_gradients=needs_gradients,
                controls=frozenset(controls),
                fn=fn,
                applies=applies,
            )
        )
        return fn

    return add


def methods_for(family: str) -> list[Method]:
    """The methods that apply to a model family ('vit', 'swin', 'detr'), in registration order."""
    return [m for m in METHODS.values() if family in m.families]


def names_for(family: str) -> list[str]:
    return [m.name for m in methods_for(family)]


def default_for(family: str) -> Method:
    """The family's default method (the first registered for it)."""
    found = methods_for(family)
    if not found:
        raise ExplainError(f"no explanation method applies to model family {family!r}")
    return found[0]


def for_view(family: str, target: str, needs_gradients: bool = False) -> Method:
    """The method behind one of a detector tab's fixed views: the family's first method with this target ("point":
    attention at a clicked point; "detection": a detection's map) that does (`needs_gradients`: relevance) or does not
    need gradients (raw attention). ExplainError in one line when the family has none."""
    for m in methods_for(family):
        if m.target == target and m.needs_gradients == needs_gradients:
            return m
    kind = "gradient" if needs_gradients else "attention"
    raise ExplainError(f"no {kind} method for a {target} applies to model family {family!r}")


def get(name: str | None, family: str) -> Method:
    """The method `name` for a model of `family` (None = the family's default).

    Raises ExplainError with one line listing the methods allowed for that family when `name` is unknown or does
    not apply to it.
    """
    if name is None:
        return default_for(family)
    method = METHODS.get(name)
    if method is None or family not in method.families:
        why = "is unknown" if method is None else f"does not apply to {family} models"
        raise ExplainError(f"method '{name}' {why}; choose from {', '.join(names_for(family))}")
    return method


def help_text() -> str:
    """One line for the CLI's --method help: every method with its families, defaults marked."""
    defaults = {default_for(f).name for f in FAMILIES if methods_for(f)}
    parts = [
        f"{m.name} ({'/'.join(sorted(m.families))}{', default' if m.name in defaults else ''})"
        for m in METHODS.values()
    ]
    return "; ".join(parts)
