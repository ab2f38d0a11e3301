"""RT-DETR and RT-DETRv2: parity with transformers' RTDetrForObjectDetection / RTDetrV2ForObjectDetection.

Each case is a tiny transformers model with random weights (both backbone block kinds: basic as in R18/R34,
bottleneck as in R50/R101; v2 with bilinear and with discrete sampling), written with `save_pretrained` into a
Hub-format cache next to the `preprocessor_config.json` its `RTDetrImageProcessor` writes, and loaded offline through
our `hf_hub_download` path (`pipeline.load_model`). Every expected number comes from transformers: its processor's
pixels, its model's encoder maps, query selection, per-layer logits, sampling locations and weights, AIFI attention,
and its `post_process_object_detection` on its own outputs. One full-size random-weight config per format is marked
slow.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch

from tests.support.hubcache import write_transformers_repo
from vtdemo import pipeline, postprocess

transformers = pytest.importorskip("transformers")

SCORE_TOL = 5e-3  # the bar for post-processed scores
BOX_TOL = 2.0  # pixels

BASIC = dict(depths=[1, 2, 1, 1], hidden_sizes=[16, 32, 64, 128], embedding_size=16, layer_type="basic")
BOTTLENECK = dict(depths=[1, 2, 1, 1], hidden_sizes=[32, 64, 128, 256], embedding_size=16, layer_type="bottleneck")
TINY = dict(
    encoder_hidden_dim=32,
    d_model=32,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    decoder_in_channels=[32, 32, 32],
    num_queries=30,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    num_labels=7,
    hidden_expansion=0.5,
)
#: (name, model_type, backbone, decoder_method)
CASES = [
    ("v1-basic", "rt_detr", BASIC, "default"),
    ("v1-bottleneck", "rt_detr", BOTTLENECK, "default"),
    ("v2-basic", "rt_detr_v2", BASIC, "default"),
    ("v2-bottleneck", "rt_detr_v2", BOTTLENECK, "default"),
    ("v2-basic-discrete", "rt_detr_v2", BASIC, "discrete"),
    ("v2-bottleneck-discrete", "rt_detr_v2", BOTTLENECK, "discrete"),
]


def randomise_rtdetr(model: torch.nn.Module, seed: int, gain: float = 1.0) -> torch.nn.Module:
    """Random weights that keep activations O(1) and make every tensor matter: matrices N(0, gain^2 / fan_in)
    (query and key projections 3x that, so that attention rows are peaked, not uniform),
    vectors N(0, 0.1^2) (norm scales 1 + that), batch-norm statistics mean U(-0.2, 0.2) and variance U(0.5, 2)
    (transformers' init would leave every BN the identity and every query alike)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0, generator=g)
            elif name.endswith("running_mean"):
                t.uniform_(-0.2, 0.2, generator=g)
            elif name.endswith("n_points_scale"):
                continue  # a derived buffer (1 / points)
            elif t.dim() > 1:
                sharp = 3.0 if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0  # peaked attention rows
                t.copy_(torch.randn(t.shape, generator=g) * gain * sharp * t[0].numel() ** -0.5)
            elif "norm" in name.rsplit(".", 2)[-2] and name.endswith("weight"):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return model.eval()


def hf_model(model_type: str, backbone: dict, method: str, seed: int, **overrides) -> torch.nn.Module:
    """A transformers RT-DETR (v1 or v2) with random weights, eager attention (so that AIFI's weights are returned)."""
    bb = dict(model_type="rt_detr_resnet", out_indices=[2, 3, 4], **backbone)
    kw = dict(TINY, backbone_config=bb, encoder_in_channels=backbone["hidden_sizes"][1:], **overrides)
    if model_type == "rt_detr_v2":
        config = transformers.RTDetrV2Config(decoder_method=method, **kw)
        model = transformers.RTDetrV2ForObjectDetection(config)
    else:
        config = transformers.RTDetrConfig(**kw)
        model = transformers.RTDetrForObjectDetection(config)
    model.config._attn_implementation = "eager"
    return randomise_rtdetr(model, seed)


def processor(size: int = 320):
    return transformers.RTDetrImageProcessor(size={"height": size, "width": size})


def write_repo(cache, tmp, repo: str, model, size: int = 320) -> None:
    write_transformers_repo(cache, repo, model, tmp, preprocessor=processor(size).to_dict())


def capture_sampling(model) -> tuple[list[torch.Tensor], Callable[[], None]]:
    """Record each decoder layer's sampling locations in transformers' deformable attention (v1: the input of its
    `MultiScaleDeformableAttention` module; v2: an argument of its module-level sampling function). Returns the list
    it fills and the function that undoes the hooks."""
    seen: list[torch.Tensor] = []
    if model.config.model_type == "rt_detr_v2":
        from transformers.models.rt_detr_v2 import modeling_rt_detr_v2 as module

        original = module.multi_scale_deformable_attention_v2

        def spy(value, shapes, locations, *args, **kwargs):
            seen.append(locations.detach().clone())
            return original(value, shapes, locations, *args, **kwargs)

        module.multi_scale_deformable_attention_v2 = spy
        return seen, lambda: setattr(module, "multi_scale_deformable_attention_v2", original)
    handles = [
        layer.encoder_attn.attn.register_forward_pre_hook(lambda _m, args: seen.append(args[4].detach().clone()))
        for layer in model.model.decoder.layers
    ]
    return seen, lambda: [h.remove() for h in handles] and None


def selection_pairs(ours_index: torch.Tensor, ref_scores: torch.Tensor, Q: int) -> tuple[list[int], list[int], int]:
    """Pair our queries with transformers' by the encoder position each was selected from.

    ours_index [Q]: our selected positions; ref_scores [N]: transformers' selection score per position (max class
    logit). Positions with equal scores may leave top-k in another order (the decoder treats its queries as a set).
    A position selected by one side only must sit at the top-Q boundary (its score within 1e-4 of the Q-th): two
    near-equal scores there are an ill-conditioned input for any two implementations. Returns (our queries, their
    queries) of the common positions, and how many positions differ.
    """
    ref_index = ref_scores.topk(Q).indices
    cutoff = float(ref_scores[ref_index[-1]])
    where = {int(p): q for q, p in enumerate(ref_index.tolist())}
    ours_q, ref_q, swapped = [], [], 0
    for q, p in enumerate(ours_index.tolist()):
        if p in where:
            ours_q.append(q)
            ref_q.append(where[p])
        else:
            swapped += 1
            assert abs(float(ref_scores[p]) - cutoff) < 1e-4, "a position far from the boundary selected by us only"
    return ours_q, ref_q, swapped


def match_detections(ref: dict, ours: list) -> tuple[float, float]:
    """Pair transformers' detections with ours (same label, closest score then box; one to one) and return the
    largest score and box differences. Fails when the counts differ or a detection has no partner."""
    assert len(ours) == len(ref["scores"]), (len(ours), len(ref["scores"]))
    free = list(range(len(ours)))
    worst_score = worst_box = 0.0
    for score, label, box in zip(ref["scores"].tolist(), ref["labels"].tolist(), ref["boxes"].tolist(), strict=True):
        candidates = [j for j in free if ours[j].label_id == label]
        assert candidates, f"no detection of class {label} left to pair with score {score:.4f}"
        j = min(
            candidates,
            key=lambda j: (
                abs(ours[j].score - score) + max(abs(a - b) for a, b in zip(ours[j].box, box, strict=True)) / 1000
            ),
        )
        free.remove(j)
        worst_score = max(worst_score, abs(ours[j].score - score))
        worst_box = max(worst_box, max(abs(a - b) for a, b in zip(ours[j].box, box, strict=True)))
    return worst_score, worst_box


def check_parity(ref_model, repo: str, image, size: int) -> dict[str, float]:
    """Run transformers and ours on `image`; assert every check; return the measured differences."""
    proc = processor(size)
    pixel_values = proc(images=image, return_tensors="pt")["pixel_values"]
    loaded = pipeline.load_model(repo)
    assert loaded.family == "rtdetr"
    run = pipeline.run_rtdetr(loaded, image)
    out = run.output
    diffs: dict[str, float] = {"pixels": float((run.x - pixel_values).abs().max())}
    assert diffs["pixels"] < 1e-5

    seen, restore = capture_sampling(ref_model)
    try:
        with torch.no_grad():
            ref = ref_model(pixel_values=pixel_values, output_attentions=True)
    finally:
        restore()

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))

    diffs["encoder_maps"] = max(rel(a, b) for a, b in zip(out.encoder_maps, ref.encoder_last_hidden_state, strict=True))
    assert diffs["encoder_maps"] < 1e-4
    Q = out.logits.shape[1]
    ours_q, ref_q, swapped = selection_pairs(out.query_index[0], ref.enc_outputs_class[0].max(-1).values, Q)
    diffs["boundary_swaps"] = swapped
    # With a swap, every query's self-attention sees one other key: per-query values move a little (checked loosely).
    tol = 1e-4 if swapped == 0 else 5e-2
    diffs["init_boxes"] = float((out.init_boxes[0, ours_q] - ref.enc_topk_bboxes[0, ref_q]).abs().max())
    assert diffs["init_boxes"] < 1e-4
    for i, logits in enumerate(out.layer_logits):
        diffs[f"logits_layer{i}"] = float((logits[0, ours_q] - ref.intermediate_logits[0, i, ref_q]).abs().max())
        assert diffs[f"logits_layer{i}"] < 10 * tol
    diffs["boxes"] = float((out.boxes[0, ours_q] - ref.pred_boxes[0, ref_q]).abs().max())
    assert diffs["boxes"] < tol
    nh = out.sampling_weights[0].shape[2]
    for i, (locations, weights) in enumerate(zip(out.sampling_locations, out.sampling_weights, strict=True)):
        ref_weights = ref.cross_attentions[i][0, ref_q].reshape(weights[0, ours_q].shape)  # v2: [B, Q, nh, L*P]
        diffs[f"weights_layer{i}"] = float((weights[0, ours_q] - ref_weights).abs().max())
        ref_locations = seen[i][0, ref_q].reshape(locations[0, ours_q].shape)
        diffs[f"locations_layer{i}"] = float((locations[0, ours_q] - ref_locations).abs().max())
        assert diffs[f"weights_layer{i}"] < tol and diffs[f"locations_layer{i}"] < tol
        assert weights.shape[:3] == (1, Q, nh)
    (aifi,) = out.aifi_attn
    diffs["aifi_attn"] = float((aifi - ref.encoder_attentions[0]).abs().max())
    assert diffs["aifi_attn"] < 1e-4

    height, width = image.height, image.width
    logits, boxes = ref.logits, ref.pred_boxes
    if swapped:  # the detections of the common queries only: the others' logits to -inf on both sides (score 0)
        logits = logits.clone()
        logits[0, [q for q in range(Q) if q not in set(ref_q)]] = float("-inf")
        ours_logits = out.logits[0].clone()
        ours_logits[[q for q in range(Q) if q not in set(ours_q)]] = float("-inf")
        run.scored = postprocess.rtdetr_scores(ours_logits, out.boxes[0], image.size)
    reference = SimpleNamespace(logits=logits, pred_boxes=boxes)
    everything = proc.post_process_object_detection(reference, threshold=0.0, target_sizes=[(height, width)])[0]
    top = everything["scores"].sort(descending=True).values
    # A threshold that keeps about a third, in the widest gap between neighbouring scores near the third: random
    # full-size weights crowd scores within 1e-7 of each other, and a threshold between two of those is decided by
    # float rounding (the kept sets may then differ by one detection on either side of it with both sides correct).
    third = len(top) // 3
    near = range(max(0, third - 10), min(len(top) - 1, third + 10))
    i = max(near, key=lambda i: float(top[i] - top[i + 1]))
    middle = float(top[i] + top[i + 1]) / 2
    for key, threshold in (("all", 0.0), ("third", middle)):
        expected = proc.post_process_object_detection(reference, threshold=threshold, target_sizes=[(height, width)])
        ours = run.detections(run.select(threshold))
        score, box = match_detections(expected[0], ours)
        assert score <= SCORE_TOL and box <= BOX_TOL, (threshold, score, box)
        diffs[f"scores_{key}"], diffs[f"boxes_px_{key}"], diffs[f"count_{key}"] = score, box, len(ours)
    return diffs


@pytest.mark.parametrize("name, model_type, backbone, method", CASES, ids=[c[0] for c in CASES])
def test_tiny_checkpoints_match_transformers(name, model_type, backbone, method, hf_cache, tmp_path, photos):
    ref_model = hf_model(model_type, backbone, method, seed=len(name))
    repo = f"test/tiny-{name}"
    write_repo(hf_cache, tmp_path, repo, ref_model)
    for photo in ("astronaut", "rocket"):
        diffs = check_parity(ref_model, repo, photos[photo], 320)
        assert diffs["count_all"] == TINY["num_queries"]  # threshold 0: the top Q (query, class) pairs
        assert abs(diffs["count_third"] - TINY["num_queries"] // 3) <= 10  # about a third (see `check_parity`)
        print(name, photo, {k: float(f"{v:.3g}") for k, v in diffs.items()})


def test_loads_at_the_processors_own_640x640(hf_cache, tmp_path, photos):
    """The processor's defaults: squash to 640x640, x / 255, no normalisation."""
    ref_model = hf_model("rt_detr", BASIC, "default", seed=11)
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-640", ref_model, size=640)
    loaded = pipeline.load_model("test/tiny-rtdetr-640")
    assert loaded.preprocess.resize == (640, 640) and loaded.preprocess.mean == (0.0, 0.0, 0.0)
    check_parity(ref_model, "test/tiny-rtdetr-640", photos["chelsea"], 640)


def test_a_learned_initial_query_table_loads(hf_cache, tmp_path):
    """`learn_initial_query` (queries from a learned table): its weight loads into `query_embed`. Not compared:
    transformers 5.25 cannot run it (`'Embedding' object has no attribute 'tile'`); we tile the table's weight, as
    lyuwenyu/RT-DETR does."""
    ref_model = hf_model("rt_detr", BASIC, "default", seed=12, learn_initial_query=True)
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-query", ref_model)
    loaded = pipeline.load_model("test/tiny-rtdetr-query")
    table = ref_model.model.weight_embedding.weight
    assert torch.equal(loaded.model.query_embed, table)
    out = loaded.model(torch.rand(1, 3, 320, 320))
    assert out.logits.shape == (1, TINY["num_queries"], TINY["num_labels"]) and bool(out.logits.isfinite().all())


def test_detect_gives_the_same_detections_as_the_run(hf_cache, tmp_path, photos):
    ref_model = hf_model("rt_detr_v2", BOTTLENECK, "default", seed=3)
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-v2", ref_model)
    result = pipeline.detect(photos["coffee"], "test/tiny-rtdetr-v2", threshold=0.3)
    run = pipeline.run_detector(pipeline.load_model("test/tiny-rtdetr-v2"), photos["coffee"])
    kept = run.detections(run.select(0.3))
    assert [(d.label_id, d.query) for d in result.detections] == [(d.label_id, d.query) for d in kept]
    assert result.detections and result.size == list(photos["coffee"].size)
    assert [m.name for m in run.methods()] == ["rtdetr-sampling", "rtdetr-aifi", "rtdetr-gradcam"]


def _full_size(model_type: str) -> torch.nn.Module:
    if model_type == "rt_detr":  # transformers' defaults: RT-DETR R50vd
        return randomise_rtdetr(transformers.RTDetrForObjectDetection(transformers.RTDetrConfig(num_labels=80)), 0)
    backbone = dict(  # RT-DETRv2 R18vd (PekingU/rtdetr_v2_r18vd's sizes)
        model_type="rt_detr_resnet",
        depths=[2, 2, 2, 2],
        hidden_sizes=[64, 128, 256, 512],
        layer_type="basic",
        out_indices=[2, 3, 4],
    )
    config = transformers.RTDetrV2Config(
        backbone_config=backbone,
        encoder_in_channels=[128, 256, 512],
        hidden_expansion=0.5,
        decoder_layers=3,
        num_labels=80,
    )
    return randomise_rtdetr(transformers.RTDetrV2ForObjectDetection(config), 0)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["rt_detr", "rt_detr_v2"])
def test_full_size_random_weights_match_transformers(model_type, hf_cache, tmp_path, photos):
    ref_model = _full_size(model_type)
    ref_model.config._attn_implementation = "eager"
    write_repo(hf_cache, tmp_path, f"test/full-{model_type}", ref_model, size=640)
    diffs = check_parity(ref_model, f"test/full-{model_type}", photos["astronaut"], 640)
    assert diffs["count_all"] == 300
    print(model_type, {k: round(v, 7) for k, v in diffs.items()})


def test_cli_detect_prints_detections_and_refuses_what_it_cannot_do(hf_cache, tmp_path, capsys):
    """`python -m vtdemo detect photo --model <RT-DETR repo>`, in process: the table, the JSON, --save; `explain`
    with each RT-DETR method; `explain --method all` and classify with an RT-DETR model end in one line."""
    import json

    from tests.conftest import EXAMPLES
    from vtdemo import cli

    ref_model = hf_model("rt_detr", BASIC, "default", seed=5)
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-cli", ref_model)
    photo = str(EXAMPLES / "rocket.jpg")
    assert cli.main(["detect", "--model", "test/tiny-rtdetr-cli", "--threshold", "0.3", photo]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "detections with score >= 0.3" in table[0] and len(table) > 2
    out_dir = tmp_path / "saved"
    args = ["detect", "--model", "test/tiny-rtdetr-cli", "--threshold", "0", "--json", "--save", str(out_dir), photo]
    assert cli.main(args) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert set(item) == {"image", "model", "size", "detections", "runtime"}
    assert len(item["detections"]) == TINY["num_queries"] and item["runtime"]["precision"] == "exact"
    assert {d["label"] for d in item["detections"]} <= {f"LABEL_{i}" for i in range(TINY["num_labels"])}
    assert list(out_dir.iterdir())
    for method in ("rtdetr-sampling", "rtdetr-aifi", "rtdetr-gradcam"):
        args = ["explain", "--model", "test/tiny-rtdetr-cli", "--method", method, "--threshold", "0", "--json"]
        assert cli.main([*args, "--point", "100,80", photo]) == 0
        (item,) = json.loads(capsys.readouterr().out)
        assert item["method"] == method and item["grid"] == ([10, 10] if method == "rtdetr-aifi" else [40, 40])
    for args in (["explain", "--method", "all"], ["classify"]):
        assert cli.main([*args, "--model", "test/tiny-rtdetr-cli", photo]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err


def test_evaluate_coco_equals_pycocotools_on_the_processors_detections(hf_cache, tmp_path, capsys, photos):
    """`python -m vtdemo evaluate coco` with an RT-DETR model (in process): its 12 numbers equal pycocotools' on
    transformers' post-processed detections (threshold 0, classes mapped to the file's categories by name; a class
    the file does not name is dropped). The ground truth is two of transformers' own boxes per image, so AP is
    neither 0 nor 1."""
    import json
    import shutil

    from tests.conftest import EXAMPLES
    from vtdemo import cli
    from vtdemo.evaluate import coco as cc

    ref_model = hf_model("rt_detr_v2", BOTTLENECK, "default", seed=9)
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-coco", ref_model)
    names = ["astronaut.png", "rocket.jpg"]
    proc = processor(320)
    unnamed = TINY["num_labels"] - 1  # the annotation file has no category of this name
    expected, truth = [], []
    for i, name in enumerate(names):
        image = photos[name.split(".")[0]]
        with torch.no_grad():
            out = ref_model(**proc(images=image, return_tensors="pt"))
        found = proc.post_process_object_detection(out, 0.0, [(image.height, image.width)])[0]
        rows = zip(found["scores"].tolist(), found["labels"].tolist(), found["boxes"].tolist(), strict=True)
        named = []
        for score, label, (x0, y0, x1, y1) in rows:
            if label != unnamed:
                bbox = [x0, y0, x1 - x0, y1 - y0]
                named.append({"image_id": i + 1, "category_id": 10 + 3 * label, "bbox": bbox, "score": score})
        expected += named
        for k, det in enumerate((named[3], named[12])):  # ranked 4th and 13th: some precision lost before them
            truth.append({"id": 10 * i + k + 1, **{key: det[key] for key in ("image_id", "category_id", "bbox")}})

    images = tmp_path / "images"
    images.mkdir()
    for name in names:
        shutil.copy(EXAMPLES / name, images / name)
    annotations = {
        "images": [{"id": i + 1, "file_name": n, "width": 1, "height": 1} for i, n in enumerate(names)],
        "categories": [{"id": 10 + 3 * i, "name": f"label_{i}"} for i in range(unnamed)],  # ids != class indices
        "annotations": truth,
    }
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    args = ["evaluate", "coco", "--model", "test/tiny-rtdetr-coco", "--images", str(images)]
    args += ["--annotations", str(tmp_path / "ann.json"), "--json", "--detections", str(tmp_path / "det.json")]
    assert cli.main(args) == 0
    numbers = json.loads(capsys.readouterr().out)
    ours = json.loads((tmp_path / "det.json").read_text())
    assert len(ours) == len(expected) and all(d["category_id"] != 10 + 3 * unnamed for d in ours)
    reference = cc.evaluate(cc.check_annotations(annotations), expected, [1, 2])
    assert numbers == pytest.approx(reference, abs=1e-6)
    assert 0 < numbers["AP50"] < 1


def test_odd_images_are_squashed_at_a_bounded_cost(hf_cache, tmp_path):
    """Very thin, tiny, grey and transparent photos: squashed to the input size like any other (no aspect limit
    applies: the input is always 320x320 here), boxes in the photo's own pixels."""
    from PIL import Image

    ref_model = hf_model("rt_detr", BASIC, "default", seed=4)
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-odd", ref_model)
    for image in (
        Image.new("RGB", (4000, 2), (200, 10, 10)),
        Image.new("RGB", (1, 1), (0, 0, 0)),
        Image.new("L", (50, 900), 128),
        Image.new("RGBA", (64, 48), (0, 255, 0, 0)),
    ):
        result = pipeline.detect(image, "test/tiny-rtdetr-odd", threshold=0.0)
        assert result.size == list(image.size) and len(result.detections) == TINY["num_queries"]
        x0, y0, x1, y1 = result.detections[0].box
        assert x1 >= x0 and y1 >= y0 and all(abs(v) < 10 * max(image.size) for v in (x0, y0, x1, y1))


def test_the_app_loads_an_rt_detr_model_for_detection_only(hf_cache, tmp_path):
    """The Detect tab's loader takes an RT-DETR repo (its family is a detector); the Classify tab refuses it in one
    line, naming the Detect tab."""
    pytest.importorskip("gradio")
    from vtdemo.errors import VtdemoError
    from vtdemo.ui.common import Services
    from vtdemo.ui.config import AppConfig

    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-app", hf_model("rt_detr", BASIC, "default", seed=6))
    services = Services(AppConfig(device="cpu"))
    assert services.load("test/tiny-rtdetr-app", "detr").family == "rtdetr"
    with pytest.raises(VtdemoError, match=r"is a detection model \(RT-DETR\): use it in the Detect tab") as exc:
        services.load("test/tiny-rtdetr-app", "vit")
    assert "\n" not in str(exc.value)


def test_gradients_equal_finite_differences(hf_cache, tmp_path):
    """The backward pass relevance methods will use: d(sum of logits) / d(encoder maps) equals central finite
    differences (float64) at its largest entries and at an entry the decoder never reads (0). Nothing is detached,
    so these are the outputs' true derivatives (the references detach the selected queries and the reference boxes
    for training; transformers 5.25's backward matches neither its own finite differences nor ours here)."""
    ref_model = hf_model("rt_detr_v2", BASIC, "default", seed=1)
    write_repo(hf_cache, tmp_path, "test/tiny-rtdetr-grad", ref_model)
    model = pipeline.load_model("test/tiny-rtdetr-grad").model.double()
    x = torch.rand(1, 3, 320, 320, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps, _ = model.encode(x)
    original = model.encode

    def loss(levels: list[torch.Tensor]) -> torch.Tensor:
        model.encode = lambda _x, _attn=False: (list(levels), [])
        try:
            return model(x).logits.sum()
        finally:
            model.encode = original

    with torch.enable_grad():
        leaves = [m.clone().requires_grad_(True) for m in maps]
        loss(leaves).backward()
    grad = leaves[1].grad
    picks = [tuple(int(v) for v in torch.unravel_index(i, grad.shape)) for i in grad.abs().flatten().topk(3).indices]
    picks.append(tuple(int(v) for v in torch.unravel_index(grad.abs().flatten().argmin(), grad.shape)))
    for idx in picks:
        plus, minus = [m.clone() for m in maps], [m.clone() for m in maps]
        plus[1][idx] += 1e-6
        minus[1][idx] -= 1e-6
        with torch.no_grad():
            numeric = float(loss(plus) - loss(minus)) / 2e-6
        assert numeric == pytest.approx(float(grad[idx]), rel=1e-4, abs=1e-9), idx


@pytest.mark.slow  # a model written, a clip encoded, the CLI twice
def test_the_cli_detects_on_a_video_clip_with_an_rt_detr_model(hf_cache, tmp_path, capsys, photos):
    """`python -m vtdemo detect clip.mp4 --out x.mp4` with an RT-DETR model: the annotated H.264 video and the
    per-frame detections, each processed frame RT-DETR's on it as a photo; the summary names RT-DETR."""
    import json

    import numpy as np

    av = pytest.importorskip("av")
    from tests.unit.test_video import write_clip
    from vtdemo import cli

    repo = "test/tiny-rtdetr-clip"
    write_repo(hf_cache, tmp_path, repo, hf_model("rt_detr", BASIC, "default", seed=7))
    frame = np.asarray(photos["astronaut"].resize((320, 240)))
    clip = write_clip(tmp_path / "clip.mp4", [np.roll(frame, 6 * i, 1) for i in range(4)])
    out = tmp_path / "annotated.mp4"
    capsys.readouterr()  # save_pretrained's progress bar
    args = ["detect", "--model", repo, "--threshold", "0", "--every", "2", "--out", str(out), str(clip)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "RT-DETR on every 2nd frame (2 frames" in printed, printed
    with av.open(str(out)) as written:
        assert sum(1 for _ in written.decode(written.streams.video[0])) == 4
    assert cli.main([*args, "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert [f["frame"] for f in item["frames"]] == [0, 2]
    first = pipeline.video_frame(clip, 0, pipeline.VideoLimits())
    expected = pipeline.detect(first, repo, threshold=0.0).detections
    got = item["frames"][0]["detections"]
    assert len(got) == len(expected) > 0 and [d["label"] for d in got] == [d.label for d in expected]
    assert np.allclose([d["box"] for d in got], [d.box for d in expected], atol=0.1)
