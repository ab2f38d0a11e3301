"""vtdemo: see what vision transformers see.

ViT/DeiT and Swin classifiers and the DETR detector, written in plain PyTorch, loaded from the Hugging Face Hub.

    import vtdemo
    result = vtdemo.classify("cat.jpg", top_k=5)          # ClassifyResult(image, model, predictions)
    found = vtdemo.detect("street.jpg", threshold=0.7)    # DetectResult(image, model, size, detections)
    model = vtdemo.load_model("facebook/detr-resnet-50")  # LoadedModel, cached

Nothing heavy is imported until one of these is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["classify", "detect", "load_model", "VtdemoError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("classify", "detect"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "load_model":
        from .loader import load

        return load
    if name == "VtdemoError":
        from .errors import VtdemoError

        return VtdemoError
    raise AttributeError(f"module 'vtdemo' has no attribute {name!r}")
