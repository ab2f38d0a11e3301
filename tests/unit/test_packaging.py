"""vtdemo as a package: pyproject.toml agrees with the requirements files, and a built wheel works once installed.

- Drift: requirements.txt (what a Space installs) must list exactly `[project] dependencies`, with the same ranges;
  requirements-dev.txt's own lines must all be in the `dev` extra (which adds only the local tools pre-commit and
  build); every package directory under vtdemo/ must be in `[tool.setuptools] packages`.
- The wheel (slow, ~30 s): built offline from a copy of the checkout (`pip wheel --no-deps --no-build-isolation`, so
  no network and nothing written into the checkout), installed into a fresh venv outside it, then run from another
  directory: `vtdemo --version`, `python -m vtdemo --version`, `vtdemo classify --json` on a tiny timm checkpoint
  folder, and the example photos found inside the installed package. The same for an editable install.

The fresh venv is made with `--without-pip` and gets the wheel through this interpreter's pip (`pip --python`), with
`--no-deps`; a `.pth` file then appends this environment's site-packages, so torch & co. (2 GB) are reused instead of
re-installed. `--system-site-packages` would not do: the tests usually run inside a venv, and that flag exposes the
base interpreter's site-packages, not this venv's. The venv's own site-packages comes first on sys.path, so `vtdemo`
is imported from the installed wheel (the test checks where it came from).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCAL_TOOLS = {"pre-commit", "build"}  # in the dev extra for contributors, not needed by the tests or CI


def _requirements(path: Path) -> dict[str, Requirement]:
    """name -> Requirement for each requirement line of a requirements file (comments and `-r` includes skipped)."""
    out: dict[str, Requirement] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        out[canonicalize_name(req.name)] = req
    return out


def _by_name(lines: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def _same(a: Requirement, b: Requirement) -> bool:
    return (a.specifier, a.extras, a.marker and str(a.marker)) == (b.specifier, b.extras, b.marker and str(b.marker))


def test_requirements_txt_is_exactly_the_runtime_dependencies():
    runtime = _requirements(ROOT / "requirements.txt")
    declared = _by_name(PYPROJECT["project"]["dependencies"])
    assert sorted(runtime) == sorted(declared), "requirements.txt and [project] dependencies name different packages"
    differ = {n: (str(runtime[n]), str(declared[n])) for n in runtime if not _same(runtime[n], declared[n])}
    assert not differ, f"ranges differ (requirements.txt, pyproject.toml): {differ}"


def test_requirements_dev_txt_is_in_the_dev_extra():
    dev_file = _requirements(ROOT / "requirements-dev.txt")
    dev_extra = _by_name(PYPROJECT["project"]["optional-dependencies"]["dev"])
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    assert sorted(dev_file) == sorted(set(dev_extra) - LOCAL_TOOLS), "requirements-dev.txt and the dev extra drift"
    differ = {n: (str(dev_file[n]), str(dev_extra[n])) for n in dev_file if not _same(dev_file[n], dev_extra[n])}
    assert not differ, f"ranges differ (requirements-dev.txt, pyproject.toml dev extra): {differ}"


def test_every_package_directory_is_listed_and_the_version_has_one_home():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vtdemo").rglob("__init__.py")}
    missing = sorted(on_disk - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml (else the wheel lacks them)"
    assert sorted(listed - on_disk) == ["vtdemo._assets"]  # the one mapped package: assets/ -> vtdemo/_assets
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"vtdemo._assets": "assets"}
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vtdemo.__version__"}


def _source_version() -> str:
    tree = ast.parse((ROOT / "vtdemo" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            return str(ast.literal_eval(node.value))
    raise AssertionError("vtdemo/__init__.py has no literal __version__")


# --- the built wheel, installed ---------------------------------------------------------------------------------


def _copy_source(dest: Path) -> Path:
    """What a source distribution holds: pyproject, README, the package and its assets (no caches, no tests)."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi", "*.egg-info")
    for name in ("vtdemo", "assets"):
        shutil.copytree(ROOT / name, dest / name, ignore=junk)
    return dest


def _fresh_venv(path: Path) -> Path:
    """A new venv without pip whose sys.path ends with this environment's site-packages (torch, gradio, ...)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_vtdemo_test_shared_deps.pth").write_text("\n".join(sorted(shared)) + "\n")
    return python


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--quiet",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _run(exe: Path, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory) -> dict[str, str]:
    """The environment for commands run 'elsewhere': no PYTHONPATH, offline, an empty Hub cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path_factory.mktemp("hub")), HF_HUB_DISABLE_TELEMETRY="1")
    return env


@pytest.fixture(scope="module")
def tiny_vit_folder(tmp_path_factory) -> Path:
    """A tiny timm ViT (32 px, 1000 classes) saved as timm writes it for the Hub: config.json + model.safetensors."""
    timm = pytest.importorskip("timm")
    import torch
    from timm.models._hub import save_for_hf

    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000, **args).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    folder = tmp_path_factory.mktemp("tiny-vit")
    save_for_hf(model, str(folder), safe_serialization=True, model_args=args)
    return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the venv's python, its bin folder, the wheel): a wheel built from a copy of the checkout, installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_source(tmp / "src")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp / "dist").glob("vtdemo-*.whl")
    python = _fresh_venv(tmp / "venv")
    _pip(python, str(wheel))
    shutil.rmtree(src)  # nothing may come from the build tree
    return python, python.parent, wheel


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_its_photos_and_nothing_else(installed):
    _, _, wheel = installed
    version = _source_version()
    assert wheel.name == f"vtdemo-{version}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert all(n.startswith(("vtdemo/", f"vtdemo-{version}.dist-info/")) for n in names), names
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "vtdemo").rglob("*.py")}
    assert sources <= set(names), f"missing from the wheel: {sorted(sources - set(names))}"
    photos = {f"vtdemo/_assets/examples/{p.name}" for p in (ROOT / "assets" / "examples").iterdir() if p.is_file()}
    assert photos and photos <= set(names)
    metadata = zipfile.ZipFile(wheel).read(f"vtdemo-{version}.dist-info/METADATA").decode()
    assert "Requires-Python: >=3.10" in metadata and "Requires-Dist: torch>=2.4" in metadata
    entry_points = zipfile.ZipFile(wheel).read(f"vtdemo-{version}.dist-info/entry_points.txt").decode()
    assert "vtdemo = vtdemo.cli:main" in entry_points


@pytest.mark.slow
def test_installed_commands_work_from_another_directory(installed, tiny_vit_folder, clean_env, tmp_path):
    python, bin_dir, _ = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    version = _source_version()
    for exe, args in ((bin_dir / "vtdemo", ()), (python, ("-m", "vtdemo"))):
        proc = _run(exe, *args, "--version", cwd=elsewhere, env=clean_env)
        assert proc.returncode == 0 and proc.stdout.strip() == f"vtdemo {version}", proc.stdout + proc.stderr

    where = _run(
        python,
        "-c",
        "import json, vtdemo, vtdemo.assets as a; print(json.dumps([vtdemo.__file__, "
        "str(a.examples_dir()), [p.name for p in a.example_photos()]]))",
        cwd=elsewhere,
        env=clean_env,
    )
    assert where.returncode == 0, where.stderr
    module_file, examples, photos = json.loads(where.stdout)
    venv = python.parent.parent
    assert Path(module_file).is_relative_to(venv) and Path(examples).is_relative_to(venv)
    checkout_photos = sorted(p for p in (ROOT / "assets" / "examples").iterdir() if p.suffix in (".png", ".jpg"))
    assert photos == [p.name for p in checkout_photos]
    for p in checkout_photos:  # the same bytes as the checkout's
        assert (Path(examples) / p.name).read_bytes() == p.read_bytes()

    image = str(Path(examples) / "chelsea.png")
    proc = _run(
        bin_dir / "vtdemo",
        "classify",
        "--json",
        "--top-k",
        "3",
        "--model",
        str(tiny_vit_folder),
        image,
        cwd=elsewhere,
        env=clean_env,
    )
    assert proc.returncode == 0, proc.stderr
    (got,) = json.loads(proc.stdout)
    # the installed copy answers exactly as this checkout's API does on the same folder and photo
    import vtdemo

    want = vtdemo.classify(image, model=str(tiny_vit_folder), top_k=3).to_dict()
    assert got["image"] == image and [p["index"] for p in got["predictions"]] == [
        p["index"] for p in want["predictions"]
    ]
    assert [p["label"] for p in got["predictions"]] == [p["label"] for p in want["predictions"]]
    assert [p["score"] for p in got["predictions"]] == pytest.approx(
        [p["score"] for p in want["predictions"]], abs=1e-5
    )


@pytest.mark.slow
def test_editable_install_runs_the_source_and_finds_its_photos(tmp_path, clean_env):
    src = _copy_source(tmp_path / "src")
    python = _fresh_venv(tmp_path / "venv")
    _pip(python, "-e", str(src))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _run(
        python,
        "-c",
        "import json, vtdemo, vtdemo.assets as a; print(json.dumps([vtdemo.__file__, str(a.examples_dir())]))",
        cwd=elsewhere,
        env=clean_env,
    )
    assert proc.returncode == 0, proc.stderr
    module_file, examples = json.loads(proc.stdout)
    assert Path(module_file) == src / "vtdemo" / "__init__.py" and Path(examples) == src / "assets" / "examples"
    proc = _run(python.parent / "vtdemo", "--version", cwd=elsewhere, env=clean_env)
    assert proc.returncode == 0 and proc.stdout.strip() == f"vtdemo {_source_version()}"


@pytest.mark.slow
def test_installed_app_draws_its_figures_from_the_installed_photos(installed, clean_env, tmp_path):
    python, _, _ = installed
    proc = _run(
        python, "-c", "from vtdemo.ui import howto; print(sorted(howto.figures()))", cwd=tmp_path, env=clean_env
    )
    assert proc.returncode == 0, proc.stderr
