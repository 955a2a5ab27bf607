"""Issue 22: nothing lost, nothing silently wrong, one ``error:`` line, through the CLI.

The writing rule (fsync-ed appends, atomic rewrites and PNGs, a resume that cuts only a torn tail
and checks every kept row against its input, one process per output folder), the CSV reader
(quoted newlines, no cell limit, duplicate headers refused) and the user errors of ``explain``
and ``build-defaults`` that used to end in a traceback. The SIGKILL test kills real ``explain``
and ``compare`` processes at several moments (during a resume too) and checks that every finished
result is readable and the rerun equals an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from compare_fakes import toy_dataset
from test_cli_explain import _error_line
from tiny_models import nan_output_copy

from captum_layer_saliency._utils import (
    append_durably,
    lock_directory,
    truncate_torn_tail,
)
from captum_layer_saliency.cli import app as cli
from captum_layer_saliency.cli import common
from captum_layer_saliency.compare import run_comparison
from captum_layer_saliency.data.table import read_table
from captum_layer_saliency.errors import OutputLockedError
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.viz.explanation import load_explanations

TEXTS = [f"the movie was very good {i}" if i % 2 else f"boring . {i}" for i in range(8)]


# ----------------------------------------------------------------------------- the helpers


def test_truncate_torn_tail_cuts_only_the_torn_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    append_durably(path, ['{"a": 1}', '{"b": 2}'])
    assert not truncate_torn_tail(path)
    with path.open("ab") as f:
        f.write(b'{"c": ')
    assert truncate_torn_tail(path)
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    path.write_bytes(b'{"only torn"')
    assert truncate_torn_tail(path) and path.read_bytes() == b""
    assert not truncate_torn_tail(tmp_path / "missing")


def test_appends_are_fsynced_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    append_durably(tmp_path / "x.jsonl", ["1", "2", "3"])
    assert len(calls) == 1


def test_a_second_process_on_one_folder_stops_naming_the_first(tmp_path: Path) -> None:
    pid = f"pid {os.getpid()}"
    with (
        lock_directory(tmp_path),
        pytest.raises(OutputLockedError, match=pid),
        lock_directory(tmp_path),
    ):
        pass
    with lock_directory(tmp_path):  # released: free again
        pass


def test_explain_and_compare_refuse_a_locked_out(
    tiny_classifier: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with lock_directory(out):
        args = ["explain", "a fine film", "--method", "ixg", "--out", str(out)]
        assert _run_cli(args, tiny_classifier) == 2
        assert f"in use by another process (pid {os.getpid()})" in _error_line(capsys)
    assert not (out / "explanations.jsonl").exists()
    with lock_directory(out), pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
        run_comparison(
            tiny_classifier,
            toy_dataset(rationales=False),
            ["ixg"],
            out,
            metrics=["comprehensiveness"],
            progress=False,
        )
    assert not (out / "rows.jsonl").exists()


# ----------------------------------------------------------------------------- explain's files


def _explain(clf: TextClassifier, out: Path, *extra: str) -> int:
    args = ["explain", *TEXTS[:4], "--method", "ixg", "--out", str(out), "--batch-size", "2"]
    return _run_cli([*args, *extra], clf)


def test_explain_fsyncs_each_batch(
    tiny_classifier: TextClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    assert _explain(tiny_classifier, tmp_path / "run") == 0
    assert len(synced) >= 2  # two batches appended (and the run file, the page, renamed whole)


def test_resume_refuses_rows_of_other_inputs_and_duplicates(
    tiny_classifier: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert _explain(tiny_classifier, out) == 0
    rows = out / "explanations.jsonl"
    lines = rows.read_text(encoding="utf-8").splitlines()
    # two processes' rows in one file: more rows than texts
    rows.write_text("\n".join(lines + lines) + "\n", encoding="utf-8")
    before = rows.read_bytes()
    assert _explain(tiny_classifier, out) == 2
    assert "8 explanations for 4 texts" in _error_line(capsys)
    assert rows.read_bytes() == before
    # a kept row that is not this input's
    swapped = [lines[1], lines[0]]
    rows.write_text("\n".join(swapped) + "\n", encoding="utf-8")
    assert _explain(tiny_classifier, out) == 2
    assert "row 1 (id 1) does not match text 1" in _error_line(capsys)


def test_a_torn_png_is_never_kept(
    tiny_classifier: TextClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PNG is written to a temporary file and renamed: a kill mid-write leaves no 0001.png."""
    from matplotlib.figure import Figure

    out = tmp_path / "run"
    real = Figure.savefig

    def dies(self: Figure, fname: object, **kw: object) -> None:
        Path(str(fname)).write_bytes(b"")  # the first bytes of a write...
        raise KeyboardInterrupt  # ...then the process is stopped

    monkeypatch.setattr(Figure, "savefig", dies)
    assert _explain(tiny_classifier, out, "--png") == 130
    assert not any((out / "png").iterdir())  # no torn, no 0-byte PNG left
    monkeypatch.setattr(Figure, "savefig", real)
    assert _explain(tiny_classifier, out, "--png") == 0
    pngs = sorted((out / "png").iterdir())
    assert [p.name for p in pngs] == ["0001.png", "0002.png", "0003.png", "0004.png"]
    assert all(p.stat().st_size > 0 for p in pngs)


# ----------------------------------------------------------------------------- one error line


def test_explain_out_at_a_file_or_an_unwritable_folder(
    tiny_classifier: TextClassifier,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file = tmp_path / "a-file"
    file.write_text("x", encoding="utf-8")
    assert _explain(tiny_classifier, file) == 2
    assert "cannot write to output directory" in _error_line(capsys)
    assert file.read_text(encoding="utf-8") == "x"

    import tempfile

    def refused(*a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)  # a read-only folder (even as root)
    assert _explain(tiny_classifier, tmp_path / "ro") == 2
    assert "Permission denied" in _error_line(capsys)


def test_build_defaults_bad_cache_dir_and_threads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "a-file"
    file.write_text("x", encoding="utf-8")
    assert cli.main(["build-defaults", "--fast", "--cache-dir", str(file)]) == 2
    assert "cannot write to the cache directory" in _error_line(capsys)
    assert cli.main(["build-defaults", "--fast", "--threads", "-3"]) == 2
    assert "--threads must be at least 1, got -3" in _error_line(capsys)


def test_a_model_folder_transformers_refuses_is_one_line(
    tiny_classifier: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    folder = tmp_path / "model"
    tiny_classifier.model.save_pretrained(folder)
    tiny_classifier.tokenizer.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    # a pickle torch.load(weights_only=True) refuses to run
    torch.save({"x": print}, folder / "pytorch_model.bin")
    assert cli.main(["explain", "--model", str(folder), "--method", "ixg", "good"]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: cannot load model {str(folder)!r}")


# ----------------------------------------------------------------------------- the CSV reader


def test_csv_keeps_quoted_newlines_and_long_cells(tmp_path: Path) -> None:
    long = "word " * 40_000  # 200,000 characters: over csv's 131,072 default
    path = tmp_path / "t.csv"
    path.write_text(f'id,text\n1,"first line\nsecond line"\n2,"{long}"\n', encoding="utf-8")
    rows = read_table(path)
    assert rows[0]["text"] == "first line\nsecond line"
    assert rows[1]["text"] == long


def test_csv_refuses_a_duplicate_header(
    tiny_classifier: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,text\ngood,bad\n", encoding="utf-8")
    args = ["explain", "--input", str(path), "--method", "ixg"]
    assert _run_cli(args, tiny_classifier) == 2
    assert "names column 'text' twice" in _error_line(capsys)
    args = ["compare", "--data-file", str(path), "--model", "x", "--methods", "ixg", "--out"]
    assert _run_cli([*args, str(tmp_path / "c")], tiny_classifier) == 2
    assert "names column 'text' twice" in _error_line(capsys)


def test_explain_nan_model_is_one_line_for_every_method(
    tiny_classifier: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clf = nan_output_copy(tiny_classifier)
    for method in ("ixg", "dls"):
        out = tmp_path / method
        args = ["explain", "good", "--method", method, "--out", str(out), "--no-progress"]
        assert _run_cli(args, clf) == 2, method
        err = capsys.readouterr().err  # (DLS's calibration bar may share the line)
        assert [line for line in err.splitlines() if "error: " in line and "NaN or inf" in line]
        assert not (out / "explanations.jsonl").exists()


# ----------------------------------------------------------------------------- SIGKILL


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier saved as a model folder, for real CLI processes."""
    import torch
    from conftest import VOCAB, tiny_bert_config
    from transformers import BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(tiny_bert_config()).eval()
    model.config.id2label = {0: "negative", 1: "positive"}
    model.save_pretrained(folder)
    BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True).save_pretrained(
        folder
    )
    return folder


def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    return {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _killed_when(cmd: list[str], ready: object, timeout: float = 120.0) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` holds, and check that it was killed."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]  # killed, not finished


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _png_started(out: Path) -> bool:
    folder = out / "png"
    return folder.exists() and any(folder.iterdir())


@pytest.mark.slow
def test_sigkill_during_explain_and_its_resume_loses_nothing(
    tmp_path: Path, model_dir: Path
) -> None:
    data = tmp_path / "texts.csv"
    data.write_text("text\n" + "".join(f'"{t}"\n' for t in TEXTS), encoding="utf-8")

    def cmd(out: Path) -> list[str]:
        return [
            sys.executable, "-m", "captum_layer_saliency", "explain", "--model", str(model_dir),
            "--input", str(data), "--method", "ixg", "--batch-size", "2", "--png", "--out",
            str(out), "--no-progress",
        ]  # fmt: skip

    whole = tmp_path / "whole"
    subprocess.run(cmd(whole), env=_env(), check=True, capture_output=True)
    out = tmp_path / "killed"
    rows = out / "explanations.jsonl"
    for ready in (
        lambda: _lines(rows) >= 2,  # mid-run, after a batch
        lambda: _lines(rows) >= 6,  # during the resume
        lambda: _png_started(out),  # while writing the PNGs
    ):
        _killed_when(cmd(out), ready)
        # every finished result is readable: the complete rows, and every PNG under its name
        assert len(load_explanations(rows, skip_partial_last=True)) >= 2
        assert all(p.stat().st_size > 0 for p in out.glob("png/[0-9]*.png"))
    subprocess.run(cmd(out), env=_env(), check=True, capture_output=True)
    got, want = load_explanations(rows), load_explanations(whole / "explanations.jsonl")
    assert [(e.id, e.text, e.tokens, e.scores) for e in got] == [
        (e.id, e.text, e.tokens, e.scores) for e in want
    ]
    pngs = sorted(p.name for p in (out / "png").iterdir())
    assert pngs == sorted(p.name for p in (whole / "png").iterdir())
    assert all((out / "png" / p).stat().st_size > 0 for p in pngs)
    assert not list(out.glob(".*.tmp*")) and not list((out / "png").glob(".*.tmp*"))


@pytest.mark.slow
def test_sigkill_during_compare_and_its_resume_loses_nothing(
    tmp_path: Path, model_dir: Path
) -> None:
    data = tmp_path / "data.csv"
    data.write_text(
        "text,label\n" + "".join(f'"{t}",{i % 2}\n' for i, t in enumerate(TEXTS)), encoding="utf-8"
    )

    def cmd(out: Path) -> list[str]:
        return [
            sys.executable, "-m", "captum_layer_saliency", "compare", "--data-file", str(data),
            "--model", str(model_dir), "--methods", "ixg,gradient", "--metrics",
            "comprehensiveness,sufficiency", "--batch-size", "2", "--out", str(out),
            "--no-progress",
        ]  # fmt: skip

    def key_values(out: Path) -> list[tuple]:
        complete = (out / "rows.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
        rows = [json.loads(line) for line in complete]  # a torn last line has no newline
        return sorted(  # type: ignore[no-any-return]
            (r["index"], r["method"], r["attributions"], r["metrics"]) for r in rows
        )

    whole = tmp_path / "whole"
    subprocess.run(cmd(whole), env=_env(), check=True, capture_output=True)
    out = tmp_path / "killed"
    _killed_when(cmd(out), lambda: _lines(out / "rows.jsonl") >= 3)
    assert len(key_values(out)) >= 3
    _killed_when(cmd(out), lambda: _lines(out / "rows.jsonl") >= 9)  # during the resume
    subprocess.run(cmd(out), env=_env(), check=True, capture_output=True)
    assert key_values(out) == key_values(whole)
    assert (out / "report.html").stat().st_size > 0


@pytest.mark.slow
def test_sigkill_during_build_defaults_loses_nothing(tmp_path: Path) -> None:
    """Killed after its first artifact, ``build-defaults`` keeps it, and the rerun's artifacts
    are byte for byte those of an uninterrupted build."""
    from captum_layer_saliency._utils import sha256_file

    def cmd(cache: Path) -> list[str]:
        return [
            sys.executable, "-m", "captum_layer_saliency", "build-defaults", "--fast",
            "--cache-dir", str(cache),
        ]  # fmt: skip

    def artifacts(cache: Path) -> dict[str, str]:
        return {p.name: sha256_file(p) for p in cache.glob("*.safetensors")}

    whole = tmp_path / "whole"
    subprocess.run(cmd(whole), env=_env(), check=True, capture_output=True)
    cache = tmp_path / "killed"
    _killed_when(cmd(cache), lambda: (cache / "mlm_head.safetensors").exists())
    subprocess.run(cmd(cache), env=_env(), check=True, capture_output=True)
    assert not list(cache.glob(".*.tmp*"))  # a killed write's temporary file is removed
    assert artifacts(cache) == artifacts(whole)


def _run_cli(args: list[str], clf: TextClassifier) -> int:
    """The CLI with ``clf`` behind every ``--model``/``--default``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common, "load_model", lambda name: clf)
        return cli.main(args)
