"""Execute the tutorials from their jupytext sources and store them as notebooks with outputs.

Each tutorial is a percent-format script (``tutorials/NN_name.py``, the cells that jupytext
reads); the committed ``.ipynb`` beside it carries the executed outputs. After editing a source::

    .venv/bin/python tutorials/_run.py            # execute all of them, write the notebooks
    .venv/bin/python tutorials/_run.py 03         # only those whose name starts with 03

Execution uses the same settings as ``tests/test_tutorials.py`` (offline, progress bars off, one
fresh ``python3`` kernel per notebook, working directory ``tutorials/``). The stored outputs carry
no path of the machine that ran them (:func:`scrub_paths`).
"""

from __future__ import annotations

import argparse
import os
import re
import site
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = sorted(HERE.glob("[0-9][0-9]_*.py"))


def read_source(path: Path) -> nbformat.NotebookNode:
    """The notebook (cells and kernel, no outputs) of a jupytext percent-format source."""
    nb = jupytext.read(path)
    nb.metadata.pop("jupytext", None)
    return nb


def execution_env() -> dict[str, str]:
    """The kernel's environment: offline, no progress bars, this interpreter first on PATH."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TQDM_DISABLE="1",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    """Run ``nb`` top to bottom in a fresh ``python3`` kernel, with cwd = ``tutorials/``."""
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    )
    env, saved = execution_env(), dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


#: An absolute path into a copy of the package (``/x/y/captum_layer_saliency/``).
PACKAGE_PATH = re.compile(r"(?<![\w.~<>-])(?:/[^\s/\"':]+)+/captum_layer_saliency/")


def _machine_paths() -> list[tuple[str, str]]:
    """(absolute path, what to show instead), longest first: the checkout, the environment,
    the home and temporary folders of the machine that runs the notebooks."""
    places = [(str(HERE.parent), "."), (sys.prefix, "<venv>"), (sys.base_prefix, "<python>")]
    places += [(p, "<site-packages>") for p in site.getsitepackages()]
    places += [(str(Path.home()), "~"), (os.path.realpath(tempfile.gettempdir()), "<tmp>")]
    places += [(tempfile.gettempdir(), "<tmp>")]
    return sorted({(p, r) for p, r in places if len(p) > 1}, key=lambda pr: -len(pr[0]))


def scrub_paths(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Replace the machine's absolute paths in every output by relative or named ones.

    A warning printed as ``/home/me/checkout/captum_layer_saliency/baselines.py:181`` is stored
    as ``./captum_layer_saliency/baselines.py:181``; the temporary folder becomes ``<tmp>``.
    """
    pattern = re.compile("|".join(re.escape(p) for p, _ in _machine_paths()))
    replace = dict(_machine_paths())

    def clean(text: str) -> str:
        # Any other checkout's or environment's copy of the package: shown from the package.
        text = PACKAGE_PATH.sub("captum_layer_saliency/", text)
        return pattern.sub(lambda m: replace[m.group(0)], text)

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = clean(output["text"])
            for mime, data in output.get("data", {}).items():
                if mime.startswith("text/") and isinstance(data, str):
                    output["data"][mime] = clean(data)
            if "traceback" in output:
                output["traceback"] = [clean(line) for line in output["traceback"]]
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="tutorial name prefixes (default: all)")
    args = parser.parse_args()
    sources = [p for p in SOURCES if not args.only or any(p.name.startswith(o) for o in args.only)]
    # A throw-away cache, as in the tests: LAFA's small index is rebuilt, ~/.cache is left alone.
    with tempfile.TemporaryDirectory(prefix="tutorial-cache-") as cache:
        os.environ["CAPTUM_LAYER_SALIENCY_CACHE"] = cache
        for source in sources:
            start = time.perf_counter()
            nb = scrub_paths(execute(read_source(source)))
            nbformat.validate(nb)
            nbformat.write(nb, source.with_suffix(".ipynb"))
            print(f"{source.name}: executed in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
