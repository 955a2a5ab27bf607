"""The package's imports obey the import-linter contracts of ``pyproject.toml``.

The contracts (run by ``lint-imports`` in ``make lint``, and here so that ``pytest`` gates them
too): imports run down the floors ``cli -> explaining -> compare -> zoo -> attr | metrics | data |
viz -> models -> _utils``; a private module (``_name.py``) is imported only inside its own
package; the training code (``zoo.build``) only by the command line; no import cycles between
the modules of one package. Besides, the package never loads its own modules through
``importlib`` (import-linter could not see those imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from importlinter import cli as importlinter_cli
from importlinter.cli import lint_imports

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PACKAGE = "captum_layer_saliency"
REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / PACKAGE


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """import-linter's dictConfig would disable every logger created so far (the package's too),
    and later tests that read the package's warnings from the log would see nothing."""
    monkeypatch.setattr(importlinter_cli, "_configure_logging", lambda verbose: None)


def _sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_the_package_keeps_its_import_contracts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))
    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 kept, 0 broken" in out, out


def _write(root: Path, module: str, source: str = "") -> None:
    path = root.joinpath(*module.split("."))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".py").write_text(source, encoding="utf-8")


def test_the_contracts_catch_each_kind_of_broken_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same contracts, on a small package that breaks each of them once."""
    pkg = tmp_path / "pkg"
    packages = ["cli", "explaining", "compare", "zoo", "attr", "metrics", "data", "viz", "models"]
    for name in ["", *(f"{p}." for p in packages)]:
        _write(pkg, f"{name}__init__")
    for module in [
        "__main__",
        "_public",
        "_options",
        "errors",
        "_utils",
        "_version",
        "zoo.build",
        "zoo.load",
        "zoo.selection",
    ]:
        _write(pkg, module)
    _write(pkg, "models.surgery", "import pkg.attr\n")  # a floor imports the floor above it
    _write(pkg, "data._source")
    _write(pkg, "viz.html", "from pkg.data._source import x\n")  # a private module, from outside
    _write(pkg, "compare.runner", "from pkg.zoo import build\n")  # training code, not from cli
    _write(pkg, "metrics.a", "from pkg.metrics import b\n")  # a cycle: a -> b -> a
    _write(pkg, "metrics.b", "from pkg.metrics import a\n")
    config = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    contracts = tomllib.loads(config.replace(PACKAGE, "pkg"))["tool"]["importlinter"]
    lines = ["[importlinter]", f"root_package = {contracts['root_package']}", ""]
    for i, contract in enumerate(contracts["contracts"]):
        lines.append(f"[importlinter:contract:{i}]")
        for key, value in contract.items():
            if isinstance(value, list):
                value = "\n    " + "\n    ".join(value)
            lines.append(f"{key} = {value}")
        lines.append("")
    (tmp_path / ".importlinter").write_text("\n".join(lines), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lint_imports(config_filename=str(tmp_path / ".importlinter"), no_cache=True) == 1
    out = capsys.readouterr().out
    assert "0 kept, 4 broken" in out, out
    for broken in [
        "pkg.models.surgery -> pkg.attr",
        "pkg.viz.html -> pkg.data._source",
        "pkg.compare.runner -> pkg.zoo.build",
    ]:
        assert broken in out, (broken, out)


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
            # one exception: the package's own __init__ loads the public API on first use
            assert path.name != "__init__.py" or path.parent == ROOT, (
                f"{path}: no module-level __getattr__ tricks"
            )


def test_one_conftest() -> None:
    """Tests import constants with ``from conftest import ...``: a second conftest shadows it."""
    found = sorted(p.relative_to(ROOT.parent) for p in (ROOT.parent / "tests").rglob("conftest.py"))
    assert found == [Path("tests/conftest.py")], found
