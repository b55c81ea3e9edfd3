"""The package's import layers, read from the source with `ast`: no import cycle, no upward import.

A study flows io -> data sources -> TFDS records -> preprocessing/models -> datasets/run -> tasks -> commands;
a module may import its own layer or any layer below, never one above. Imports inside functions count
(a lazy import still ties two modules together), and so does `importlib.import_module` of a module name
written in the source. Besides module cycles, the subpackages (`tfbonemet.io`, `tfbonemet.tasks.export`, ...)
may not import each other in a circle either.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("tfbonemet", "tfds_builders")

# bottom to top: module name prefixes of each layer (the longest matching prefix decides)
LAYERS = (
    ("base", ("tfbonemet.errors", "tfbonemet.vocab", "tfbonemet.progress", "tfbonemet.signals")),
    ("io", ("tfbonemet.io",)),
    ("data sources", ("tfbonemet.data",)),  # study records: phantom, DICOM/BS-80K/manifest sources, splits
    ("TFDS builders", ("tfds_builders",)),
    ("preprocessing/models", ("tfbonemet.preprocessing", "tfbonemet.models", "tfbonemet.metrics",
                              "tfbonemet.referral")),
    ("datasets/run", ("tfbonemet.data.datasets", "tfbonemet.data.pipeline", "tfbonemet.config",
                      "tfbonemet.execution", "tfbonemet.run")),
    ("tasks", ("tfbonemet.tasks",)),
    ("commands", ("tfbonemet.commands", "tfbonemet.cli", "=tfbonemet")),  # `=`: the package itself only
)

def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module an imported name lives in (`a.b.c` -> `a.b` when c is a function), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _dynamic_name(call: ast.Call) -> str | None:
    """The module name (or its literal start, before any `{...}`) given to importlib.import_module."""
    func = call.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module"
             or isinstance(func, ast.Name) and func.id == "import_module")
    if not named or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return arg.values[0].value.rstrip(".")
    return None


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_resolve(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.update(filter(None, [full if full in MODULES else _resolve(base)]))
        elif isinstance(node, ast.Call):
            name = _dynamic_name(node)
            if name:
                found.update(filter(None, [_resolve(name)]))
    found.discard(module)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact = prefix.startswith("=")
            prefix = prefix.lstrip("=")
            if (module == prefix or not exact and module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def _edges() -> set[tuple[str, str]]:
    return {(a, b) for a, targets in GRAPH.items() for b in targets}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _subpackage(module: str) -> str:
    """`tfbonemet.io.dicom` -> `tfbonemet.io`; tasks one level deeper (`tfbonemet.tasks.export`)."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[:2] == ["tfbonemet", "tasks"] else parts[:2])


def test_every_module_has_a_layer():
    assert len(MODULES) > 50 and "tfbonemet.io.dicom" in MODULES
    for module in MODULES:
        layer_of(module)


def test_no_upward_import():
    upward = sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                    for a, b in _edges() if layer_of(b) > layer_of(a))
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    for a, b in _edges():
        graph.setdefault(a, set()).add(b)
    assert not _cycles(graph), _cycles(graph)


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for a, b in _edges():
        if _subpackage(a) != _subpackage(b):
            graph.setdefault(_subpackage(a), set()).add(_subpackage(b))
    assert not _cycles(graph), _cycles(graph)


def test_the_checker_sees_lazy_and_dynamic_imports():
    """The layer rules would be blind without these: imports inside functions and import_module."""
    assert "tfbonemet.run" in GRAPH["tfbonemet"]  # tfbonemet.load_model imports run inside the function
    assert "tfds_builders" in GRAPH["tfbonemet.data.datasets"]  # importlib.import_module(f"tfds_builders.{...}")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
