"""Full-size ViT-B/16, Swin-T and DETR-R50 checkpoints (random weights) in the exact Hub formats, for the fast
path's fidelity guard: the three default architectures at their real sizes, built with timm / transformers and
written as timm's `save_for_hf` and transformers' `save_pretrained` write them (tests/hubcache.py). The weights are
randomised like the tiny app models (tests/tiny_models.py): activations O(1), visibly non-uniform attention, DETR
heads aimed so that some queries score above 0.7 on the example photos. DETR's q/k projections are not sharpened
here (the tiny models' x3): with six full-width encoder layers that makes the random model chaotic (a 1e-3 change
of the input moves its boxes by hundreds of pixels), which no trained DETR is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from hubcache import write_repo, write_timm_repo
from tiny_models import _randomise_detr, _spread_heads, randomise_classifier

VIT_REPO = "test/full-vit-b16"
SWIN_REPO = "test/full-swin-t"
DETR_REPO = "test/full-detr-r50"
DETR_PREPROCESSOR = {"do_resize": True, "size": {"shortest_edge": 800, "longest_edge": 1333}, "do_normalize": True,
                     "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 2,
                     "do_pad": True, "image_processor_type": "DetrImageProcessor"}


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
        config = transformers.DetrConfig(use_timm_backbone=True, use_pretrained_backbone=False,
                                         id2label=dict(enumerate(coco())))
        detr = _randomise_detr(transformers.DetrForObjectDetection(config), 13, sharp_qk=1.0)
        examples = Path(__file__).resolve().parents[1] / "assets" / "examples"
        _spread_heads(detr, sorted(p for p in examples.iterdir() if p.suffix in (".png", ".jpg")), 14)
        with tempfile.TemporaryDirectory(dir=work) as d:
            detr.save_pretrained(d)
            files: dict[str, bytes | dict] = {p.name: p.read_bytes() for p in Path(d).iterdir()
                                              if p.name in ("config.json", "model.safetensors")}
        files["preprocessor_config.json"] = DETR_PREPROCESSOR
        write_repo(cache, DETR_REPO, files)
    return {"vit": VIT_REPO, "swin": SWIN_REPO, "detr": DETR_REPO}
