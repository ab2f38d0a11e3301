"""The app's settings: which models, where to listen, and the limits that protect the host. No Gradio here.

Each setting is declared once, in `SETTINGS`: its `AppConfig` field, its command-line flag (`python app.py --help`),
its environment variable, its default and its help. The parser, `from_args` (flags win over variables, variables
over the defaults), `AppConfig`'s defaults and the docs' table (`settings_table()`, in docs/deployment.md, checked
by a test) all follow from it. A Hugging Face Space runs `python app.py` with no arguments and is configured
through the variables.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import pipeline
from ..errors import VtdemoError
from ..settings import env_flag, env_int, env_text

LIVE_SIZES = (256, 320, 384, 480, 640, 800)
#: The webcam's default DETR short side per precision on a CPU with AVX-512 (`LIVE_SLOW_CPU` without), and why
#: (the measurements: docs/performance.md, "Webcam input size").
LIVE_DEFAULTS = {"fast": 320, "exact": 256}
LIVE_WHY = {
    "fast": "the largest size at which the fast path keeps DETR-R50 above the 5 frames/s a live view needs on a "
    "2-core CPU with AVX-512",
    "exact": "the largest size at which the exact PyTorch path keeps DETR-R50 above 5 frames/s on a 2-core CPU with "
    "AVX-512",
}
#: Without AVX-512 (AVX2 only) every size is slower: the smallest offered size, and why.
LIVE_SLOW_CPU = (
    256,
    "this CPU has no AVX-512: every size is slower there, and 256 px, the smallest offered size, is the closest to a "
    "live 5 frames/s",
)


def _avx512() -> bool:
    """Does this CPU have AVX-512 (Linux /proc/cpuinfo; assumed yes where it cannot be read)?"""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return True


def live_default(precision: str) -> tuple[int, str]:
    """(the webcam's default short side, why) for this precision on this CPU."""
    if not _avx512():
        return LIVE_SLOW_CPU
    return LIVE_DEFAULTS[precision], LIVE_WHY[precision]


def warm_up_default() -> bool:
    """On on a Hugging Face Space (`SPACE_ID` set): a Space restarts cold (after a rebuild, or asleep and woken) and
    has no step of its own to convert the models before visitors come; off elsewhere, where a test run or a desktop
    start should not spend the CPU on models nobody may use (`python -m vtdemo convert` prepares them there)."""
    return bool(env_text("SPACE_ID"))


def model_nice_default() -> int:
    """10 on a Hugging Face Space (`SPACE_ID` set: a host that serves visitors and nothing else), else 0: on a desktop
    the app's model calls keep their share against the visitor's own browser and programs."""
    return 10 if env_text("SPACE_ID") else 0


@dataclass(frozen=True)
class Setting:
    """One app setting. name: the `AppConfig` field; flag: its command-line flag (None: variable only); env: its
    variable; kind: str | int | bool; default: the value when neither is given (what the docs show: `shown`);
    fallback: another variable read when `env` is unset (Gradio's own); minimum / maximum: the int range accepted."""

    name: str
    flag: str | None
    env: str
    kind: type
    default: Any
    help: str
    shown: str = ""
    fallback: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None

    @property
    def default_text(self) -> str:
        return self.shown or ("off" if self.default is False else str(self.default))


#: A MiB figure past this (1 TiB) is a typo, not a budget: refused at start-up.
ABSURD_MB = 2**20

SETTINGS: tuple[Setting, ...] = (
    Setting("vit_model", "--vit-model", "VTDEMO_VIT_MODEL", str, pipeline.DEFAULT_VIT, "ViT/DeiT repo id or folder"),
    Setting("swin_model", "--swin-model", "VTDEMO_SWIN_MODEL", str, pipeline.DEFAULT_SWIN, "Swin repo id or folder"),
    Setting("detr_model", "--detr-model", "VTDEMO_DETR_MODEL", str, pipeline.DEFAULT_DETR, "DETR repo id or folder"),
    Setting(
        "rtdetr_model",
        "--rtdetr-model",
        "VTDEMO_RTDETR_MODEL",
        str,
        pipeline.DEFAULT_RTDETR,
        "RT-DETR repo id or folder: the Detect picker's first RT-DETR; the webcam runs whichever of this and the DETR "
        "model is faster here (measured at first use, if both are on the server)",
    ),
    Setting(
        "host",
        "--host",
        "VTDEMO_HOST",
        str,
        None,
        "address to listen on (0.0.0.0 for all)",
        shown="127.0.0.1",
        fallback="GRADIO_SERVER_NAME",
    ),
    Setting("port", "--port", "VTDEMO_PORT", int, None, "port", shown="7860", fallback="GRADIO_SERVER_PORT"),
    Setting("share", "--share", "VTDEMO_SHARE", bool, False, "create a public gradio.live link", shown="off"),
    Setting("max_file_size", "--max-file-size", "VTDEMO_MAX_FILE_SIZE", str, "20mb", "largest upload, e.g. 20mb"),
    Setting(
        "queue_size", "--queue-size", "VTDEMO_QUEUE_SIZE", int, 32, "requests allowed to wait before 'busy'", minimum=1
    ),
    Setting("concurrency", "--concurrency", "VTDEMO_CONCURRENCY", int, 1, "model calls run at once", minimum=1),
    Setting(
        "model_nice",
        "--model-nice",
        "VTDEMO_MODEL_NICE",
        int,
        None,
        "CPU priority (nice) of model calls below the server's event loop, on Linux; 0: off",
        shown="10 on a Space, else 0",
        minimum=0,
        maximum=19,
    ),
    Setting(
        "warm_up",
        "--warm-up",
        "VTDEMO_WARM_UP",
        bool,
        None,
        "prepare the configured models in the background once the server listens (load them and, at precision "
        "fast, convert them), giving way to visitors' model calls, so that visitors do not wait for it",
        shown="on on a Space, else off",
    ),
    Setting(
        "downloads",
        "--downloads",
        "VTDEMO_DOWNLOADS",
        int,
        2,
        "models downloaded at once for visitors, beside the model calls (one per visitor)",
        minimum=1,
        maximum=16,
    ),
    Setting(
        "cache_mb",
        "--cache-mb",
        "VTDEMO_CACHE_MB",
        int,
        2048,
        "memory for all visitors' cached runs together, in MiB (0: keep only the newest run)",
        minimum=0,
    ),
    Setting(
        "model_memory_mb",
        "--model-memory-mb",
        "VTDEMO_MODEL_MEMORY_MB",
        int,
        None,
        "memory for the loaded models together (weights and fast-engine graphs), in MiB; the least recently used "
        "model is evicted past it, never one in use",
        shown="40 percent of the machine's memory, at most 6144",
        minimum=1,
        maximum=ABSURD_MB,
    ),
    Setting(
        "max_model_mb",
        "--max-model-mb",
        "VTDEMO_MAX_MODEL_MB",
        int,
        2048,
        "largest weight file of a model typed by a visitor, in MiB (checked before downloading; the configured "
        "models have no such limit)",
        minimum=1,
        maximum=ABSURD_MB,
    ),
    Setting(
        "download_cache_mb",
        "--download-cache-mb",
        "VTDEMO_DOWNLOAD_CACHE_MB",
        int,
        10240,
        "disk for the models fetched for visitors and their engine-cache entries, in MiB; the least recently "
        "loaded are deleted first past it (never the configured models)",
        minimum=0,
        maximum=ABSURD_MB,
    ),
    Setting(
        "max_sessions",
        "--max-sessions",
        "VTDEMO_MAX_SESSIONS",
        int,
        1000,
        "sessions whose state Gradio keeps, oldest forgotten first",
        minimum=1,
    ),
    Setting(
        "video_max_mb",
        "--video-max-mb",
        "VTDEMO_VIDEO_MAX_MB",
        int,
        100,
        "video tab: largest clip upload, in MB",
        minimum=1,
        maximum=4096,
    ),
    Setting(
        "video_max_seconds",
        "--video-max-seconds",
        "VTDEMO_VIDEO_MAX_SECONDS",
        int,
        60,
        "video tab: longest clip, in seconds (checked from its header, and again while decoding)",
        minimum=1,
        maximum=3600,
    ),
    Setting(
        "video_max_side",
        "--video-max-side",
        "VTDEMO_VIDEO_MAX_SIDE",
        int,
        3840,
        "video tab: largest frame, long side in px (short side at most 9/16 of it: 3840 takes 4K, refuses 8K)",
        minimum=64,
        maximum=8192,
    ),
    Setting(
        "video_budget_s",
        "--video-budget-s",
        "VTDEMO_VIDEO_BUDGET_S",
        int,
        60,
        "video tab: DETR runs on every k-th frame, k chosen so that a clip takes about this many seconds",
        minimum=5,
        maximum=3600,
    ),
    Setting(
        "live_size",
        "--live-size",
        "VTDEMO_LIVE_SIZE",
        int,
        0,
        "webcam: DETR input short side in px, fixed",
        shown="320 at precision fast, 256 exact (256 without AVX-512)",
        minimum=64,
    ),
    Setting(
        "webcam_limit", "--webcam-limit", "VTDEMO_WEBCAM_LIMIT", int, 300, "webcam: seconds of processing per session"
    ),
    Setting("webcam_sessions", None, "VTDEMO_WEBCAM_SESSIONS", int, 2, "webcam streams at once (others wait)"),
    Setting("device", "--device", "VTDEMO_DEVICE", str, None, "cuda, mps or cpu", shown="the best available"),
    Setting(
        "precision",
        "--precision",
        "VTDEMO_PRECISION",
        str,
        "fast",
        "fast: the fast engine for forward passes; exact: fp32 PyTorch for everything (gradient methods always "
        "run exact)",
        choices=pipeline.PRECISIONS,
    ),
    Setting(
        "allow_folders",
        None,
        "VTDEMO_ALLOW_FOLDERS",
        bool,
        None,
        "allow local folders typed into the model pickers",
        shown="only on localhost without --share",
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}


def _default(name: str) -> Any:
    return field(default=BY_NAME[name].default)


@dataclass(frozen=True)
class AppConfig:
    """What the app runs and how (each field's flag, variable and default: `SETTINGS`). Models are repo ids
    (`org/name[@revision]`) or local folders; live_size 0 = this precision's default on this CPU (`live_default`);
    host / port None = Gradio's defaults; allow_folders None = only on a private server (`allow_typed_folders`)."""

    vit_model: str = _default("vit_model")
    swin_model: str = _default("swin_model")
    detr_model: str = _default("detr_model")
    rtdetr_model: str = _default("rtdetr_model")
    host: str | None = _default("host")
    port: int | None = _default("port")
    share: bool = _default("share")
    max_file_size: str = _default("max_file_size")
    queue_size: int = _default("queue_size")
    concurrency: int = _default("concurrency")
    downloads: int = _default("downloads")
    model_nice: int | None = _default("model_nice")  # None: `model_nice_default()`
    warm_up: bool | None = _default("warm_up")  # None: `warm_up_default()`
    cache_mb: int = _default("cache_mb")
    model_memory_mb: int | None = _default("model_memory_mb")
    max_model_mb: int = _default("max_model_mb")
    download_cache_mb: int = _default("download_cache_mb")
    max_sessions: int = _default("max_sessions")
    video_max_mb: int = _default("video_max_mb")
    video_max_seconds: int = _default("video_max_seconds")
    video_max_side: int = _default("video_max_side")
    video_budget_s: int = _default("video_budget_s")
    live_size: int = _default("live_size")
    webcam_limit: int = _default("webcam_limit")
    webcam_sessions: int = _default("webcam_sessions")
    device: str | None = _default("device")
    precision: str = _default("precision")
    allow_folders: bool | None = _default("allow_folders")

    def __post_init__(self) -> None:
        if not self.live_size:
            object.__setattr__(self, "live_size", live_default(self.precision)[0])

    @property
    def warms_up(self) -> bool:
        """Does the app prepare its default models in the background at start-up (`warm_up`, else on a Space)?"""
        return warm_up_default() if self.warm_up is None else self.warm_up

    @property
    def server_name(self) -> str:
        """The address listened on (`from_args` resolves flag, VTDEMO_HOST, then GRADIO_SERVER_NAME)."""
        return self.host or "127.0.0.1"

    @property
    def server_port(self) -> int:
        """The port (`from_args` resolves flag, VTDEMO_PORT, then GRADIO_SERVER_PORT); 7860 by default."""
        return self.port or 7860

    @property
    def allow_typed_folders(self) -> bool:
        """May visitors type a local folder into a model picker? Only when the app is private to this machine
        (listening on localhost, no share link), unless VTDEMO_ALLOW_FOLDERS says otherwise: on a public server a
        typed path would let anyone probe the file system. Folders given by flag or variable always work."""
        if self.allow_folders is not None:
            return self.allow_folders
        return self.server_name in {"127.0.0.1", "localhost", "::1"} and not self.share

    def choices(self, family: str) -> list[str]:
        """The model picker's list for a family: the configured model first, then the known ones."""
        chosen = {"vit": self.vit_model, "swin": self.swin_model, "detr": self.detr_model}[family]
        known = list(pipeline.FAMILIES[family].known)
        return [chosen] + [m for m in known if m != chosen]


def parser() -> argparse.ArgumentParser:
    """`python app.py --help`: one flag per setting that has one (its variable and default in the help)."""
    p = argparse.ArgumentParser(prog="python app.py", description="vtdemo: see what vision transformers see.")
    for s in SETTINGS:
        if s.flag is None:
            continue
        text = f"{s.help} (env {s.env}; default {s.default_text})"
        if s.kind is bool:
            p.add_argument(s.flag, dest=s.name, action="store_true", default=None, help=text)
        else:
            p.add_argument(s.flag, dest=s.name, type=s.kind, choices=s.choices, help=text)
    return p


def _from_env(s: Setting) -> Any:
    """The variable's value (or its fallback's), parsed as the setting's kind; None when neither is set."""
    for name in (s.env, s.fallback):
        if name is None or env_text(name) is None:
            continue
        try:
            if s.kind is bool:
                return env_flag(name)
            if s.kind is int:
                return env_int(name, 0)
        except VtdemoError as exc:
            raise SystemExit(f"error: {exc}") from None
        value = (env_text(name) or "").strip()
        if s.choices:
            value = value.lower()
            if value not in s.choices:
                raise SystemExit(f"error: {name}={value!r}: choose from {', '.join(s.choices)}")
        return value or None
    return None


def _value(s: Setting, flags: argparse.Namespace) -> Any:
    """Flag, then variable, then default; an int outside its range is refused in one line."""
    value = getattr(flags, s.name, None)
    where = s.flag if value is not None else s.env  # what the refusal names: the flag or the variable given
    if value is None:
        value = _from_env(s)
    if value is None:
        value = s.default
    if s.kind is int and s.minimum is not None and value is not None and value != s.default and value < s.minimum:
        raise SystemExit(f"error: {where} must be at least {s.minimum}")
    if s.kind is int and s.maximum is not None and value is not None and value > s.maximum:
        raise SystemExit(f"error: {where} must be at most {s.maximum}")
    return value


def from_args(argv: Sequence[str] | None = None) -> AppConfig:
    """Flags, then environment variables, then defaults (`SETTINGS`)."""
    flags = parser().parse_args(argv)
    values = {s.name: _value(s, flags) for s in SETTINGS}
    values["port"] = values["port"] or None  # 0 = Gradio's default
    return AppConfig(**values)


def settings_table() -> str:
    """The Markdown table of every setting, as docs/deployment.md shows it (a test keeps the two equal)."""
    rows = ["| flag | variable | default | what |", "|---|---|---|---|"]
    for s in SETTINGS:
        flag = f"`{s.flag}`" if s.flag else ""
        env = f"`{s.env}`" + (f" (else `{s.fallback}`)" if s.fallback else "")
        rows.append(f"| {flag} | {env} | {s.default_text} | {s.help} |")
    return "\n".join(rows) + "\n"
