"""ResNet-vd ("PResNet"), RT-DETR's backbone, in plain PyTorch.

The "vd" variant of "Bag of Tricks for Image Classification with Convolutional Neural Networks" (He et al. 2019,
arXiv 1812.01187, ResNet-D): a deep stem of three 3x3 convolutions instead of one 7x7, and on a downsampling
shortcut a 2x2 average pool before a stride-1 1x1 convolution (so the shortcut sees every pixel). Basic blocks
(two 3x3) for R18 / R34, bottlenecks (1x1, 3x3 with the stride, 1x1; width / 4 inside) for R50 / R101.

Reference implementations: lyuwenyu/RT-DETR (`rtdetr_pytorch/src/nn/backbone/presnet.py`) and huggingface/transformers
(`models/rt_detr/modeling_rt_detr_resnet.py`, whose `rt_detr_resnet` config and weights we read through
`vtdemo.convert.rtdetr`). We follow transformers' rules for when a block gets a projection shortcut (in a basic stage,
its first block always does: pool + 1x1 when the width changes, a strided 1x1 otherwise; a bottleneck block when the
width or the stride changes, with the pool when the stride is 2). Batch norms are frozen (inference only, eps 1e-5,
as transformers' `RTDetrFrozenBatchNorm2d`); where we differ: each is folded into its convolution at run time and
the backbone runs channels-last, as our DETR's (`vtdemo.models.detr.conv_bn`): the same numbers, less time on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .detr import conv_bn


@dataclass(frozen=True)
class ResNetVdConfig:
    """transformers' `RTDetrResNetConfig` fields. out_indices: which outputs feed the detector (0 = the stem,
    1..4 = the stages; RT-DETR uses 2, 3, 4, at strides 8, 16, 32)."""

    depths: tuple[int, ...] = (3, 4, 6, 3)
    hidden_sizes: tuple[int, ...] = (256, 512, 1024, 2048)
    embedding_size: int = 64
    layer_type: str = "bottleneck"  # "basic" (R18, R34) | "bottleneck" (R50, R101)
    out_indices: tuple[int, ...] = (2, 3, 4)
    downsample_in_first_stage: bool = False
    downsample_in_bottleneck: bool = False  # stride on the first 1x1 of a bottleneck instead of its 3x3


class ConvBN(nn.Module):
    """Conv (no bias, padding k // 2) -> frozen batch norm -> optional activation; run as one convolution with the
    batch norm folded into its weights (`conv_bn`). Parameter names stay `conv.weight`, `bn.*` (the checkpoints')."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, act: str | None = "relu", eps: float = 1e-5
    ) -> None:
        super().__init__()
        from torchvision.ops import FrozenBatchNorm2d

        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = FrozenBatchNorm2d(c_out, eps=eps)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return activation(conv_bn(x, self.conv, self.bn, relu=False), self.act)


def activation(x: Tensor, name: str | None) -> Tensor:
    """The activations RT-DETR's configs name: relu, silu, gelu (exact, erf), or none."""
    if name is None:
        return x
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    raise ValueError(f"activation {name!r} is not supported (relu, silu, gelu)")


class Block(nn.Module):
    """A basic block (two 3x3) or a bottleneck (1x1, 3x3, 1x1), with its shortcut: identity, a strided 1x1, or
    (ResNet-D) a 2x2 average pool then a 1x1. y = relu(body(x) + shortcut(x))."""

    def __init__(self, cfg: ResNetVdConfig, c_in: int, c_out: int, stride: int, first: bool) -> None:
        super().__init__()
        if cfg.layer_type == "basic":
            self.body = nn.ModuleList([ConvBN(c_in, c_out, 3, stride), ConvBN(c_out, c_out, 3, act=None)])
            project = first  # transformers: the first block of a basic stage always projects
            self.pool = first and c_in != c_out
        else:
            mid = c_out // 4
            s1, s3 = (stride, 1) if cfg.downsample_in_bottleneck else (1, stride)
            self.body = nn.ModuleList(
                [ConvBN(c_in, mid, 1, s1), ConvBN(mid, mid, 3, s3), ConvBN(mid, c_out, 1, act=None)]
            )
            project = c_in != c_out or stride != 1
            self.pool = stride == 2
        self.shortcut = ConvBN(c_in, c_out, 1, 1 if self.pool else stride, act=None) if project else None

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for conv in self.body:
            y = conv(y)
        short = F.avg_pool2d(x, 2, 2, ceil_mode=True) if self.pool else x
        if self.shortcut is not None:
            short = self.shortcut(short)
        return F.relu_(y.add_(short))  # y: the last convolution's own output; in place saves an allocation on CPU


class ResNetVd(nn.Module):
    """stem (3x3/2, 3x3, 3x3, max pool 3x3/2) -> 4 stages. `forward` returns the outputs named by out_indices."""

    def __init__(self, cfg: ResNetVdConfig) -> None:
        super().__init__()
        if cfg.layer_type not in ("basic", "bottleneck"):
            raise ValueError(f"ResNet layer type {cfg.layer_type!r} is not basic or bottleneck")
        self.cfg = cfg
        e = cfg.embedding_size
        self.stem = nn.ModuleList([ConvBN(3, e // 2, 3, 2), ConvBN(e // 2, e // 2, 3), ConvBN(e // 2, e, 3)])
        self.stages = nn.ModuleList()
        c_in = e
        for i, (depth, c_out) in enumerate(zip(cfg.depths, cfg.hidden_sizes, strict=True)):
            stride = 2 if (i > 0 or cfg.downsample_in_first_stage) else 1
            blocks = [Block(cfg, c_in, c_out, stride, True)]
            blocks += [Block(cfg, c_out, c_out, 1, False) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*blocks))  # iterated block by block, never called
            c_in = c_out

    @property
    def channels(self) -> list[int]:
        """Channels of each returned feature map."""
        widths = [self.cfg.embedding_size, *self.cfg.hidden_sizes]
        return [widths[i] for i in self.cfg.out_indices]

    def forward(self, x: Tensor) -> list[Tensor]:
        """x [B, 3, H, W] -> the maps of `out_indices`, e.g. [B, C2, H/8, W/8], [B, C3, H/16, W/16],
        [B, C4, H/32, W/32] (stage i has stride 2^(i+1); padding rounds odd sizes up), stored channels-last."""
        x = x.clone(memory_format=torch.channels_last)  # [B, 3, H, W], stored [B, H, W, 3]; a copy, as in DETR
        for conv in self.stem:
            x = conv(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)  # [B, e, H/4, W/4]
        outputs = [x] if 0 in self.cfg.out_indices else []
        for i, stage in enumerate(self.stages, start=1):
            for block in stage.children():
                x = block(x)
            if i in self.cfg.out_indices:
                outputs.append(x)
        return outputs
