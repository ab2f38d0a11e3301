"""Each app setting is declared once (`vtdemo.ui.config.SETTINGS`): the docs' table, the flags and `from_args` follow
from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtdemo.ui import config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def test_the_docs_table_is_the_declared_settings():
    text = DOCS.read_text(encoding="utf-8")
    begin, end = "<!-- settings table: begin -->\n", "<!-- settings table: end -->"
    shown = text[text.index(begin) + len(begin) : text.index(end)]
    assert shown == config.settings_table(), (
        "docs/deployment.md: paste vtdemo.ui.config.settings_table() between the markers"
    )


def test_every_setting_is_a_field_with_its_declared_default():
    fields = config.AppConfig.__dataclass_fields__
    assert set(fields) == {s.name for s in config.SETTINGS}
    for s in config.SETTINGS:
        assert fields[s.name].default == s.default, s.name


def test_flags_win_over_variables_and_variables_over_defaults(monkeypatch):
    for s in config.SETTINGS:
        for name in (s.env, s.fallback):
            if name:
                monkeypatch.delenv(name, raising=False)
    assert config.from_args([]).queue_size == 32
    monkeypatch.setenv("VTDEMO_QUEUE_SIZE", "8")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # Gradio's own variable, read when ours is unset
    monkeypatch.setenv("VTDEMO_WEBCAM_SESSIONS", "3")  # a setting with no flag
    cfg = config.from_args(["--share"])
    assert (cfg.queue_size, cfg.host, cfg.share, cfg.webcam_sessions) == (8, "0.0.0.0", True, 3)
    assert config.from_args(["--queue-size", "4"]).queue_size == 4
    monkeypatch.setenv("VTDEMO_HOST", "127.0.0.1")
    assert config.from_args([]).host == "127.0.0.1"
    with pytest.raises(SystemExit, match="--queue-size must be at least 1"):
        config.from_args(["--queue-size", "0"])
    monkeypatch.setenv("VTDEMO_CONCURRENCY", "many")
    with pytest.raises(SystemExit, match="VTDEMO_CONCURRENCY"):
        config.from_args([])


def test_every_flag_is_in_the_help():
    text = config.parser().format_help()
    for s in config.SETTINGS:
        if s.flag:
            assert s.flag in text and s.env in text


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("VTDEMO_MODEL_MEMORY_MB", "lots", "VTDEMO_MODEL_MEMORY_MB='lots' is not a whole number"),
        ("VTDEMO_MODEL_MEMORY_MB", "-5", "VTDEMO_MODEL_MEMORY_MB must be at least 1"),
        ("VTDEMO_MAX_MODEL_MB", "0", "VTDEMO_MAX_MODEL_MB must be at least 1"),
        ("VTDEMO_DOWNLOAD_CACHE_MB", "99999999999", "VTDEMO_DOWNLOAD_CACHE_MB must be at most 1048576"),
    ],
)
def test_budgets_that_are_not_numbers_negative_or_absurd_are_refused_naming_the_variable(
    monkeypatch, variable, value, said
):
    """Issue 21: one line at start-up that names the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=said.replace("*", r"\*")) as caught:
        config.from_args([])
    assert "\n" not in str(caught.value)


def test_budgets_default_and_set():
    cfg = config.from_args(["--model-memory-mb", "3000", "--max-model-mb", "100"])
    assert (cfg.model_memory_mb, cfg.max_model_mb) == (3000, 100)
    assert config.AppConfig().download_cache_mb == 10240 and config.AppConfig().model_memory_mb is None
