"""Broken, foreign or unreachable models: one clear `VtdemoError` line naming the repo or file and what to do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import vtdemo
from tests.support.hubcache import write_repo
from vtdemo import hub, loader
from vtdemo.errors import CheckpointError, ModelUnavailableError, UnsupportedModelError

ROOT = Path(__file__).resolve().parents[2]
VIT_CONFIG = {
    "model_type": "vit",
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("model_id", ["nobody/nothing", "nobody/nothing@v1.0", "gpt2"])
def test_offline_with_an_empty_cache(hf_cache, model_id):
    with pytest.raises(ModelUnavailableError) as err:
        loader.load(model_id)
    message = one_line(err.value)
    assert model_id.split("@")[0] in message and "connect once" in message and "HF_HUB_OFFLINE=1" in message


@pytest.mark.parametrize("text", ["", "   ", "not a repo id!", "a/b/c/d", "../secret"])
def test_text_that_is_no_model_id(hf_cache, text):
    with pytest.raises(ModelUnavailableError) as err:
        loader.load(text)
    one_line(err.value)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no such folder"):
        loader.load(str(tmp_path / "absent" / "model"))
    with pytest.raises(ModelUnavailableError, match="has no config.json"):
        loader.load(str(tmp_path))


@pytest.mark.parametrize(
    "config,words",
    [
        ({"model_type": "bert", "architectures": ["BertModel"]}, "'bert' model; vtdemo supports"),
        ({"model_type": "llama"}, "'llama' model"),
        ({"architecture": "resnet50", "num_classes": 1000}, "timm 'resnet50' model"),
        ({"architecture": "vit_huge_patch14_clip_224", "num_classes": 1000}, "not supported"),
        ({"hello": "world"}, "not a model config"),
    ],
)
def test_unsupported_architectures_say_what_is_supported(hf_cache, config, words):
    write_repo(hf_cache, "org/foreign", {"config.json": config, "model.safetensors": b""})
    with pytest.raises(UnsupportedModelError) as err:
        loader.load("org/foreign")
    message = one_line(err.value)
    assert words in message and ("ViT" in message or "vit_" in message)


def test_config_json_that_is_not_json(hf_cache):
    write_repo(hf_cache, "org/badjson", {"config.json": "{ not json"})
    with pytest.raises(CheckpointError, match=r"config.json.*not valid JSON.*delete it"):
        loader.load("org/badjson")


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"\xff" * 64])
def test_zero_byte_or_garbage_safetensors(hf_cache, content):
    write_repo(hf_cache, "org/garbage", {"config.json": VIT_CONFIG, "model.safetensors": content})
    with pytest.raises(CheckpointError) as err:
        loader.load("org/garbage")
    message = one_line(err.value)
    assert "model.safetensors" in message and "downloaded again" in message


def test_weights_missing_entirely(hf_cache):
    write_repo(hf_cache, "org/noweights", {"config.json": VIT_CONFIG})
    with pytest.raises(ModelUnavailableError, match="neither model.safetensors nor pytorch_model.bin"):
        loader.load("org/noweights")


def test_wrong_family_for_the_task(hf_cache, tmp_path):
    import timm

    from tests.support.hubcache import write_timm_repo

    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    write_timm_repo(
        hf_cache, "org/vit", timm.create_model("vit_tiny_patch16_224", num_classes=5, **args), args, tmp_path
    )
    with pytest.raises(vtdemo.VtdemoError, match="image classifier; use classify"):
        vtdemo.detect(ROOT / "assets/examples/chelsea.png", model="org/vit")


def test_library_never_unpickles_unsafely_or_runs_remote_code():
    """Static guard: every torch.load in the package passes weights_only=True; nothing asks for remote code."""
    for path in (ROOT / "vtdemo").rglob("*.py"):
        text = path.read_text()
        for call in re.findall(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):  # one level of nested ()
            assert "weights_only=True" in call, f"{path}: {call}"
        assert "trust_remote_code" not in text, path
        assert not re.search(r"\bpickle\.loads?\(", text), path


def test_no_network_without_offline_flag_uses_the_cache_at_once(hf_cache, tmp_path, monkeypatch):
    """A user with no connection who never set HF_HUB_OFFLINE: cached models load, missing ones fail in one line,
    without huggingface_hub's five retries per file."""
    import time

    import timm

    from tests.support.hubcache import write_timm_repo

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    write_timm_repo(
        hf_cache, "org/cached", timm.create_model("vit_tiny_patch16_224", num_classes=5, **args), args, tmp_path
    )
    start = time.monotonic()
    assert loader.load("org/cached").family == "vit"
    with pytest.raises(ModelUnavailableError, match="no connection to the Hugging Face Hub"):
        loader.load("org/missing")
    assert time.monotonic() - start < 10


def test_reachability_check_resolves_the_endpoint_host(monkeypatch):
    import socket

    asked = []

    def fake_getaddrinfo(host, port):
        asked.append((host, port))
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid")
    hub._reachable.clear()
    assert hub.hub_reachable() is False and asked == [("hub.example.invalid", 443)]
    assert hub.hub_reachable() is False and len(asked) == 1  # remembered for a minute
    hub._reachable.clear()


def test_a_lying_config_costs_nothing(hf_cache, tmp_path, monkeypatch):
    """config.json claims 40 big layers next to a weights file holding one small tensor: refused before anything is
    built for real (the only construction happens on the meta device), in well under a second."""
    import time

    import torch

    from tests.support.hubcache import safetensors_bytes
    from vtdemo.models import vit as vit_model

    built_on = []
    original = vit_model.VisionTransformer.__init__

    def spy(self, cfg):
        built_on.append(torch.empty(0).device.type)  # the default device inside `with torch.device(...)`
        original(self, cfg)

    monkeypatch.setattr(vit_model.VisionTransformer, "__init__", spy)
    big = dict(
        VIT_CONFIG,
        hidden_size=1024,
        num_hidden_layers=40,
        num_attention_heads=16,
        intermediate_size=4096,
        image_size=224,
        patch_size=16,
    )
    weights = safetensors_bytes({"classifier.bias": torch.zeros(2)}, tmp_path)
    write_repo(hf_cache, "org/liar", {"config.json": big, "model.safetensors": weights})
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        loader.load("org/liar")
    assert time.perf_counter() - started < 1.0
    assert "missing keys" in one_line(err.value) and built_on == ["meta"]


@pytest.mark.parametrize(
    "change",
    [dict(num_hidden_layers=10**6), dict(hidden_size=10**6), dict(image_size=-224), dict(num_attention_heads=0)],
)
def test_absurd_sizes_in_a_config_are_refused_before_building(hf_cache, change):
    write_repo(hf_cache, "org/absurd", {"config.json": dict(VIT_CONFIG, **change), "model.safetensors": b"x"})
    with pytest.raises((UnsupportedModelError, CheckpointError)) as err:
        loader.load("org/absurd")
    one_line(err.value)


@pytest.mark.parametrize("text", ["org/" + "x" * 300, "/" + "y" * 400, "a" * 5000 + "/b"])
def test_model_ids_too_long_for_the_file_system(hf_cache, text):
    with pytest.raises(ModelUnavailableError, match="at most 255") as err:
        loader.load(text)
    one_line(err.value)
