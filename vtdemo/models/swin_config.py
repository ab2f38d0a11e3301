"""Swin Transformer's configuration, in plain data: the frozen config, the timm presets, the readers of timm and
transformers `config.json` files (shared with Swin V2: `timm_config`, `hf_fields`, `one_size`), and the stage
geometry (which window each stage uses, which square input sizes a model runs at with its own weights).

`vtdemo.models.swin` (the modules) re-exports every name here; see its docstring for the paper and the references.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class SwinConfig:
    """Architecture hyper-parameters (square images and windows). Stage i has width `embed_dim * 2**i`."""

    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_classes: int = 1000
    ln_eps: float = 1e-5

    @property
    def num_features(self) -> int:
        """Width of the last stage (what the head sees)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


def _preset(img: int, window: int, dim: int, depths: tuple[int, ...], heads: tuple[int, ...]) -> SwinConfig:
    return SwinConfig(img_size=img, window_size=window, embed_dim=dim, depths=depths, num_heads=heads)


# Keyed by timm architecture name (timm's `model_args`, plus the input size from its pretrained_cfg).
PRESETS: dict[str, SwinConfig] = {
    "swin_tiny_patch4_window7_224": _preset(224, 7, 96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_small_patch4_window7_224": _preset(224, 7, 96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_base_patch4_window7_224": _preset(224, 7, 128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "swin_base_patch4_window12_384": _preset(384, 12, 128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "swin_large_patch4_window7_224": _preset(224, 7, 192, (2, 2, 18, 2), (6, 12, 24, 48)),
    "swin_large_patch4_window12_384": _preset(384, 12, 192, (2, 2, 18, 2), (6, 12, 24, 48)),
}

# timm keyword arguments (a timm config.json may carry them as `model_args`), our fields of the same names.
_TIMM_ARGS = {
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "mlp_ratio",
    "qkv_bias",
    "num_classes",
}
# timm keyword arguments that only matter for training (Swin V1 and V2 alike).
TIMM_TRAINING_ARGS = {"drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "weight_init"}
# timm keyword arguments accepted only at the value our architecture implements (timm's `save_for_hf` writes them).
_TIMM_DEFAULT_ONLY = {"global_pool": "avg", "ape": False, "patch_norm": True, "strict_img_size": True}


def one_size(value: Any, name: str, family: str = "Swin") -> int:
    """An int, or a list of equal ints / (h, h) pairs, as one int; anything else is an architecture we do not build."""
    if isinstance(value, (list, tuple)):
        flat = [v for item in value for v in (item if isinstance(item, (list, tuple)) else [item])]
        if not flat or len(set(flat)) != 1:
            raise UnsupportedModelError(f"{family} with {name} {list(value)} (not one square size) is not supported")
        value = flat[0]
    return int(value)


def timm_config(
    presets: dict[str, Any],
    architecture: str,
    num_classes: int,
    model_args: dict[str, Any] | None,
    *,
    family: str,
    args: set[str],
    default_only: dict[str, Any],
    tuples: tuple[str, ...],
) -> Any:
    """The preset of a timm architecture name (a `.tag` suffix is ignored) with timm `model_args` applied: `args` are
    our fields of the same names (sizes read by `one_size`, `tuples` as int tuples), training-only arguments are
    ignored, `default_only` ones accepted at their one implemented value; anything else is refused by name."""
    base = architecture.split(".")[0]
    if base not in presets:
        raise UnsupportedModelError(
            f"timm architecture '{architecture}' is not a supported {family}; supported: {', '.join(presets)}"
        )
    changes: dict[str, Any] = {"num_classes": int(num_classes)}
    for key, value in (model_args or {}).items():
        if key in TIMM_TRAINING_ARGS or (key in default_only and value == default_only[key]):
            continue
        if key not in args:
            raise UnsupportedModelError(f"timm {family} argument '{key}' is not supported by vtdemo")
        if key in ("img_size", "patch_size", "window_size"):
            value = one_size(value, key, family)
        elif key in tuples:
            value = tuple(int(v) for v in value)
        changes[key] = value
    return replace(presets[base], **changes)


def hf_fields(config: dict[str, Any], defaults: Any, family: str) -> dict[str, Any]:
    """The fields a transformers Swin / Swin V2 `config.json` dict gives alike (transformers' defaults where a key
    is absent: image 224, patch 4, window 7, 2 labels); refuses absolute position embeddings and other activations."""
    if config.get("use_absolute_embeddings", False):
        raise UnsupportedModelError(f"{family} with absolute position embeddings is not supported")
    if config.get("hidden_act", "gelu") != "gelu":
        raise UnsupportedModelError(f"{family} with activation '{config['hidden_act']}' is not supported (only gelu)")
    id2label = config.get("id2label")
    return dict(
        img_size=one_size(config.get("image_size", 224), "image_size", family),
        patch_size=one_size(config.get("patch_size", 4), "patch_size", family),
        in_chans=int(config.get("num_channels", 3)),
        embed_dim=int(config.get("embed_dim", defaults.embed_dim)),
        depths=tuple(int(d) for d in config.get("depths", defaults.depths)),
        num_heads=tuple(int(h) for h in config.get("num_heads", defaults.num_heads)),
        window_size=one_size(config.get("window_size", 7), "window_size", family),
        mlp_ratio=float(config.get("mlp_ratio", defaults.mlp_ratio)),
        qkv_bias=bool(config.get("qkv_bias", True)),
        num_classes=len(id2label) if id2label else int(config.get("num_labels", 2)),
        ln_eps=float(config.get("layer_norm_eps", defaults.ln_eps)),
    )


def config_from_timm(architecture: str, num_classes: int, model_args: dict[str, Any] | None = None) -> SwinConfig:
    """Config for a timm architecture name (a `.tag` suffix is ignored), with timm `model_args` overrides applied."""
    return timm_config(
        PRESETS,
        architecture,
        num_classes,
        model_args,
        family="Swin",
        args=_TIMM_ARGS,
        default_only=_TIMM_DEFAULT_ONLY,
        tuples=("depths", "num_heads"),
    )


def config_from_hf(config: dict[str, Any]) -> SwinConfig:
    """Config from a transformers Swin `config.json` dict (model_type "swin")."""
    return SwinConfig(**hf_fields(config, SwinConfig(), "Swin"))


class StageLayout(Protocol):
    """What the patch embedding and the stage geometry read from a config (Swin V1's and V2's both have it)."""

    @property
    def in_chans(self) -> int: ...
    @property
    def embed_dim(self) -> int: ...
    @property
    def patch_size(self) -> int: ...
    @property
    def window_size(self) -> int: ...
    @property
    def depths(self) -> tuple[int, ...]: ...
    @property
    def ln_eps(self) -> float: ...


def stage_windows(cfg: StageLayout, img_size: int) -> list[tuple[int, int]]:
    """(grid, window) of every stage at input size `img_size`, windows as `stage_window` resolves them.

    Raises `UnsupportedModelError` if a grid cannot be cut into whole windows or halved by the patch merges.
    """
    if img_size <= 0 or img_size % cfg.patch_size:
        raise UnsupportedModelError(
            f"input size {img_size} is not a positive multiple of the patch size {cfg.patch_size}"
        )
    grid, out = img_size // cfg.patch_size, []
    for s in range(len(cfg.depths)):
        window = stage_window(grid, cfg.window_size)[0]
        if grid % window or (s < len(cfg.depths) - 1 and grid % 2):
            raise UnsupportedModelError(
                f"input size {img_size}: stage {s} grid {grid} is not a multiple of its "
                f"window {window} (or cannot be halved)"
            )
        out.append((grid, window))
        grid //= 2
    return out


def allowed_sizes(cfg: SwinConfig, largest: int = 1536) -> list[int]:
    """Square input sizes up to `largest` at which the model runs with its own weights (`config_at_size`)."""
    return [size for size in range(cfg.patch_size, largest + 1, cfg.patch_size) if _runs_at(cfg, size)]


def _runs_at(cfg: SwinConfig, img_size: int) -> bool:
    try:
        return [w for _, w in stage_windows(cfg, img_size)] == [w for _, w in stage_windows(cfg, cfg.img_size)]
    except UnsupportedModelError:
        return False


def config_at_size(cfg: SwinConfig, img_size: int) -> SwinConfig:
    """The same architecture at input size `img_size` (square): every stage keeps the window its bias table was
    trained for. Raises `UnsupportedModelError` naming the allowed sizes otherwise."""
    if not _runs_at(cfg, img_size):
        sizes = ", ".join(str(s) for s in allowed_sizes(cfg))
        raise UnsupportedModelError(
            f"this Swin (patch {cfg.patch_size}, window {cfg.window_size}, trained at {cfg.img_size}) cannot run at "
            f"{img_size} px without padding or resizing its position-bias tables; sizes it runs at: {sizes}"
        )
    return replace(cfg, img_size=int(img_size))


def stage_window(grid: int, window: int) -> tuple[int, bool]:
    """The window a stage really uses, and whether its odd blocks may shift (timm's and transformers' rule).

    A grid no larger than the window is attended as one window, without shift: Swin-T at 224 has grids
    56/28/14/7 with window 7, so its last stage is one 7x7 window and never shifts. When the grid is smaller than
    the window, timm also sizes that stage's bias table for the smaller window, and so do we (transformers keeps the
    configured size and cannot run such a model; no Hub checkpoint has one).
    """
    if grid <= window:
        return grid, False
    return window, True
