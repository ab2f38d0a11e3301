"""Tiny ViT, Swin and DETR checkpoints in the exact Hub formats, for the app and browser tests.

The app is pointed at these repos (offline, in a temporary Hugging Face cache), so every test goes through the same
loading path as a real download. The weights are random but shaped so that the app has something to show:

- ViT: timm `vit_tiny_patch16_224` format, 224 px input, 14x14 patches, width 32, depth 2, 1000 ImageNet classes;
- Swin: timm `swin_tiny_patch4_window7_224` format, width 32, depths 2-2-2-2, window 7, 1000 classes;
- DETR: transformers `DetrForObjectDetection` (ResNet-50 backbone, the only part that is full size; transformer
  width 32, 2 + 2 layers, 100 queries, 91 COCO classes). Its heads are aimed so that a few COCO classes come out
  with scores spread from ~0.1 to ~0.95 (some queries above 0.7, more above 0.3) and boxes of varied places and
  sizes. Its preprocessor works at a short side of 320 px to keep the tests fast on two cores.

Run `python tests/tiny_models.py DIR` to write them into DIR (a Hub cache) and print the repo ids; then e.g.
`HF_HUB_OFFLINE=1 HF_HUB_CACHE=DIR python app.py --vit-model test/tiny-vit ...` shows the app with them.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: make `vtdemo` importable
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from hubcache import write_repo, write_timm_repo  # noqa: E402

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


def randomise_classifier(model: torch.nn.Module, seed: int, gain: float = 1.5, bias: float = 0.3) -> torch.nn.Module:
    """Random weights at a scale that keeps activations O(1) (matrices: `gain` / sqrt(fan_in); other vectors: std
    `bias`); relative-position bias tables get std 1 so that a wrong index would show, and attention is visibly
    non-uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("relative_position_bias_table"):
                p.copy_(noise)
            elif p.ndim > 1:
                p.copy_(noise * gain * p[0].numel() ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(bias * noise)
    return model.eval()


def _randomise_detr(model: torch.nn.Module, seed: int, sharp_qk: float = 3.0) -> torch.nn.Module:
    """Like tests/test_detr.py: random frozen-BN statistics, transformer weights with variance 1/fan_in, and the
    input projection scaled so that the memory varies over positions; attention logits sharpened by `sharp_qk`."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0, generator=g)
            elif name.endswith("running_mean"):
                t.uniform_(-0.2, 0.2, generator=g)
            elif "input_projection" in name and t.dim() == 4:
                t.normal_(0.0, t[0].numel() ** -0.5 * 10, generator=g)  # features here are ~0.1: bring to ~1
            elif "query_position" in name:
                t.normal_(0.0, 1.0, generator=g)
            elif t.dim() == 1 and "backbone" not in name:
                t.add_(torch.randn(t.shape, generator=g) * 0.2)
            elif "backbone" not in name and t.is_floating_point():
                sharp = sharp_qk if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0  # peaked attention
                t.normal_(0.0, sharp * t[0].numel() ** -0.5, generator=g)
    return model.eval()


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
        detr = _randomise_detr(transformers.DetrForObjectDetection(config), 3)
        examples = Path(__file__).resolve().parents[1] / "assets" / "examples"
        _spread_heads(detr, sorted(p for p in examples.iterdir() if p.suffix in (".png", ".jpg")), 4)
        with tempfile.TemporaryDirectory(dir=work) as d:
            detr.save_pretrained(d)
            files: dict[str, bytes | dict] = {
                p.name: p.read_bytes() for p in Path(d).iterdir() if p.name in ("config.json", "model.safetensors")
            }
        files["preprocessor_config.json"] = DETR_PREPROCESSOR
        write_repo(cache, DETR_REPO, files)
    return {"vit": VIT_REPO, "swin": SWIN_REPO, "detr": DETR_REPO}


_written: dict[str, object] = {}


def tiny_repos_once() -> tuple[Path, dict[str, str]]:
    """The tiny repos written once per test process into a temporary Hub cache: (cache folder, repo ids).

    Both the app tests and the browser tests use them; the folder is removed when the process exits.
    """
    if "cache" not in _written:
        import atexit
        import shutil

        cache = Path(tempfile.mkdtemp(prefix="vtdemo-hub-"))
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        _written["repos"] = write_tiny_repos(cache)
        _written["cache"] = cache
    return _written["cache"], _written["repos"]  # type: ignore[return-value]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The app object behind each launched test app's Blocks (its tabs' handlers and services), by id of the Blocks.
APPS: dict[int, object] = {}


def app_of(demo):
    """The `vtdemo.ui.app.VtdemoApp` a test app's Blocks belong to."""
    return APPS[id(demo)]


def launch_app(**overrides):
    """Build and launch the app in this process on a free port, pointing at the tiny repos (set HF_HUB_CACHE to
    `tiny_repos_once()[0]` first). Returns (demo, url); call `demo.close()` at the end."""
    from vtdemo.ui.app import create_app
    from vtdemo.ui.config import AppConfig

    _, repos = tiny_repos_once()
    settings = dict(
        vit_model=repos["vit"],
        swin_model=repos["swin"],
        detr_model=repos["detr"],
        host="127.0.0.1",
        port=free_port(),
        device="cpu",
        precision="exact",  # the app's default is fast; tests that want the fast engine pass precision="fast"
    )
    settings.update(overrides)
    app = create_app(AppConfig(**settings))
    APPS[id(app.demo)] = app
    _, url, _ = app.launch(prevent_thread_lock=True, quiet=True)
    return app.demo, url


@contextlib.contextmanager
def launched_app(env: dict[str, str] | None = None, **overrides):
    """The app on the tiny repos, offline, for the length of a `with` block: yields (demo, url).

    `env`: extra environment variables for the block (e.g. a short GRADIO_HEARTBEAT_INTERVAL); `overrides`: AppConfig
    fields. The loaded-model cache is emptied before and after, and the app is closed.
    """
    from vtdemo import hub

    cache, _ = tiny_repos_once()
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_CACHE", str(cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    for name, value in (env or {}).items():
        mp.setenv(name, value)
    hub.clear_cache()
    demo, url = launch_app(**overrides)
    try:
        yield demo, url
    finally:
        demo.close()
        hub.clear_cache()
        mp.undo()


def wait_until(condition, seconds: float) -> bool:
    """Poll `condition()` every 0.1 s until it is true (True) or `seconds` have passed (False)."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "out/hub")
    print(write_tiny_repos(target))
