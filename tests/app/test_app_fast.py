"""The app at precision fast (its default) on tiny checkpoints, through gradio_client and the raw handlers.

Covers: `--precision` / VTDEMO_PRECISION; the footer, the status lines and the webcam line name the engine; every
classifier method of the dropdowns works on a fast-loaded model, the gradient ones on the exact PyTorch model (their
maps equal the exact model's, and the caption says so); the exports carry `runtime` as the CLI's JSON does; the
webcam feeds OpenVINO one input shape whatever the frame size; the app keeps no PyTorch copy of a fast model until a
gradient method asks; a model the converter fails on runs exact, logged and named with the reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("openvino")
pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from tests.support.apps import launched_app  # noqa: E402
from tests.support.bf16 import fast_line  # noqa: E402
from vtdemo import engine, loader, pipeline  # noqa: E402
from vtdemo.engine import openvino_runtime  # noqa: E402
from vtdemo.engine.fast import FastModel  # noqa: E402
from vtdemo.explain import api, registry  # noqa: E402
from vtdemo.ui import config  # noqa: E402

pytestmark = pytest.mark.slow  # conversions to the fast engine, 5-20 s a test

ROOT = Path(__file__).resolve().parents[2]
CAT = str(ROOT / "assets" / "examples" / "chelsea.png")
ASTRONAUT = str(ROOT / "assets" / "examples" / "astronaut.png")
VIEW = ("mean", "last", "where it looks", 0.55)
ENGINE = r"OpenVINO \S+ (bf16|f32) on cpu \(fast\)"


def _path(value) -> str:
    if isinstance(value, dict):
        value = value.get("value", value)
        return value["path"] if isinstance(value, dict) and "path" in value else value
    return value


def test_precision_flag_and_variable(monkeypatch):
    monkeypatch.delenv("VTDEMO_PRECISION", raising=False)
    monkeypatch.delenv("VTDEMO_LIVE_SIZE", raising=False)
    monkeypatch.setattr(config, "_avx512", lambda: True)  # the CPU the defaults were measured on
    fast = config.from_args([])
    assert fast.precision == "fast" and fast.live_size == 320  # the app's defaults
    monkeypatch.setenv("VTDEMO_PRECISION", "exact")
    exact = config.from_args([])
    assert exact.precision == "exact" and exact.live_size == 256  # the webcam's size follows the precision
    monkeypatch.setattr(config, "_avx512", lambda: False)  # an AVX2-only CPU: slower at every size
    assert config.from_args([]).live_size == 256 and config.from_args(["--precision", "fast"]).live_size == 256
    assert "no AVX-512" in config.live_default("fast")[1]
    monkeypatch.setattr(config, "_avx512", lambda: True)
    assert config.from_args(["--live-size", "384"]).live_size == 384
    assert config.from_args(["--precision", "fast"]).precision == "fast"  # the flag wins over the variable
    monkeypatch.setenv("VTDEMO_PRECISION", "quick")
    with pytest.raises(SystemExit, match="VTDEMO_PRECISION='quick': choose from exact, fast"):
        config.from_args([])
    with pytest.raises(SystemExit):
        config.from_args(["--precision", "half"])


@pytest.fixture(scope="module")
def app(tiny_hub, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("engine"))
    with launched_app(tiny_hub, env={"VTDEMO_ENGINE_CACHE": cache}, precision="fast") as (vt, url):
        vt.repos = tiny_hub.repos
        yield vt, url


@pytest.fixture(scope="module")
def client(app):
    return Client(app[1], verbose=False, download_files=False)


def test_footer_names_the_precision(app):
    footer = next(b.value for b in app[0].demo.blocks.values() if getattr(b, "elem_id", None) == "footer-runtime")
    assert "precision fast: OpenVINO" in footer and "gradient methods on the exact fp32 PyTorch model" in footer


def test_classify_status_names_the_engine_and_every_method_works(client, app):
    import re

    for family, methods in (
        ("vit", ("rollout", "grad-rollout", "cls-attention", "gradcam", "attn-lrp", "cp-lrp")),
        ("swin", ("swin-rollout", "swin-grad-rollout", "swin-window", "swin-gradcam", "swin-attn-lrp", "swin-cp-lrp")),
    ):
        out = client.predict(handle_file(CAT), "", methods[0], 0.5, api_name=f"/classify_{family}")
        assert re.search(ENGINE, out[3]), out[3]
        loaded = loader.load(app[0].repos[family], "cpu", precision="fast")
        assert isinstance(loaded.model, FastModel) and loaded.model.released  # no PyTorch copy kept
        dropdown = next(o for o in out if isinstance(o, dict) and methods[0] in str(o.get("choices")))
        assert {v for _, v in dropdown["choices"]} == set(methods)  # the dropdown offers all of them
        for method in methods:
            image, caption, status = client.predict(
                method, None, "mean", 0.0, "mean", None, 0.5, api_name=f"/explain_{family}"
            )[:3]
            assert image is not None and "⚠️" not in status, (method, status)
            needs = registry.METHODS[method].needs_gradients
            assert ("computed on the exact fp32 PyTorch model" in caption) == needs, (method, caption)


def test_gradient_map_of_a_fast_model_is_the_exact_models(client, app):
    """The app's grad-rollout on the fast-loaded ViT equals grad-rollout on the exact model loaded on its own."""
    top = client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")[0]
    second = top["confidences"][1]["label"]
    client.predict("grad-rollout", second, "mean", 0.0, "mean", None, 0.5, api_name="/explain_vit")
    files = [_path(f) for f in client.predict(api_name="/export_classify")]
    shown = np.load(next(f for f in files if f.endswith(".vit.grad-rollout.npy")))
    data = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert data[0]["runtime"]["precision"] == "fast" and data[0]["runtime"]["engine"] == "openvino"
    assert data[0]["runtime"]["gradients"] == "exact"  # the map came from the exact model
    exact = loader.load(app[0].repos["vit"], "cpu")  # precision exact (the copy the gradient method loaded)
    index = exact.labels.index(second)
    ref = pipeline.explain(CAT, exact, "grad-rollout", class_index=index).map
    np.testing.assert_allclose(shown, ref.numpy(), atol=1e-5)


def test_detect_status_export_and_relevance_say_what_ran(client, app):
    out = client.predict(handle_file(ASTRONAUT), "", 0.5, [], 100, False, 0.5, *VIEW, api_name="/detect")
    assert fast_line("detr").search(out[4] if isinstance(out[4], str) else str(out))
    query = out[2]["data"][0][-1]
    client.predict(query, *VIEW, api_name="/detection_map")
    _, caption = client.predict("class", 0.5, api_name="/relevance_map")
    assert "computed on the exact fp32 PyTorch model" in caption
    files = [_path(f) for f in client.predict(0.55, api_name="/export_detect")]
    data = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    runtime = data[0]["runtime"]
    ran = loader.load(app[0].repos["detr"], "cpu", precision="fast").model.choice.dtype  # after the guard, if any
    assert {k: runtime[k] for k in ("precision", "engine", "dtype")} == {
        "precision": "fast",
        "engine": "openvino",
        "dtype": ran,
    }
    assert runtime["gradients"] == "exact" and set(data[0]) == {"image", "model", "size", "detections", "runtime"}


def test_an_rtdetr_model_detects_on_the_fast_engine_with_its_views(client, app, tiny_rtdetr):
    """An RT-DETR repo in the Detect tab at precision fast: OpenVINO ran it (status line, export), the detections
    are the exact model's (each named by label and the encoder position its query came from: near-equal selection
    scores may number the queries differently), the sampling and AIFI views answer, and relevance (Grad-CAM) runs
    on the exact PyTorch model."""
    out = client.predict(handle_file(ASTRONAUT), tiny_rtdetr, 0.3, [], 100, False, 0.5, *VIEW, api_name="/detect")
    status = next(o for o in out if isinstance(o, str) and tiny_rtdetr in o)
    assert fast_line("rtdetr").search(status), status
    fast = loader.load(tiny_rtdetr, "cpu", precision="fast")
    assert isinstance(fast.model, FastModel) and fast.model.released  # the app keeps OpenVINO's copy only
    image = pipeline.load_image(ASTRONAUT)
    run_f = pipeline.run_rtdetr(fast, image)  # the same graph as the app's
    run_e = pipeline.run_rtdetr(loader.load(tiny_rtdetr, "cpu"), image)
    pos_f, pos_e = run_f.output.query_index[0].tolist(), run_e.output.query_index[0].tolist()
    rows = out[2]["data"]
    shown = {(r[1], pos_f[r[7]]): r[2] for r in rows}
    expected = {(d.label, pos_e[d.query]): d.score for d in run_e.detections(run_e.select(0.3))}
    assert rows and set(shown) == set(expected)
    assert all(abs(shown[k] - expected[k]) <= 0.02 for k in shown)

    query = rows[0][-1]
    picture, caption = client.predict(query, *VIEW, api_name="/detection_map")
    assert picture is not None and f"Where query {query} looked" in caption
    picture, caption = client.predict(100, 80, *VIEW, api_name="/encoder_map")
    assert picture is not None and "AIFI self-attention" in caption
    picture, caption = client.predict("class", 0.5, api_name="/relevance_map")
    assert picture is not None and "Grad-CAM" in caption and "computed on the exact fp32 PyTorch model" in caption
    files = [_path(f) for f in client.predict(0.55, api_name="/export_detect")]
    data = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert data[0]["model"] == tiny_rtdetr and data[0]["runtime"]["engine"] == "openvino"


@pytest.fixture
def in_event():
    """Call handlers directly as the server does: inside an event listener (as tests/app/test_app.py does)."""
    from gradio.context import LocalContext

    token = LocalContext.in_event_listener.set(True)
    yield
    LocalContext.in_event_listener.reset(token)


def test_webcam_names_the_engine_and_feeds_one_shape(app, in_event, tmp_path, monkeypatch):
    shapes = []
    real = openvino_runtime.CompiledGraph.__call__

    def recording(self, inputs):
        shapes.append(tuple(inputs[0].shape))
        return real(self, inputs)

    monkeypatch.setattr(openvino_runtime.CompiledGraph, "__call__", recording)
    h = app[0].webcam
    session = None
    for size in ((1920, 1440), (1280, 720), (480, 640)):  # 4:3, 16:9 and a portrait frame
        path = tmp_path / f"frame{size[0]}.png"
        Image.open(ASTRONAUT).convert("RGB").resize(size).save(path)
        out, text, session = h.live(str(path), 0.5, 320, "", False, session)
        assert isinstance(out, np.ndarray), text
    assert shapes == [(1, 3, 320, 427)] * 3  # one input shape for OpenVINO, whatever the frame
    assert "frames/s processed" in text and "DETR input 427×320 (fixed)" in text
    assert fast_line("detr").search(text), text


def test_a_model_the_converter_fails_on_runs_exact_and_says_why(tiny_hub, tmp_path, monkeypatch, caplog):
    from vtdemo.ui.common import Services

    cache, repos = tiny_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VTDEMO_ENGINE_CACHE", str(tmp_path / "engine"))

    def failing(*args, **kwargs):
        raise RuntimeError("Cannot convert aten::made_up_op\nsecond line")

    monkeypatch.setattr(openvino_runtime, "convert", failing)
    loader.clear_cache()
    try:
        services = Services(config.AppConfig(vit_model=repos["vit"], device="cpu", precision="fast"))
        with caplog.at_level(logging.WARNING):
            loaded = services.load("", "vit")
        assert loaded.precision == "exact" and not isinstance(loaded.model, FastModel)
        assert "could not convert" in caplog.text and "made_up_op" in caplog.text
        line = services.engine_line(loaded)
        assert line.startswith("PyTorch") and "(exact)" in line
        assert "the fast engine could not convert this model (RuntimeError: Cannot convert aten::made_up_op)" in line
        assert services.load("", "vit").precision == "exact"  # not retried on every request
        assert pipeline.runtime_info(loaded)["precision"] == "exact"  # and the JSON says exact
    finally:
        loader.clear_cache()


def test_the_warm_up_prepares_the_default_models_after_the_visitors_calls(tiny_hub, tmp_path, caplog):
    """`--warm-up` (on a Space by default): once the server listens, the configured models are loaded and converted
    in the background, but not while a visitor's model call runs; one that cannot be loaded (here the default
    RT-DETR, not in the offline cache) is logged with the reason and left to its first visitor."""
    from vtdemo.ui.common import VISITORS

    repos, engine_cache = tiny_hub.repos, tmp_path / "engine"
    release = threading.Event()

    def visitor() -> None:  # a visitor's model call, running until released
        with VISITORS.call():
            release.wait(120)

    busy = threading.Thread(target=visitor)
    busy.start()
    try:
        with (
            caplog.at_level(logging.INFO, logger="vtdemo"),
            launched_app(tiny_hub, env={"VTDEMO_ENGINE_CACHE": str(engine_cache)}, precision="fast", warm_up=True) as (
                vt,
                url,
            ),
        ):
            assert vt.warming is not None
            assert urllib.request.urlopen(url, timeout=30).status == 200  # the server answers meanwhile
            time.sleep(1.5)
            loaded = {f: loader.is_loaded(repos[f], vt.services.device, "fast") for f in ("vit", "swin", "detr")}
            assert not any(loaded.values()), loaded  # it gives way to the visitor's call
            release.set()
            vt.warming.join(timeout=300)
            assert not vt.warming.is_alive()
            for family in ("vit", "swin", "detr"):
                assert loader.is_loaded(repos[family], vt.services.device, "fast")
                assert isinstance(loader.load(repos[family], "cpu", "fast").model, FastModel)
            assert len(list(engine_cache.rglob("*.xml"))) >= 3  # converted (the attention graphs)
    finally:
        release.set()
        busy.join()
    assert "warm-up: PekingU/rtdetr_r18vd not prepared" in caplog.text
    assert "it loads on first use" in caplog.text and "Traceback" not in caplog.text
    assert caplog.text.count("ready in") == 3


def test_released_weights_come_back_for_gradients_only(tiny_hub, tmp_path, monkeypatch):
    """After `release_weights` the fast model has no PyTorch tensors; a gradient method loads the exact model."""
    cache, repos = tiny_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VTDEMO_ENGINE_CACHE", str(tmp_path / "engine"))
    loader.clear_cache()
    try:
        fast = loader.load(repos["swin"], "cpu", precision="fast")
        assert not loader.is_loaded(repos["swin"], "cpu")  # no exact copy in the cache
        assert not engine.release_weights(fast)  # nothing compiled yet: nothing released
        engine.prepare(fast)
        assert engine.release_weights(fast)
        assert all(p.device.type == "meta" for p in fast.model.skeleton.parameters())
        image = Image.open(CAT).convert("RGB")
        run = pipeline.run_classifier(fast, image)  # forward passes still work (OpenVINO)
        assert not loader.is_loaded(repos["swin"], "cpu")
        result = api.explain_run(run, "swin-grad-rollout")
        assert loader.is_loaded(repos["swin"], "cpu")  # loaded on demand, for the gradients
        exact = loader.load(repos["swin"], "cpu")
        assert all(p.device.type == "cpu" for p in exact.model.parameters())
        ref = api.explain_run(
            pipeline.run_classifier(exact, image),
            "swin-grad-rollout",
            pipeline.ExplainOptions(class_index=result.target["index"]),
        )
        torch.testing.assert_close(result.map, ref.map, atol=1e-5, rtol=0)
    finally:
        loader.clear_cache()
