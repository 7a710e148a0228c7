"""The layering of ``src/lifelong``, checked on the source: every ``.py`` file is parsed with ``ast``
(nothing is imported) and every ``import`` / ``from ... import`` counts, at module level, inside
functions and under ``if TYPE_CHECKING:`` alike.

Imports point down the layers and never run in a circle: a module imports from a lower layer or from
its own package (its top-level name under ``src/lifelong``), never from a higher layer and never from
another package of its own layer. Anything two layers share lives in the lower one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"

#: Layer of each top-level module or package of ``lifelong``, lowest first. ``lifelong`` is the public
#: facade, ``lifelong/__init__.py`` and ``lifelong/__main__.py``.
LAYERS = {
    "errors": 0, "lazy": 0,
    "bounds": 1, "config": 1, "metrics": 1, "world": 1,
    "models": 2, "data": 2,
    "optim": 3, "strategies": 3,
    "runner": 4,
    "experiment": 5,
    "protocol": 6, "report": 6, "tta": 6,
    "cli": 7,
    "lifelong": 8,
}

def modules(source: Path) -> dict[str, tuple[Path, bool]]:
    """Every module under ``source/lifelong``: dotted name -> (file, is a package ``__init__``)."""
    found = {}
    for path in sorted((source / "lifelong").rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _resolve(name: str, known: dict[str, tuple[Path, bool]]) -> str:
    """The longest prefix of ``name`` that is a module (``lifelong.x.y`` of ``from lifelong.x import y``
    when ``y`` is a module, else ``lifelong.x``)."""
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts)


def import_graph(source: Path) -> dict[str, dict[str, int]]:
    """module -> {imported lifelong module: line of the first such import}."""
    known = modules(source)
    graph: dict[str, dict[str, int]] = {}
    for module, (path, package) in known.items():
        edges = graph.setdefault(module, {})
        here = module.split(".") if package else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "lifelong" or target.startswith("lifelong."):
                    resolved = _resolve(target, known)
                    if resolved != module:
                        edges.setdefault(resolved, node.lineno)
    return graph


def unit(module: str) -> str:
    """The top-level package or module a module belongs to (``lifelong`` for the facade)."""
    parts = module.split(".")
    return "lifelong" if len(parts) == 1 or parts[1] == "__main__" else parts[1]


def circles(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """Every group of two or more modules that import each other in a circle (a strongly connected
    component of the graph)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group: set[str] = set()
                    while True:
                        member = stack.pop()
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(graph.get(child, {})))))
            elif child in stack:
                low[node] = min(low[node], index[child])

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One closed path ``[a, b, ..., a]`` per circle of modules."""
    return [_closed_path(graph, group) for group in circles(graph)]


def _closed_path(graph: dict[str, dict[str, int]], group: set[str]) -> list[str]:
    """A shortest cycle through the group's first module, staying inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, {})):
                if child == start:
                    return [*paths[node], start]
                if child in group and child not in paths:
                    paths[child] = [*paths[node], child]
                    following.append(child)
        frontier = following
    return sorted(group)  # unreachable for a strongly connected group


def violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """``a -> b`` for every import of a higher layer or of another package of the same layer."""
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            here, there = unit(module), unit(target)
            if here not in LAYERS or there not in LAYERS:
                continue  # test_every_module_has_a_layer names it
            if here == there or LAYERS[there] < LAYERS[here]:
                continue
            why = "a higher layer" if LAYERS[there] > LAYERS[here] else "another package of the same layer"
            found.append(f"{module} -> {target} (line {line}: {here} imports {why}, {there})")
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph(SOURCE)


def test_every_module_has_a_layer(graph) -> None:
    missing = sorted({unit(module) for module in graph} - set(LAYERS))
    assert not missing, f"add these top-level modules or packages of lifelong to LAYERS: {missing}"


def test_no_import_cycles(graph) -> None:
    found = circles(graph)
    assert not found, "import cycles:\n" + "\n".join(
        f"{len(group)} modules {', '.join(sorted(group))}, e.g. {' -> '.join(_closed_path(graph, group))}"
        for group in found)


def test_imports_point_down_the_layers(graph) -> None:
    found = violations(graph)
    assert not found, "imports against the layers (a -> b):\n" + "\n".join(found)


def test_the_checks_see_every_kind_of_import(tmp_path) -> None:
    """The walker on a made-up package: imports in functions, under TYPE_CHECKING, relative ones and
    ones of the facade all count."""
    files = {
        "__init__.py": "from lifelong.runner import train\n",
        "errors.py": "",
        "cli.py": "",
        "config.py": "def f():\n    from lifelong import train\n",  # the facade, from a function
        "data/__init__.py": "from . import streams\n",
        "data/streams.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .validation import check\n",
        "data/validation.py": "import lifelong.data.streams\nfrom lifelong.models import nets\n",
        "models/__init__.py": "",
        "models/nets.py": "from lifelong.errors import Error\n",
        "runner/__init__.py": "from lifelong.runner.loop import train\n",
        "runner/loop.py": "def train():\n    import lifelong.cli\n",
    }
    for name, text in files.items():
        (tmp_path / "lifelong" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "lifelong" / name).write_text(text)
    made_up = import_graph(tmp_path)
    assert made_up["lifelong.data"] == {"lifelong.data.streams": 1}
    assert made_up["lifelong.data.validation"] == {"lifelong.data.streams": 1, "lifelong.models.nets": 2}
    assert cycles(made_up) == [["lifelong.data.streams", "lifelong.data.validation", "lifelong.data.streams"]]
    assert [v.split(" (")[0] for v in violations(made_up)] == [
        "lifelong.config -> lifelong", "lifelong.data.validation -> lifelong.models.nets",
        "lifelong.runner.loop -> lifelong.cli"]
