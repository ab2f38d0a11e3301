"""RT-DETR and RT-DETRv2 hyper-parameters (`RtDetrConfig`), presets, and the reader of transformers' `config.json`
(`rt_detr`, `rt_detr_v2`; `d_fine` and anything else is refused in one line).

Field names follow transformers' `RTDetrConfig` / `RTDetrV2Config` where they mean the same; `vtdemo.checkpoint`
bounds-checks them by name before anything is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnsupportedModelError
from .resnet_vd import ResNetVdConfig

SUPPORTED = "RT-DETR and RT-DETRv2 (transformers rt_detr / rt_detr_v2, ResNet-vd R18/R34/R50/R101 backbones)"
ACTIVATIONS = ("relu", "silu", "gelu")


@dataclass(frozen=True)
class RtDetrConfig:
    """version 1 (RT-DETR) or 2 (RT-DETRv2: `offset_scale` and `method` come from the config; v1 has 0.5 and
    bilinear). Classes use sigmoid (focal) scores: `num_classes` outputs, no "no object" column."""

    version: int = 1
    backbone: ResNetVdConfig = field(default_factory=ResNetVdConfig)
    encoder_in_channels: tuple[int, ...] = (512, 1024, 2048)
    encoder_hidden_dim: int = 256
    encoder_layers: int = 1
    encoder_ffn_dim: int = 1024
    encoder_heads: int = 8
    encode_proj_layers: tuple[int, ...] = (2,)  # the levels AIFI runs on (the top one, stride 32)
    pos_temperature: float = 10000.0
    encoder_act: str = "gelu"
    act: str = "silu"  # CCFF's convolutions
    normalize_before: bool = False
    hidden_expansion: float = 1.0
    d_model: int = 256
    num_queries: int = 300
    decoder_in_channels: tuple[int, ...] = (256, 256, 256)
    decoder_ffn_dim: int = 1024
    num_levels: int = 3
    num_points: int = 4
    decoder_layers: int = 6
    decoder_heads: int = 8
    decoder_act: str = "relu"
    learn_initial_query: bool = False
    num_classes: int = 80
    layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 1e-5
    offset_scale: float = 0.5
    method: str = "default"  # "default" (bilinear) | "discrete" (RT-DETRv2's nearest-cell option)


def _r(depths: tuple[int, ...], basic: bool) -> dict[str, Any]:
    hidden = (64, 128, 256, 512) if basic else (256, 512, 1024, 2048)
    backbone = ResNetVdConfig(depths=depths, hidden_sizes=hidden, layer_type="basic" if basic else "bottleneck")
    return dict(backbone=backbone, encoder_in_channels=hidden[1:])


#: The published sizes (lyuwenyu/RT-DETR's configs, the PekingU/* Hub repos); R18 and R34 halve CCFF's width.
PRESETS: dict[str, RtDetrConfig] = {
    "rtdetr_r18vd": RtDetrConfig(**_r((2, 2, 2, 2), True), hidden_expansion=0.5, decoder_layers=3),
    "rtdetr_r34vd": RtDetrConfig(**_r((3, 4, 6, 3), True), hidden_expansion=0.5, decoder_layers=4),
    "rtdetr_r50vd": RtDetrConfig(**_r((3, 4, 6, 3), False)),
    "rtdetr_r101vd": RtDetrConfig(
        **_r((3, 4, 23, 3), False), encoder_hidden_dim=384, encoder_ffn_dim=2048, decoder_in_channels=(384,) * 3
    ),
}


def _ints(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
        raise UnsupportedModelError(f"RT-DETR config.json gives {name}={value!r}; a list of integers is expected")
    return tuple(value)


def _backbone(config: Mapping[str, Any]) -> ResNetVdConfig:
    sub = config.get("backbone_config") or {}
    if not isinstance(sub, Mapping) or sub.get("model_type", "rt_detr_resnet") != "rt_detr_resnet":
        kind = sub.get("model_type") if isinstance(sub, Mapping) else type(sub).__name__
        raise UnsupportedModelError(f"RT-DETR with a '{kind}' backbone is not supported; vtdemo supports {SUPPORTED}")
    if config.get("backbone") or config.get("use_timm_backbone"):
        raise UnsupportedModelError(
            f"RT-DETR with a timm / named backbone is not supported; vtdemo supports {SUPPORTED}"
        )
    layer_type = sub.get("layer_type", "bottleneck")
    if layer_type not in ("basic", "bottleneck") or sub.get("hidden_act", "relu") != "relu":
        raise UnsupportedModelError(
            f"RT-DETR backbone with layer_type={layer_type!r} / hidden_act={sub.get('hidden_act')!r} is not "
            "supported (basic or bottleneck, relu)"
        )
    if int(sub.get("num_channels", 3)) != 3:
        raise UnsupportedModelError("RT-DETR backbone with num_channels != 3 is not supported (RGB input)")
    depths = _ints(sub.get("depths", [3, 4, 6, 3]), "depths")
    hidden = _ints(sub.get("hidden_sizes", [256, 512, 1024, 2048]), "hidden_sizes")
    stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(depths) + 1)]
    if sub.get("out_indices") is not None:
        out = _ints(sub["out_indices"], "out_indices")
    elif sub.get("out_features") is not None:
        names = list(sub["out_features"])
        if not set(names) <= set(stage_names):
            raise UnsupportedModelError(f"RT-DETR backbone out_features {names} are not among {stage_names}")
        out = tuple(stage_names.index(n) for n in names)
    else:
        out = (2, 3, 4)  # what RTDetrConfig sets for its default backbone
    if len(depths) != len(hidden) or not out or list(out) != sorted(set(out)) or out[-1] > len(depths) or out[0] < 0:
        raise UnsupportedModelError(
            f"RT-DETR backbone with depths {list(depths)}, hidden_sizes {list(hidden)} and outputs {list(out)} "
            "does not fit together"
        )
    return ResNetVdConfig(
        depths=depths,
        hidden_sizes=hidden,
        embedding_size=int(sub.get("embedding_size", 64)),
        layer_type=layer_type,
        out_indices=out,
        downsample_in_first_stage=bool(sub.get("downsample_in_first_stage", False)),
        downsample_in_bottleneck=bool(sub.get("downsample_in_bottleneck", False)),
    )


def config_from_hf(config: Mapping[str, Any]) -> RtDetrConfig:
    """RtDetrConfig from a transformers `rt_detr` / `rt_detr_v2` config.json (a dict); one line otherwise."""
    model_type = config.get("model_type")
    if model_type == "d_fine":
        raise UnsupportedModelError(f"D-FINE (d_fine) is not supported yet; vtdemo supports {SUPPORTED}")
    if model_type not in ("rt_detr", "rt_detr_v2"):
        raise UnsupportedModelError(f"model type '{model_type}' is not RT-DETR; vtdemo supports {SUPPORTED}")
    version = 2 if model_type == "rt_detr_v2" else 1
    for key in ("encoder_activation_function", "activation_function", "decoder_activation_function"):
        if config.get(key) is not None and config[key] not in ACTIVATIONS:
            raise UnsupportedModelError(
                f"RT-DETR with {key}={config[key]!r} is not supported ({', '.join(ACTIVATIONS)})"
            )
    if not config.get("use_focal_loss", True):
        raise UnsupportedModelError("RT-DETR with use_focal_loss=false (softmax scores) is not supported")
    if not config.get("with_box_refine", True):
        raise UnsupportedModelError("RT-DETR with with_box_refine=false is not supported")
    backbone = _backbone(config)
    in_channels = _ints(config.get("encoder_in_channels", [512, 1024, 2048]), "encoder_in_channels")
    decoder_in = _ints(config.get("decoder_in_channels", [256, 256, 256]), "decoder_in_channels")
    num_levels = int(config.get("num_feature_levels", 3))
    if len(in_channels) != len(backbone.out_indices) or len(decoder_in) != len(in_channels):
        raise UnsupportedModelError(
            f"RT-DETR with {len(backbone.out_indices)} backbone outputs, encoder_in_channels {list(in_channels)} "
            f"and decoder_in_channels {list(decoder_in)} is not supported (one of each per level)"
        )
    if num_levels != len(decoder_in) or (version == 2 and int(config.get("decoder_n_levels", 3)) != num_levels):
        raise UnsupportedModelError(
            f"RT-DETR with num_feature_levels={num_levels} (decoder_n_levels={config.get('decoder_n_levels')}) "
            f"for {len(decoder_in)} encoder levels is not supported (extra levels are not implemented)"
        )
    points = config.get("decoder_n_points", 4)
    if not isinstance(points, int):
        raise UnsupportedModelError(f"RT-DETR with decoder_n_points={points!r} is not supported (one count per level)")
    method = str(config.get("decoder_method", "default")) if version == 2 else "default"
    if method not in ("default", "discrete"):
        raise UnsupportedModelError(f"RT-DETRv2 with decoder_method={method!r} is not supported (default, discrete)")
    id2label = config.get("id2label") or {}
    num_classes = max(int(k) for k in id2label) + 1 if id2label else int(config.get("num_labels", 2))  # as transformers
    proj = _ints(config.get("encode_proj_layers", [2]), "encode_proj_layers")
    if any(not 0 <= i < len(in_channels) for i in proj):
        raise UnsupportedModelError(f"RT-DETR with encode_proj_layers {list(proj)} outside its levels is not supported")
    return RtDetrConfig(
        version=version,
        backbone=backbone,
        encoder_in_channels=in_channels,
        encoder_hidden_dim=int(config.get("encoder_hidden_dim", 256)),
        encoder_layers=int(config.get("encoder_layers", 1)),
        encoder_ffn_dim=int(config.get("encoder_ffn_dim", 1024)),
        encoder_heads=int(config.get("encoder_attention_heads", 8)),
        encode_proj_layers=proj,
        pos_temperature=float(config.get("positional_encoding_temperature", 10000)),
        encoder_act=str(config.get("encoder_activation_function", "gelu")),
        act=str(config.get("activation_function", "silu")),
        normalize_before=bool(config.get("normalize_before", False)),
        hidden_expansion=float(config.get("hidden_expansion", 1.0)),
        d_model=int(config.get("d_model", 256)),
        num_queries=int(config.get("num_queries", 300)),
        decoder_in_channels=decoder_in,
        decoder_ffn_dim=int(config.get("decoder_ffn_dim", 1024)),
        num_levels=num_levels,
        num_points=int(points),
        decoder_layers=int(config.get("decoder_layers", 6)),
        decoder_heads=int(config.get("decoder_attention_heads", 8)),
        decoder_act=str(config.get("decoder_activation_function", "relu")),
        learn_initial_query=bool(config.get("learn_initial_query", False)),
        num_classes=num_classes,
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-5)),
        batch_norm_eps=float(config.get("batch_norm_eps", 1e-5)),
        offset_scale=float(config.get("decoder_offset_scale", 0.5)) if version == 2 else 0.5,
        method=method,
    )
