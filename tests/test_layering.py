"""The package is a stack: no import cycle, and no import from a lower layer to a higher one.

Every `import vppo...` / `from vppo... import` in src/vppo counts, those inside functions too (a lazy
import is still a dependency). Run alone with `pytest tests/test_layering.py`; docs/architecture.md
draws the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import its own layer's packages only where listed as allowed below,
# and any lower layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("vppo._tensor_checks",),
    ("vppo.algorithm", "vppo.perception"),
    ("vppo.rewards",),
    ("vppo.data",),
    ("vppo.models",),
    ("vppo.trainer", "vppo.evaluation"),
    ("vppo.analysis",),
    ("vppo.toy",),
    # Entry points: the dispatcher (it imports its subcommands by name) and the old import paths.
    ("vppo", "vppo.cli", "vppo.demo", "vppo.compare", "vppo.warmstart", "vppo.plan"),
)
# The pure-torch core and what it may import from outside the standard library.
PURE = ("vppo._tensor_checks", "vppo.algorithm", "vppo.perception")
PURE_THIRD_PARTY = {"torch", "numpy", "PIL"}
SHIMS = ("vppo.demo", "vppo.compare", "vppo.warmstart", "vppo.plan")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules `path` imports (from-imports of a package count as the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; vppo uses absolute imports"
            names.add(node.module)
    return names


MODULES = {_module_name(p): _imports(p) for p in sorted((SRC / "vppo").rglob("*.py"))}


def _package(module: str) -> str:
    """The layer entry a module belongs to: vppo.trainer.cli -> vppo.trainer, vppo.cli -> vppo.cli."""
    parts = module.split(".")
    return module if len(parts) == 1 else ".".join(parts[:2])


def _layer(package: str) -> int:
    for index, members in enumerate(LAYERS):
        if package in members:
            return index
    raise AssertionError(f"{package} is in no layer of tests/test_layering.py: add it to LAYERS")


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(_package(module))


def test_no_import_reaches_a_higher_layer_or_a_sibling():
    wrong = []
    for module, imports in MODULES.items():
        here = _package(module)
        for name in imports:
            if not name.startswith("vppo"):
                continue
            there = _package(name)
            if there == here or here == "vppo":
                continue
            if _layer(there) >= _layer(here):
                wrong.append(f"{module} imports {name} ({there} is not below {here})")
    assert not wrong, "\n".join(wrong)


def test_the_pure_core_imports_only_torch_numpy_and_pil():
    import sys

    wrong = []
    for module, imports in MODULES.items():
        if _package(module) not in PURE:
            continue
        for name in imports:
            root = name.split(".")[0]
            if root == "vppo":
                if _package(name) not in PURE:
                    wrong.append(f"{module} imports {name}")
            elif (
                root not in sys.stdlib_module_names
                and root not in PURE_THIRD_PARTY
                and root != "__future__"
            ):
                wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_nothing_in_the_package_imports_the_old_paths():
    wrong = [
        f"{m} imports {n}"
        for m, imports in MODULES.items()
        for n in imports
        if n in SHIMS and m != "vppo.cli"
    ]
    assert not wrong, "\n".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _resolve(name: str) -> str | None:
    """The module an imported name is: vppo.data.images.DEFAULT_MAX_PIXELS -> vppo.data.images."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for module, imports in MODULES.items():
        here = _package(module)
        for name in imports:
            if name.startswith("vppo") and _package(name) != here:
                graph.setdefault(here, set()).add(_package(name))
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_import_cycle_between_modules():
    """Within packages too; a package's __init__ re-exporting its own modules is not a cycle."""
    graph: dict[str, set[str]] = {}
    for module, imports in MODULES.items():
        for name in imports:
            target = _resolve(name) if name.startswith("vppo") else None
            if target is None or target == module:
                continue
            is_init = (SRC / Path(*module.split("."))).is_dir()
            if is_init and target.startswith(module + "."):
                continue  # the package's own __init__ importing its submodules
            graph.setdefault(module, set()).add(target)
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, cyclic",
    [
        ({"a": {"b"}, "b": {"a"}}, True),
        ({"a": {"b"}, "b": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, cyclic):
    assert (_cycle(graph) is not None) == cyclic
