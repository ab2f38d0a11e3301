"""Full-size ViT-B/16, Swin-T and DETR-R50 checkpoints (random weights) in the exact Hub formats, for the fast
path's fidelity guard: the three default architectures at their real sizes, built with timm / transformers and
written as timm's `save_for_hf` and transformers' `save_pretrained` write them (tests/support/hubcache.py).

The classifiers are randomised like the tiny app models (tests/support/tiny_models.py): activations O(1), visibly
non-uniform attention. DETR is randomised as the tiny one but without sharpening q/k (x3 there) and with only the
class head aimed (`aim_class_head`): the full tiny recipe makes a full-size random DETR chaotic (a 1e-3 change of
its input moves boxes by hundreds of pixels), which no trained DETR is. Even so its 100 decoder outputs are nearly
alike (as in any random DETR), so the class head that spreads their scores amplifies small differences: bf16 moves
its class probabilities far (which is why `vtdemo.engine.fast` keeps DETR at f32). Its preprocessor is the tiny
models' (short side 320 px, the size its class head is aimed at; the webcam runs at 384).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from tests.support.hubcache import write_repo, write_timm_repo
from tests.support.tiny_models import DETR_PREPROCESSOR, _spread_heads
from tests.support.weights import randomise_classifier, randomise_detr

VIT_REPO = "test/full-vit-b16"
SWIN_REPO = "test/full-swin-t"
DETR_REPO = "test/full-detr-r50"


def aim_class_head(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`tiny_models._spread_heads` for the class head only (scores spread over (0, 1) on the example photos at
    320 px); the box head keeps its random weights, which already give boxes all over the image."""
    box = model.bbox_predictor.layers[2]
    saved = (box.weight.detach().clone(), box.bias.detach().clone())
    examples = Path(__file__).resolve().parents[2] / "assets" / "examples"
    _spread_heads(model, sorted(p for p in examples.iterdir() if p.suffix in (".png", ".jpg")), seed)
    with torch.no_grad():
        box.weight.copy_(saved[0])
        box.bias.copy_(saved[1])
    return model


def write_full_repos(cache: Path) -> dict[str, str]:
    """Write the three repos into the Hub cache folder `cache`; returns {"vit": id, "swin": id, "detr": id}."""
    import timm
    import transformers

    from vtdemo.labels import coco

    cache = Path(cache)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        torch.manual_seed(0)
        vit = randomise_classifier(timm.create_model("vit_base_patch16_224", pretrained=False), 11)
        write_timm_repo(cache, VIT_REPO, vit, {}, work, formats=("model.safetensors",))
        swin = randomise_classifier(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False), 12)
        write_timm_repo(cache, SWIN_REPO, swin, {}, work, formats=("model.safetensors",))
        config = transformers.DetrConfig(
            use_timm_backbone=True, use_pretrained_backbone=False, id2label=dict(enumerate(coco()))
        )
        detr = randomise_detr(transformers.DetrForObjectDetection(config), 13, sharp_qk=1.0)
        detr = aim_class_head(detr, 14)
        with tempfile.TemporaryDirectory(dir=work) as d:
            detr.save_pretrained(d)
            files: dict[str, bytes | dict] = {
                p.name: p.read_bytes() for p in Path(d).iterdir() if p.name in ("config.json", "model.safetensors")
            }
        files["preprocessor_config.json"] = DETR_PREPROCESSOR
        write_repo(cache, DETR_REPO, files)
    return {"vit": VIT_REPO, "swin": SWIN_REPO, "detr": DETR_REPO}
