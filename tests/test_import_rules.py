"""The package's imports run one way: down the floors of the README's Architecture section.

Every ``import`` of the package's own modules (top-level or inside a function) is read from the
source with :mod:`ast` and checked against the floors below. The test also fails on an import
circle between modules, on ``importlib``-loading of the package's own modules and on modules over
the size limit, so a broken rule shows up in CI, not in review.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "captum_layer_saliency"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: What each part of the package may import (besides itself). The floors, bottom up:
#: 0 ``_utils``; 1 ``models``; 2 ``attr``, ``data``, ``metrics``, ``viz``; 3 ``zoo``, ``compare``,
#: ``explaining``; 4 ``cli``, ``__main__`` and the public API in ``__init__``.
_BASE = {"_version", "_utils"}
_FLOOR2 = _BASE | {"models", "attr", "data", "metrics", "viz"}
ALLOWED: dict[str, set[str]] = {
    "_version": set(),
    "_utils": set(),
    "models": _BASE,
    "attr": _BASE | {"models"},
    "data": _BASE | {"models"},
    "metrics": _BASE | {"models"},
    "viz": _BASE | {"models"},
    "zoo": _FLOOR2,
    "compare": _FLOOR2 | {"zoo"},
    "explaining": _FLOOR2 | {"zoo", "compare"},
    "cli": _FLOOR2 | {"zoo", "compare", "explaining"},
    "__main__": {"cli"},
    "__init__": _FLOOR2 | {"zoo", "explaining"},
}
#: Modules that only the CLI, benchmarks and tests may import (training code).
CLI_ONLY = {"zoo.build"}
MAX_LINES = 1500  # issue 21: one file per concept; the cap goes (i21b)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _part(module: str) -> str:
    return module.split(".")[0]


def _sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _own_imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import of the package's own modules in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, f"<relative import, level {node.level}>"
                continue
            module = node.module or ""
            if module == PACKAGE:  # from captum_layer_saliency import x: x may be a module
                for alias in node.names:
                    yield node.lineno, alias.name
            elif module.startswith(PACKAGE + "."):
                yield node.lineno, module[len(PACKAGE) + 1 :]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    yield node.lineno, alias.name[len(PACKAGE) + 1 :]


def _resolve(target: str) -> str:
    """The part of the package an imported name belongs to (a public name -> ``__init__``)."""
    first = target.split(".")[0]
    known = {_part(_module_name(p)) for p in _sources()}
    return first if first in known else "__init__"


def test_the_floors_cover_every_part_of_the_package() -> None:
    parts = {_part(_module_name(p)) for p in _sources()}
    assert parts <= set(ALLOWED), f"parts without a floor in ALLOWED: {parts - set(ALLOWED)}"


def _broken(path: Path, part: str) -> list[str]:
    """The imports of ``path`` (a module of ``part``) that break the floors."""
    broken = []
    for line, target in _own_imports(path):
        if target.startswith("<relative"):
            broken.append(f"line {line}: {target} (use absolute imports)")
            continue
        other = _resolve(target)
        if other != part and other not in ALLOWED[part]:
            broken.append(f"line {line}: {part} may not import {other} ({target})")
        if any(target == m or target.startswith(m + ".") for m in CLI_ONLY) and part != "cli":
            broken.append(f"line {line}: {target} is for the CLI, benchmarks and tests only")
    return broken


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_down_the_floors(path: Path) -> None:
    module = _module_name(path)
    broken = _broken(path, _part(module))
    assert not broken, f"{module}: " + "; ".join(broken)


def _edges() -> dict[str, set[str]]:
    names = {_module_name(p) for p in _sources()}
    graph: dict[str, set[str]] = {}
    for path in _sources():
        module = _module_name(path)
        deps = set()
        for _, target in _own_imports(path):
            # the longest known module that the import names (a name imported from a module
            # resolves to that module)
            candidates = [n for n in names if target == n or target.startswith(n + ".")]
            if candidates:
                deps.add(max(candidates, key=len))
        graph[module] = deps - {module}
    return graph


def test_no_import_circle_between_modules() -> None:
    graph = _edges()
    # a package's __init__ re-exporting its own submodules is not a circle of logic
    for module in graph:
        graph[module] = {d for d in graph[module] if not module.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import circle: " + " -> ".join(cycle))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_importlib_of_our_own_modules(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            arg = ast.unparse(node.args[0]) if node.args else ""
            assert PACKAGE not in arg and not arg.startswith("f'"), (
                f"{path.name}:{node.lineno} loads our own module through importlib: {arg}"
            )
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            assert path.name != "__init__.py", f"{path}: no module-level __getattr__ tricks"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_the_size_limit(path: Path) -> None:
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (limit {MAX_LINES})"


def test_the_checker_catches_a_broken_rule(tmp_path: Path) -> None:
    """The walk sees imports inside functions and modules imported from the package root."""
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n"
        "    from captum_layer_saliency.compare.runner import run_comparison\n"
        "from captum_layer_saliency import viz\n"
        "from captum_layer_saliency.zoo.build import build_defaults\n"
        "from . import sibling\n"
    )
    assert sorted(_own_imports(source)) == [
        (2, "compare.runner"),
        (3, "viz"),
        (4, "zoo.build"),
        (5, "<relative import, level 1>"),
    ]
    broken = _broken(source, "attr")
    assert len(broken) == 5, broken  # compare, viz, zoo, zoo.build (CLI only), relative
    # the CLI may import every floor, but not relatively
    assert _broken(source, "cli") == [b for b in broken if "relative" in b]


def test_one_conftest() -> None:
    """Tests import constants with ``from conftest import ...``: a second conftest shadows it."""
    found = sorted(p.relative_to(ROOT.parent) for p in (ROOT.parent / "tests").rglob("conftest.py"))
    assert found == [Path("tests/conftest.py")], found
