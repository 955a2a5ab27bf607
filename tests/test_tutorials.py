"""Every tutorial runs top to bottom, offline, on the default models.

A tutorial's source is a jupytext percent-format script (``tutorials/NN_name.py``); the committed
notebook beside it holds the same cells with their executed outputs. Each source is executed in a
new ``python3`` kernel with the working directory ``tutorials/``, exactly as
``tutorials/_run.py`` executes them. A cell that raises fails the test. The committed outputs
must stay small: no image over 200 kB, and no cell left with an error.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py"))
MAX_IMAGE_BYTES = 200 * 1024


def _run_module():
    spec = importlib.util.spec_from_file_location("tutorials_run", TUTORIALS / "_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _images(nb: nbformat.NotebookNode) -> list[tuple[int, int]]:
    """(cell index, decoded size in bytes) of every PNG/JPEG output."""
    found = []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            for mime, data in output.get("data", {}).items():
                if mime.startswith("image/") and mime != "image/svg+xml":
                    found.append((i, len(base64.b64decode(data))))
    return found


def test_every_notebook_is_listed_and_executed_from_its_source() -> None:
    run = _run_module()
    assert [n.removesuffix(".py") for n in SOURCES] == [n.removesuffix(".ipynb") for n in NOTEBOOKS]
    readme = (TUTORIALS / "README.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert name in readme, f"{name} is not listed in tutorials/README.md"
        stored = nbformat.read(TUTORIALS / name, as_version=4)
        expected = run.read_source(TUTORIALS / name.replace(".ipynb", ".py"))
        cells = [(c.cell_type, c.source) for c in expected.cells]
        assert [(c.cell_type, c.source) for c in stored.cells] == cells, (
            f"{name} differs from its source: re-run it (.venv/bin/python tutorials/_run.py "
            f"{name[:2]})"
        )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs_are_small_and_clean(name: str) -> None:
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), f"{name} is not executed"
    errors = [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{name} was saved with an error output"
    big = [(i, n) for i, n in _images(nb) if n > MAX_IMAGE_BYTES]
    assert not big, f"{name}: images over 200 kB (cell, bytes): {big}"
    assert (TUTORIALS / name).stat().st_size < 1_000_000, f"{name} is over 1 MB"


@pytest.mark.parametrize("name", SOURCES)
def test_notebook_runs_top_to_bottom(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run_module()
    # A private cache: LAFA's index is built afresh and nothing is written to ~/.cache.
    monkeypatch.setenv("CAPTUM_LAYER_SALIENCY_CACHE", str(tmp_path / "cache"))
    fresh = run.read_source(TUTORIALS / name)
    fresh.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    run.execute(fresh)  # raises CellExecutionError on the first failing cell
    interpreter = fresh.cells[0].outputs[0].text.strip()
    assert Path(interpreter).parent == Path(sys.executable).parent, interpreter
    big = [(i, n) for i, n in _images(fresh) if n > MAX_IMAGE_BYTES]
    assert not big, f"{name}: images over 200 kB (cell, bytes): {big}"


MACHINE_PATH = re.compile(r"(?:/home/|/root/|/Users/|/tmp/|/work/|/private/|[A-Za-z]:\\\\Users)")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_outputs_carry_no_path_of_the_machine_that_ran_them(name: str) -> None:
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(str(output.get("text", "")))
            texts += [str(d) for m, d in output.get("data", {}).items() if m.startswith("text/")]
    found = sorted({m.group(0) for t in texts for m in MACHINE_PATH.finditer(t)})
    root = str(TUTORIALS.parent)
    assert not found and not any(root in t for t in texts), (
        f"{name} stores machine paths {found}: re-run it with tutorials/_run.py, which scrubs them"
    )


def test_scrubbing_relativises_the_checkout_and_names_the_rest() -> None:
    run = _run_module()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    home = str(Path.home())
    nb.cells[0].outputs = [
        nbformat.v4.new_output(
            "stream",
            name="stderr",
            text=f"/somewhere/else/captum_layer_saliency/baselines.py:181: UserWarning\n"
            f"{TUTORIALS.parent}/README.md {home}/data {sys.prefix}/bin/python",
        )
    ]
    run.scrub_paths(nb)
    text = nb.cells[0].outputs[0].text
    assert text.startswith("captum_layer_saliency/baselines.py:181: UserWarning\n")
    assert "./README.md" in text and "<venv>/bin/python" in text
    assert str(TUTORIALS.parent) not in text and home not in text
