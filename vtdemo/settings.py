"""The library's settings from environment variables, parsed in one place and read when they are used (not at
import), so that a script or a test can change them before a call.

| variable | default | what |
|---|---|---|
| `VTDEMO_MAX_PIXELS` | 40,000,000 | largest image accepted (checked from the header before decoding) |
| `VTDEMO_MODEL_CACHE` | 12 | loaded models kept per process (beside the memory budget, `vtdemo.loader`) |
| `VTDEMO_DEVICE` | (best available) | cuda, mps or cpu |
| `VTDEMO_AUTOCAST` | 1 | fp16 autocast on CUDA (0 turns it off) |
| `VTDEMO_ENGINE_CACHE` | next to the Hub cache | where the fast engine keeps converted models (`vtdemo.engine.cache`) |
| `VTDEMO_FAST_ENGINE`, `VTDEMO_FAST_DTYPE` | (chosen per device) | force the fast engine / its dtype |
| `HF_HUB_OFFLINE`, `HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT` | | as huggingface_hub reads them |

The app's own settings (models, host, limits) are `vtdemo.ui.config.AppConfig`, read once at start-up.
"""

from __future__ import annotations

import os

from .errors import VtdemoError

#: The precisions a model runs at: exact (fp32 PyTorch, parity-tested) or fast (`vtdemo.engine`).
PRECISIONS = ("exact", "fast")

TRUE = frozenset({"1", "true", "yes", "on"})


def env_flag(name: str, default: bool = False) -> bool:
    """A yes/no variable: 1 / true / yes / on (any case) is yes, anything else set is no, unset is `default`."""
    value = os.environ.get(name)
    return default if value in (None, "") else value.strip().lower() in TRUE


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    """A whole-number variable (unset: `default`); a value that is not one raises a one-line `VtdemoError`."""
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise VtdemoError(f"{name}={value!r} is not a whole number") from None
    if minimum is not None and number < minimum:
        raise VtdemoError(f"{name}={value!r} must be at least {minimum}")
    return number


def env_text(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value
