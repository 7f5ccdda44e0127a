"""The architecture as the imports show it: dlscope's modules and packages in layers, each importing
only from layers below its own (and from its own unit), so the graph has no cycles and no upward
arrows. Read statically from the source (every import, lazy ones inside functions too)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import dlscope

ROOT = Path(dlscope.__file__).parent

# low to high; a unit is a top-level module or package of dlscope
LAYERS = [
    {"errors", "files", "losses", "adam", "findings"},
    {"models", "store"},
    {"data", "flat_mlp"},
    {"analysis"},
    {"engine"},
    {"experiments"},
    {"executors", "progress"},
    {"runner", "report"},
    {"analyze"},
    {"cli"},
    {"__main__"},
]
LEVEL = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit(module: str) -> str:
    """dlscope.X.Y -> X; the package itself (dlscope, its __init__: the version) -> "dlscope"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] not in ("__init__", "__version__") else "dlscope"


def imports() -> dict[str, set[tuple[str, str]]]:
    """{unit: {(imported unit, file that imports it)}} between different units."""
    edges: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                if node.module:
                    targets = [".".join([*base, node.module])]
                else:
                    targets = [".".join([*base, a.name]) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dlscope"):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("dlscope")]
            for t in targets:
                if unit(t) != unit(module):
                    edges[unit(module)].add((unit(t), str(path.relative_to(ROOT))))
    return edges


def test_every_unit_has_a_layer():
    units = {unit(".".join(p.relative_to(ROOT.parent).with_suffix("").parts)) for p in ROOT.glob("*.py")}
    units |= {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert units - {"dlscope"} <= set(LEVEL), f"put these in a layer: {sorted(units - {'dlscope'} - set(LEVEL))}"


def test_imports_only_point_down():
    up = [
        f"{where}: {src} (layer {LEVEL[src]}) imports {dst} (layer {LEVEL[dst]})"
        for src, targets in imports().items()
        for dst, where in sorted(targets)
        if dst != "dlscope" and LEVEL[dst] >= LEVEL[src]
    ]
    assert not up, "\n".join(up)


def test_the_graph_finds_a_known_arrow():
    """The reader itself works: the runner does import the executors, and analysis no engine."""
    edges = imports()
    assert "executors" in {dst for dst, _ in edges["runner"]}
    assert "engine" not in {dst for dst, _ in edges["analysis"]}
