"""Tiny ViT, Swin and DETR checkpoints in the exact Hub formats, for the app and browser tests.

The app is pointed at these repos (offline, in a temporary Hugging Face cache: the session fixture `tiny_hub` in
tests/conftest.py writes them once per test run; tests/support/apps.py launches the app on them), so every test goes
through the same loading path as a real download. The weights are random but shaped so that the app has something to
show:

- ViT: timm `vit_tiny_patch16_224` format, 224 px input, 14x14 patches, width 32, depth 2, 1000 ImageNet classes;
- Swin: timm `swin_tiny_patch4_window7_224` format, width 32, depths 2-2-2-2, window 7, 1000 classes;
- DETR: transformers `DetrForObjectDetection` (ResNet-50 backbone, the only part that is full size; transformer
  width 32, 2 + 2 layers, 100 queries, 91 COCO classes). Its heads are aimed so that a few COCO classes come out
  with scores spread from ~0.1 to ~0.95 (some queries above 0.7, more above 0.3) and boxes of varied places and
  sizes. Its preprocessor works at a short side of 320 px to keep the tests fast on two cores.

Run `python -m tests.support.tiny_models DIR` (from the repository root) to write them into DIR (a Hub cache) and
print the repo ids; then e.g. `HF_HUB_OFFLINE=1 HF_HUB_CACHE=DIR python app.py --vit-model test/tiny-vit ...` shows
the app with them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

from tests.support.hubcache import write_repo, write_timm_repo
from tests.support.weights import randomise_classifier, randomise_detr

VIT_REPO = "test/tiny-vit"
SWIN_REPO = "test/tiny-swin"
DETR_REPO = "test/tiny-detr"

VIT_ARGS = dict(img_size=224, patch_size=16, embed_dim=32, depth=2, num_heads=2)
SWIN_ARGS = dict(img_size=224, patch_size=4, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16), window_size=7)
DETR_ARGS = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    num_queries=100,
)
DETR_PREPROCESSOR = {
    "do_resize": True,
    "size": {"shortest_edge": 320, "longest_edge": 533},
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "do_pad": True,
    "image_processor_type": "DetrImageProcessor",
}
#: COCO ids the random DETR favours (person, car, cat, dog, ...): its detections carry these names.
FAVOURED = (1, 3, 17, 18, 44, 62, 64)


def _spread_heads(model: torch.nn.Module, references: list[Path], seed: int) -> None:
    """Random decoders give nearly the same output for every query; re-aim the two heads at what does differ.

    On a few reference photos, the decoder outputs (and the box MLP's hidden layer) are collected; the heads read
    random directions that are orthogonal to the differences between the photos' mean outputs (so that every photo
    gets the same spread) and scaled to unit variance over the queries. The class head then gives a few favoured
    COCO classes scores from ~0.05 to ~0.95, and the box head varied centres and sizes.
    """
    from PIL import Image

    from vtdemo import preprocess

    g = torch.Generator().manual_seed(seed)
    cfg = preprocess.config_from_hf(DETR_PREPROCESSOR, detr=True)
    outputs, hiddens = [], []
    layers = model.bbox_predictor.layers
    with torch.no_grad():
        for path in references:
            pixel_values, pixel_mask = preprocess.detr_inputs([Image.open(path).convert("RGB")], cfg)
            hs = model(pixel_values=pixel_values, pixel_mask=pixel_mask.long()).last_hidden_state[0]  # [Q, C]
            outputs.append(hs)
            hiddens.append(torch.relu(layers[1](torch.relu(layers[0](hs)))))  # [Q, C]

        def directions(xs: list[torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
            """n read-outs [n, C] + biases [n] with the same mean (0) on every photo and unit variance within one."""
            means = torch.stack([x.mean(0) for x in xs])  # [P, C]
            between = torch.linalg.svd(means - means.mean(0), full_matrices=False).Vh  # [P, C]: directions to avoid
            w = torch.randn(n, xs[0].shape[1], generator=g)
            w = w - (w @ between.T) @ between  # orthogonal to the differences between photos
            within = torch.cat([x - x.mean(0) for x in xs])  # [P*Q, C]
            w /= (within @ w.T).std(0)[:, None]
            return w, -(w @ means.mean(0))

        head = model.class_labels_classifier
        head.weight.zero_()
        head.bias.fill_(-6.0)
        head.bias[-1] = 0.0  # "no object"
        w, b = directions(outputs, len(FAVOURED))
        head.weight[list(FAVOURED)] = 1.6 * w
        head.bias[list(FAVOURED)] = 1.6 * b - 2.0
        w, b = directions(hiddens, 4)
        spread = torch.tensor([1.2, 1.2, 0.6, 0.6])[:, None]  # centres vary more than sizes
        layers[2].weight.copy_(spread * w)
        layers[2].bias.copy_(spread[:, 0] * b + torch.tensor([0.0, 0.0, -1.3, -1.3]))


def write_tiny_repos(cache: Path, tmp: Path | None = None) -> dict[str, str]:
    """Write the three tiny repos into the Hub cache folder `cache`; returns {"vit": id, "swin": id, "detr": id}."""
    import timm
    import transformers

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(tmp or scratch)
        torch.manual_seed(0)
        vit = randomise_classifier(timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT_ARGS), 1)
        write_timm_repo(cache, VIT_REPO, vit, VIT_ARGS, work, formats=("model.safetensors",))
        swin_args = dict(SWIN_ARGS, depths=list(SWIN_ARGS["depths"]), num_heads=list(SWIN_ARGS["num_heads"]))
        swin = randomise_classifier(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **SWIN_ARGS), 2)
        write_timm_repo(cache, SWIN_REPO, swin, swin_args, work, formats=("model.safetensors",))

        from vtdemo.labels import coco

        config = transformers.DetrConfig(
            use_timm_backbone=True, use_pretrained_backbone=False, id2label=dict(enumerate(coco())), **DETR_ARGS
        )
        detr = randomise_detr(transformers.DetrForObjectDetection(config), 3)
        examples = Path(__file__).resolve().parents[2] / "assets" / "examples"
        _spread_heads(detr, sorted(p for p in examples.iterdir() if p.suffix in (".png", ".jpg")), 4)
        with tempfile.TemporaryDirectory(dir=work) as d:
            detr.save_pretrained(d)
            files: dict[str, bytes | dict] = {
                p.name: p.read_bytes() for p in Path(d).iterdir() if p.name in ("config.json", "model.safetensors")
            }
        files["preprocessor_config.json"] = DETR_PREPROCESSOR
        write_repo(cache, DETR_REPO, files)
    return {"vit": VIT_REPO, "swin": SWIN_REPO, "detr": DETR_REPO}


PANOPTIC_REPO = "test/tiny-detr-panoptic"
#: The 53 COCO panoptic "stuff" categories, id -> name (cocodataset/panopticapi `panoptic_coco_categories.json`,
#: `isthing: 0`); the 80 "things" are COCO's detection categories (ids 1-90).
COCO_PANOPTIC_STUFF = {
    92: "banner", 93: "blanket", 95: "bridge", 100: "cardboard", 107: "counter", 109: "curtain", 112: "door-stuff",
    118: "floor-wood", 119: "flower", 122: "fruit", 125: "gravel", 128: "house", 130: "light", 133: "mirror-stuff",
    138: "net", 141: "pillow", 144: "platform", 145: "playingfield", 147: "railroad", 148: "river", 149: "road",
    151: "roof", 154: "sand", 155: "sea", 156: "shelf", 159: "snow", 161: "stairs", 166: "tent", 168: "towel",
    171: "wall-brick", 175: "wall-stone", 176: "wall-tile", 177: "wall-wood", 178: "water-other",
    180: "window-blind", 181: "window-other", 184: "tree-merged", 185: "fence-merged", 186: "ceiling-merged",
    187: "sky-other-merged", 188: "cabinet-merged", 189: "table-merged", 190: "floor-other-merged",
    191: "pavement-merged", 192: "mountain-merged", 193: "grass-merged", 194: "dirt-merged", 195: "paper-merged",
    196: "food-other-merged", 197: "building-other-merged", 198: "rock-merged", 199: "wall-other-merged",
    200: "rug-merged",
}  # fmt: skip
#: Labels the tiny panoptic model predicts: car, cat, dog, person (things); road, tree, grass (stuff).
PANOPTIC_LABELS = (1, 3, 17, 18, 149, 184, 193)


def _plant_mask_head(model: torch.nn.Module, references: list[Path], seed: int) -> None:
    """Aim a random DetrForSegmentation so that its masks follow its attention and its classes differ per query.

    The mask head is planted to pass the sum of its attention-map channels (`bbox_attention`, one per head) through
    every conv + GroupNorm + ReLU stage unchanged up to an affine map (centre taps 1, the FPN adapters 0), so each
    query's mask is where it attends over the encoder memory (blocky: stride 32). The attention's query projection
    and the class head read the directions in which the decoder outputs of one photo differ between queries (their
    principal components over a few reference photos, whitened), so queries attend to different places and predict
    different classes among `PANOPTIC_LABELS`."""
    from PIL import Image

    from vtdemo import preprocess

    g = torch.Generator().manual_seed(seed)
    cfg = preprocess.config_from_hf(DETR_PREPROCESSOR, detr=True)
    d_model = model.config.d_model
    with torch.no_grad():
        head = model.mask_head
        for i, block in enumerate([head.conv1, head.conv2] + [stage.refine for stage in head.fpn_stages]):
            block.conv.weight.zero_()
            block.conv.bias.zero_()
            if i == 0:
                block.conv.weight[0, d_model:, 1, 1] = 1.0  # the attention maps (after the d_model features)
            else:
                block.conv.weight[0, 0, 1, 1] = 1.0
            block.norm.weight.fill_(1.0)
            block.norm.bias.zero_()
            block.norm.bias[0] = 2.0  # stays positive through the ReLU
        for stage in head.fpn_stages:
            stage.fpn_adapter.weight.zero_()
            stage.fpn_adapter.bias.zero_()
        head.output_conv.weight.zero_()
        head.output_conv.weight[0, 0, 1, 1] = 1.0
        head.output_conv.bias.fill_(-6.0)  # positive only near where the query attends most
        outputs = []
        for path in references:
            pixel_values, pixel_mask = preprocess.detr_inputs([Image.open(path).convert("RGB")], cfg)
            outputs.append(
                model.detr.model(pixel_values=pixel_values, pixel_mask=pixel_mask.long()).last_hidden_state[0]
            )
        within = torch.cat([h - h.mean(0) for h in outputs])  # [P*Q, C]
        _, sv, vh = torch.linalg.svd(within, full_matrices=False)
        white = vh[:8] / (sv[:8, None] / within.shape[0] ** 0.5)  # [8, C]: unit-variance read-outs
        mean = torch.stack([h.mean(0) for h in outputs]).mean(0)  # [C]
        q = torch.randn(d_model, 8, generator=g) @ white
        model.bbox_attention.q_proj.weight.copy_(q)
        model.bbox_attention.q_proj.bias.copy_(-(q @ mean))
        classes = model.detr.class_labels_classifier
        classes.weight.zero_()
        classes.bias.fill_(-10.0)
        classes.bias[-1] = 0.0  # "no object"
        w = torch.randn(len(PANOPTIC_LABELS), 8, generator=g) @ white * 2.0
        classes.weight[list(PANOPTIC_LABELS)] = w
        classes.bias[list(PANOPTIC_LABELS)] = 1.0 - w @ mean


def write_tiny_panoptic(cache: Path) -> str:
    """A tiny transformers `DetrForSegmentation` repo (the `facebook/detr-resnet-50-panoptic` format: 250 classes with
    COCO panoptic ids and names, 20 queries, width 32, 1 + 1 layers, 8 heads) in the Hub cache `cache`; its masks
    follow its attention (`_plant_mask_head`). Returns the repo id."""
    import transformers

    from vtdemo.labels import coco

    names = dict(enumerate(coco())) | COCO_PANOPTIC_STUFF
    torch.manual_seed(0)  # the backbone keeps transformers' random initialisation
    config = transformers.DetrConfig(
        use_timm_backbone=True,
        use_pretrained_backbone=False,
        id2label={i: names.get(i, "N/A") for i in range(250)},
        **dict(
            DETR_ARGS,
            num_queries=20,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=8,  # the mask head needs d_model + heads divisible by 8
            decoder_attention_heads=8,
        ),
    )
    model = randomise_detr(transformers.DetrForSegmentation(config), 5)
    examples = Path(__file__).resolve().parents[2] / "assets" / "examples"
    _plant_mask_head(model, sorted(p for p in examples.iterdir() if p.suffix in (".png", ".jpg")), 6)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        files: dict[str, bytes | dict] = {
            p.name: p.read_bytes() for p in Path(d).iterdir() if p.name in ("config.json", "model.safetensors")
        }
    files["preprocessor_config.json"] = DETR_PREPROCESSOR
    write_repo(cache, PANOPTIC_REPO, files)
    return PANOPTIC_REPO


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "out/hub")
    print(write_tiny_repos(target), write_tiny_panoptic(target))


RTDETR_REPO = "test/tiny-rtdetr-app"


def write_tiny_rtdetr(cache: Path) -> str:
    """A tiny transformers RT-DETR repo (`RTDetrForObjectDetection`, ResNet-vd basic blocks, width 32, 30 queries,
    2 decoder layers, 2 heads, the 80 COCO names, input 320x320) with the random weights of the parity tests
    (tests/parity/test_rtdetr.py), written with `save_pretrained` into the Hub cache `cache`. Returns the repo id."""
    import transformers

    from tests.parity.test_rtdetr import BASIC, hf_model, processor
    from tests.support.hubcache import write_transformers_repo
    from vtdemo.labels import coco

    names = [n for n in coco() if n != "N/A"]
    model = hf_model("rt_detr", BASIC, "default", seed=31, num_labels=len(names))
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    assert isinstance(model, transformers.RTDetrForObjectDetection)
    # Random weights give one class the same score everywhere: re-scale the last class head so that, on the example
    # photos, the top pairs' scores spread (about 0.4 to 0.9) over several classes (the threshold slider has work).
    examples = Path(__file__).resolve().parents[2] / "assets" / "examples"
    pixels = processor(320)(images=Image.open(examples / "astronaut.png").convert("RGB"), return_tensors="pt")
    head = model.model.decoder.class_embed[-1]
    with torch.no_grad():
        logits = model(pixel_values=pixels["pixel_values"]).logits[0]  # [Q, K]
        scale = 1.5 / (logits - logits.mean(0)).std().clamp(min=1e-6)
        head.weight.mul_(scale)
        head.bias.copy_(scale * (head.bias - logits.mean(0)) - 4.5)
    with tempfile.TemporaryDirectory() as d:
        write_transformers_repo(cache, RTDETR_REPO, model, Path(d), preprocessor=processor(320).to_dict())
    return RTDETR_REPO
