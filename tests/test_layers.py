"""The house's layout: imports point one way (cli → flow → domain → io → nouns), no import cycle,
no module over ~450 lines, each module's first line says its one job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "stylecore")
MAX_LINES = 450
# Each flows/ module's layer; an import may point to its own layer or a lower one.
LAYERS = {
    "flows.cli": 4,  # the command line
    "flows.batch": 3,  # the Prefect flow and its tasks
    "flows.shards": 3,
    "flows.tasks": 3,
    "flows.clips": 3,
    "flows.prepare": 2,  # the domain: what a run does, without Prefect's orchestration
    "flows.featurecache": 2,
    "flows.outputs": 2,
    "flows.oom": 2,
    "flows.report": 2,
    "flows.artifacts": 2,
    "flows.contactsheet": 2,
    "flows.devices": 2,
    "flows.events": 2,
    "flows.manifest": 1,  # io
    "flows.storage": 1,
    "flows.model": 0,  # nouns and names, no I/O
    "flows.uri": 0,
    "flows": 0,
}


def modules() -> dict[str, Path]:
    """Every module of our packages by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Our modules that `path` imports anywhere in it, inside functions too: a lazy import is
    still an edge, so one that would close a cycle is found."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in submodules if t in known] or [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
    return edges


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, name, set(found)) for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def layer(name: str) -> int:
    while name not in LAYERS:
        name = name.rpartition(".")[0]
    return LAYERS[name]


def test_the_cycle_finder_finds_a_cycle_and_lazy_imports_count(tmp_path):
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    lazy = tmp_path / "m.py"
    lazy.write_text("def f():\n    from flows.batch import run_batch\n")
    assert imports(lazy, "flows.shards", {"flows.batch", "flows.shards"}) == {"flows.batch"}
    several = tmp_path / "n.py"
    several.write_text("from flows import storage, uri\nfrom flows.cli import EXIT_OK\n")
    known = {"flows", "flows.storage", "flows.uri", "flows.cli", "flows.cli.run"}
    assert imports(several, "flows.cli.run", known) == {"flows.storage", "flows.uri", "flows.cli"}


def test_no_import_cycle_in_flows_or_stylecore():
    assert find_cycle(graph()) is None


def test_flows_imports_point_down_the_layers():
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in graph().items()
        if a.startswith("flows")
        for b in targets
        if b.startswith("flows") and layer(b) > layer(a)
    ]
    assert upward == []


def test_stylecore_imports_neither_prefect_nor_boto3_nor_flows():
    for name, path in modules().items():
        if name.startswith("stylecore"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                    names.append(getattr(node, "module", None) or "")
                    for imported in names:
                        assert not imported.startswith(("prefect", "boto3", "botocore", "flows"))


@pytest.mark.parametrize("name", sorted(modules()))
def test_each_module_is_small_and_says_its_job_first(name):
    path = modules()[name]
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"{path.relative_to(ROOT)}: {len(lines)} lines"
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and doc.splitlines()[0].strip(), f"{path.relative_to(ROOT)}: no docstring"
