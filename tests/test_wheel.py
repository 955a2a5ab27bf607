"""The wheel, installed alone in a fresh virtual environment, runs the README's ten lines.

Builds the wheel from this checkout, creates a venv without the system's site-packages,
installs PyTorch's CPU wheel first (``torch==2.13.0``, as the Makefile does) and then the wheel
with its ``defaults`` extra, and runs the README's first Python block from an empty folder with
the hub offline. This catches a package file or a dependency that pyproject forgets, and checks
that the plain install stays lean (no ``datasets``: it belongs to the ``compare`` extra).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"


def _env() -> dict[str, str]:
    """This environment without PYTHONPATH (through it, pip would see this checkout as
    installed, and Python would import it instead of the wheel), with the hub offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _run(args: list[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, cwd=cwd, env=_env()
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"
    return done


def _ten_lines() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]


@pytest.mark.slow
def test_the_wheel_runs_the_readme_in_a_fresh_venv(tmp_path: Path) -> None:
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, ROOT])
    [wheel] = dist.glob("captum_layer_saliency-*.whl")
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", TORCH])
    _run([python, "-m", "pip", "install", "-q", f"{wheel}[defaults]"])
    code = _ten_lines()
    done = _run([python, "-c", code], cwd=work)
    expected = [line[2:].split("   (")[0] for line in code.splitlines() if line.startswith("# ")]
    assert done.stdout.strip() == expected[-1]
    where = _run([python, "-c", "import captum_layer_saliency as c; print(c.__file__)"], cwd=work)
    assert str(venv) in where.stdout
    lean = _run([python, "-c", "import importlib.util as u; print(u.find_spec('datasets'))"], work)
    assert lean.stdout.strip() == "None"
    # the console script answers without the heavy libraries
    _run([venv / "bin" / "captum-layer-saliency", "--help"], cwd=work)
