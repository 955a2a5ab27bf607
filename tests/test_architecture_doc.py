"""docs/architecture.md names every module of the package, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "captum_layer_saliency"


def _architecture_block() -> str:
    section = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```\n(.*?)```", section, flags=re.S)
    assert blocks, "docs/architecture.md has no code block with the tree"
    return blocks[0]


def test_the_architecture_section_matches_the_tree() -> None:
    block = _architecture_block()
    named = set(re.findall(r"\b([A-Za-z_][\w]*\.py)\b", block))
    files = {p.name for p in PACKAGE.rglob("*.py") if p.name not in {"__init__.py", "__main__.py"}}
    folders = {p.relative_to(PACKAGE).parts[-1] for p in PACKAGE.rglob("*") if p.is_dir()}
    folders -= {"__pycache__", "vendored", "artifacts"}
    assert files - named == set(), f"modules missing from docs/architecture.md: {files - named}"
    assert named - files - {"__init__.py", "_build.py"} == set(), (
        f"docs/architecture.md names modules that do not exist: {named - files}"
    )
    missing = {f for f in folders if f"{f}/" not in block}
    assert not missing, f"folders missing from docs/architecture.md: {missing}"
