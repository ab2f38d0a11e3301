"""The package's layering, read from the source with `ast` (every import: module level, inside functions and under
TYPE_CHECKING): no import cycles between vtdemo's modules, no private name imported from another module, and the
app (`vtdemo/ui/`) imports only vtdemo's public face (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vtdemo"
#: What the UI may import of vtdemo besides its own modules (issue 20: the public face).
UI_ALLOWED = {
    "vtdemo",
    "vtdemo.pipeline",
    "vtdemo.render",
    "vtdemo.errors",
    "vtdemo.settings",
    "vtdemo.checks",
    "vtdemo.assets",
    "vtdemo.labels",
}


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package (a package is its __init__.py)."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an `ImportFrom` names (resolving `from .x import` / `from .. import`)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of a dotted name that is one of our modules."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """(module -> the vtdemo modules it imports, [(importer, module, private name)] of `_name`s imported across)."""
    edges: dict[str, set[str]] = defaultdict(set)
    private = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
                edges[module].update(_owner(t, modules) for t in targets if t.split(".")[0] == "vtdemo")
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, path.name == "__init__.py", node)
                if base.split(".")[0] != "vtdemo":
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in modules:  # `from package import submodule`
                        edges[module].add(full)
                        continue
                    owner = _owner(base, modules)
                    edges[module].add(owner)
                    if alias.name.startswith("_") and not alias.name.startswith("__") and owner != module:
                        private.append((module, owner, alias.name))
        edges[module].discard(module)
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = module_files()
    edges, private = import_graph(modules)
    return modules, edges, private


def test_the_reader_sees_what_python_sees(tmp_path):
    """The graph reader itself, on a small hand-made package: relative imports at each level, `from pkg import
    submodule`, imports inside functions and under TYPE_CHECKING, a cycle, a private name."""
    pkg = tmp_path / "vtdemo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\nfrom .sub import c\n")
    (pkg / "b.py").write_text("def f():\n    from .a import thing\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b import _hidden\nimport vtdemo.a\n"
    )
    modules = module_files(pkg)
    edges, private = import_graph(modules)
    assert edges["vtdemo.a"] == {"vtdemo.b", "vtdemo.sub.c"}
    assert edges["vtdemo.b"] == {"vtdemo.a"}
    assert edges["vtdemo.sub.c"] == {"vtdemo.b", "vtdemo.a"}
    assert private == [("vtdemo.sub.c", "vtdemo.b", "_hidden")]
    assert cycles(edges) == [["vtdemo.a", "vtdemo.b", "vtdemo.sub.c"]]


def test_no_import_cycles(graph):
    _, edges, _ = graph
    assert cycles(edges) == []


def test_no_private_names_across_modules(graph):
    _, _, private = graph
    assert private == [], "a name another module needs is part of its owner's interface: drop the underscore"


def test_the_app_imports_only_the_public_face(graph):
    _, edges, _ = graph
    reached = {
        (module, target)
        for module, targets in edges.items()
        if module.startswith("vtdemo.ui")
        for target in targets
        if not target.startswith("vtdemo.ui") and target not in UI_ALLOWED
    }
    assert reached == set(), "the UI goes through vtdemo.pipeline (docs/architecture.md)"


def test_hub_does_not_reach_up_to_the_engine(graph):
    _, edges, _ = graph
    assert not {t for t in edges["vtdemo.hub"] if t.startswith("vtdemo.engine")}
    assert "vtdemo.hub" in edges["vtdemo.loader"] and "vtdemo.engine" in edges["vtdemo.loader"]
