"""The app's settings: which models, where to listen, and the limits that protect the host. No Gradio here.

Every setting has a command-line flag (`python app.py --help`) and an environment variable, so that a Hugging Face
Space (which runs `python app.py` with no arguments) is configured through its variables. Flags win over variables,
variables over the defaults.

| flag | variable | default |
|---|---|---|
| `--vit-model` | `VTDEMO_VIT_MODEL` | `DEFAULT_VIT` |
| `--swin-model` | `VTDEMO_SWIN_MODEL` | `DEFAULT_SWIN` |
| `--detr-model` | `VTDEMO_DETR_MODEL` | `DEFAULT_DETR` |
| `--host` | `VTDEMO_HOST` (else Gradio's `GRADIO_SERVER_NAME`) | 127.0.0.1 |
| `--port` | `VTDEMO_PORT` (else `GRADIO_SERVER_PORT`) | 7860 |
| `--share` | `VTDEMO_SHARE=1` | off: no public link |
| `--max-file-size` | `VTDEMO_MAX_FILE_SIZE` | 20mb per upload |
| `--queue-size` | `VTDEMO_QUEUE_SIZE` | 32 waiting requests, then "busy, try again" |
| `--concurrency` | `VTDEMO_CONCURRENCY` | 1 model call at a time (2-core CPU) |
| `--cache-mb` | `VTDEMO_CACHE_MB` | 2048 MiB for all visitors' cached runs together (least recently used go) |
| `--max-sessions` | `VTDEMO_MAX_SESSIONS` | 1000 sessions whose state Gradio keeps (~0.3 MB each; oldest go first) |
| `--live-size` | `VTDEMO_LIVE_SIZE` | 320 at precision fast, 256 exact (256 on a CPU without AVX-512): the webcam's fixed DETR input short side (`live_default`) |
| `--webcam-limit` | `VTDEMO_WEBCAM_LIMIT` | 300 s of processing per webcam session |
| | `VTDEMO_WEBCAM_SESSIONS` | 2 webcam streams at once (others wait in the queue) |
| `--precision` | `VTDEMO_PRECISION` | fast: the fast engine (`vtdemo.engine`), exact = fp32 PyTorch everywhere |
| `--device` | `VTDEMO_DEVICE` | CUDA, then MPS, then CPU (`vtdemo.device.pick_device`) |
| | `VTDEMO_ALLOW_FOLDERS` | typed local folders in the pickers: allowed only on localhost without `--share` |
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from .. import pipeline
from ..errors import VtdemoError
from ..settings import env_flag, env_int, env_text

LIVE_SIZES = (256, 320, 384, 480, 640, 800)
#: The webcam's default DETR short side per precision on a CPU with AVX-512 (`LIVE_SLOW_CPU` without), and why
#: (README "Webcam input size" has the measurements).
LIVE_DEFAULTS = {"fast": 320, "exact": 256}
LIVE_WHY = {
    "fast": "measured on an idle 2-core AMD EPYC with AVX-512, the fast path runs DETR-R50 webcam frames at 6.5 "
    "frames/s at 320 px, 4.4 at 384 and 3.2 at 480: 320 px is the largest size above the 5 frames/s a live view needs",
    "exact": "measured on an idle 2-core AMD EPYC with AVX-512, the exact PyTorch path runs DETR-R50 webcam frames at "
    "6.3 frames/s at 256 px, 4.8 at 320 and 3.4 at 384: 256 px is the largest size above 5 frames/s",
}
#: Without AVX-512 (AVX2 only) every size is slower: the smallest offered size, and why.
LIVE_SLOW_CPU = (
    256,
    "this CPU has no AVX-512; measured on an idle 2-core AVX2-only AMD EPYC, the fast path runs DETR-R50 webcam "
    "frames at 4.6 frames/s at 256 px and 3.5 at 320 (the exact path 3.2 and 2.7): 256 px, the smallest offered "
    "size, is the closest to a live 5 frames/s",
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


def _env_int(name: str, default: int) -> int:
    try:
        return env_int(name, default)
    except VtdemoError as exc:
        raise SystemExit(f"error: {exc}") from None


@dataclass(frozen=True)
class AppConfig:
    """What the app runs and how. Models are repo ids (`org/name[@revision]`) or local folders."""

    vit_model: str = pipeline.DEFAULT_VIT
    swin_model: str = pipeline.DEFAULT_SWIN
    detr_model: str = pipeline.DEFAULT_DETR
    host: str | None = None  # None: Gradio's default (GRADIO_SERVER_NAME or 127.0.0.1)
    port: int | None = None  # None: GRADIO_SERVER_PORT or 7860 (the next free one)
    share: bool = False
    max_file_size: str = "20mb"
    queue_size: int = 32
    concurrency: int = 1
    cache_mb: int = 2048
    max_sessions: int = 1000
    live_size: int = 0  # 0: this precision's default on this CPU (`live_default`)
    webcam_limit: int = 300
    webcam_sessions: int = 2
    device: str | None = None
    precision: str = "fast"  # "fast" (vtdemo.engine) or "exact" (fp32 PyTorch); gradient methods always run exact
    allow_folders: bool | None = None  # None: only on a private server (see `allow_typed_folders`)

    def __post_init__(self) -> None:
        if not self.live_size:
            object.__setattr__(self, "live_size", live_default(self.precision)[0])

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


def _env_precision() -> str:
    value = (env_text("VTDEMO_PRECISION") or "fast").strip().lower()
    if value not in pipeline.PRECISIONS:
        raise SystemExit(f"error: VTDEMO_PRECISION={value!r}: choose from {', '.join(pipeline.PRECISIONS)}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description="vtdemo: see what vision transformers see.")
    p.add_argument(
        "--vit-model", help=f"ViT/DeiT repo id or folder (env VTDEMO_VIT_MODEL; default {pipeline.DEFAULT_VIT})"
    )
    p.add_argument(
        "--swin-model", help=f"Swin repo id or folder (env VTDEMO_SWIN_MODEL; default {pipeline.DEFAULT_SWIN})"
    )
    p.add_argument(
        "--detr-model", help=f"DETR repo id or folder (env VTDEMO_DETR_MODEL; default {pipeline.DEFAULT_DETR})"
    )
    p.add_argument("--host", help="address to listen on (env VTDEMO_HOST; default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, help="port (env VTDEMO_PORT; default 7860)")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    p.add_argument("--max-file-size", help="largest upload, e.g. 20mb (env VTDEMO_MAX_FILE_SIZE)")
    p.add_argument("--queue-size", type=int, help="requests allowed to wait before 'busy' (env VTDEMO_QUEUE_SIZE; 32)")
    p.add_argument("--concurrency", type=int, help="model calls run at once (env VTDEMO_CONCURRENCY; 1)")
    p.add_argument(
        "--cache-mb", type=int, help="memory for all visitors' cached runs together, in MiB (env VTDEMO_CACHE_MB; 2048)"
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        help="sessions whose state Gradio keeps, oldest forgotten first (env VTDEMO_MAX_SESSIONS; 1000)",
    )
    p.add_argument(
        "--live-size",
        type=int,
        help="webcam: DETR input short side in px, fixed (env VTDEMO_LIVE_SIZE; 320 at precision fast, 256 exact)",
    )
    p.add_argument(
        "--webcam-limit", type=int, help="webcam: seconds of processing per session (env VTDEMO_WEBCAM_LIMIT; 300)"
    )
    p.add_argument("--device", help="cuda, mps or cpu (env VTDEMO_DEVICE; default: the best available)")
    p.add_argument(
        "--precision",
        choices=pipeline.PRECISIONS,
        help="fast: optimized engine (OpenVINO on CPU) for forward passes; exact: fp32 PyTorch for everything "
        "(env VTDEMO_PRECISION; default fast; gradient methods always run exact)",
    )
    return p


def from_args(argv: Sequence[str] | None = None) -> AppConfig:
    """Flags, then environment variables, then defaults."""
    a = parser().parse_args(argv)
    port = a.port if a.port is not None else _env_int("VTDEMO_PORT", 0) or _env_int("GRADIO_SERVER_PORT", 0)
    folders = env_text("VTDEMO_ALLOW_FOLDERS")
    precision = a.precision or _env_precision()
    live_size = a.live_size if a.live_size is not None else _env_int("VTDEMO_LIVE_SIZE", live_default(precision)[0])
    cfg = AppConfig(
        vit_model=a.vit_model or env_text("VTDEMO_VIT_MODEL", pipeline.DEFAULT_VIT) or pipeline.DEFAULT_VIT,
        swin_model=a.swin_model or env_text("VTDEMO_SWIN_MODEL", pipeline.DEFAULT_SWIN) or pipeline.DEFAULT_SWIN,
        detr_model=a.detr_model or env_text("VTDEMO_DETR_MODEL", pipeline.DEFAULT_DETR) or pipeline.DEFAULT_DETR,
        host=a.host or env_text("VTDEMO_HOST") or env_text("GRADIO_SERVER_NAME"),
        port=port or None,
        share=a.share or env_flag("VTDEMO_SHARE"),
        allow_folders=None if folders is None else env_flag("VTDEMO_ALLOW_FOLDERS"),
        max_file_size=a.max_file_size or env_text("VTDEMO_MAX_FILE_SIZE", "20mb") or "20mb",
        queue_size=a.queue_size if a.queue_size is not None else _env_int("VTDEMO_QUEUE_SIZE", 32),
        concurrency=a.concurrency if a.concurrency is not None else _env_int("VTDEMO_CONCURRENCY", 1),
        cache_mb=a.cache_mb if a.cache_mb is not None else _env_int("VTDEMO_CACHE_MB", 2048),
        max_sessions=a.max_sessions if a.max_sessions is not None else _env_int("VTDEMO_MAX_SESSIONS", 1000),
        live_size=live_size,
        webcam_limit=a.webcam_limit if a.webcam_limit is not None else _env_int("VTDEMO_WEBCAM_LIMIT", 300),
        webcam_sessions=_env_int("VTDEMO_WEBCAM_SESSIONS", 2),
        device=a.device or env_text("VTDEMO_DEVICE"),
        precision=precision,
    )
    if cfg.max_sessions < 1:
        raise SystemExit("error: --max-sessions must be at least 1")
    if cfg.cache_mb < 0:
        raise SystemExit("error: --cache-mb must be 0 or more (0: keep only the newest run)")
    if live_size < 64:
        raise SystemExit("error: --live-size must be at least 64 pixels")
    return cfg
