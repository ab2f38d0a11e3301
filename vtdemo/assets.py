"""Where the package's data files are: the example photos (and their credits) that the app and the docs use.

The repository keeps them at the top level, `assets/examples/`, next to `app.py` (what a Hugging Face Space and the
README point at); a wheel carries the same files inside the package as `vtdemo/_assets/examples/` (pyproject.toml maps
the package `vtdemo._assets` to `assets/`). `assets_dir()` finds whichever is there, so the same call works from a
checkout (`python app.py`), an editable install (`pip install -e .`, which runs the checkout's files) and an
installed wheel (`pip install .`), from any working directory.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@lru_cache(maxsize=1)
def assets_dir() -> Path:
    """The directory holding `examples/`: `vtdemo/_assets` when installed from a wheel, else the checkout's `assets`.

    Raises FileNotFoundError (naming both places) when neither exists, e.g. a wheel built without its package data.
    """
    installed, checkout = _PACKAGE / "_assets", _PACKAGE.parent / "assets"
    for candidate in (installed, checkout):
        if (candidate / "examples" / "CREDITS.md").is_file():
            return candidate
    raise FileNotFoundError(
        f"vtdemo's example photos are missing: neither {installed} nor {checkout} holds "
        "examples/CREDITS.md; reinstall vtdemo"
    )


def examples_dir() -> Path:
    """The folder of example photos (`chelsea.png`, `coffee.png`, ...) and their `CREDITS.md`."""
    return assets_dir() / "examples"


def example_photos() -> list[Path]:
    """The example photos, sorted by name (only image files: the credits are left out)."""
    return sorted(p for p in examples_dir().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
