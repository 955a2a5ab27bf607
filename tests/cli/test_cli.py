"""The CLI end to end on a tiny model: compare, resume, report, listings, and clean errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from compare_fakes import patch_fakes, toy_dataset
from datasets import Dataset

from captum_layer_saliency.cli import app as cli
from captum_layer_saliency.cli.common import get_task as get_real_task
from captum_layer_saliency.compare import load_rows
from captum_layer_saliency.models.classifier import TextClassifier

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeTask:
    """Just what the CLI uses of a ``TaskSpec``."""

    dataset: Dataset
    name: str = "toy"
    model: str = "sst2"
    has_rationales: bool = True
    description: str = "a toy task"
    loads: list[dict[str, Any]] = field(default_factory=list)

    def load(self, split: Any = None, data_dir: Any = None, limit: int | None = None) -> Dataset:
        """The dataset (its first ``limit`` rows); every call is recorded in ``loads``."""
        self.loads.append({"split": split, "data_dir": data_dir, "limit": limit})
        if limit is not None:
            return self.dataset.select(range(min(limit, len(self.dataset))))
        return self.dataset

    def default_model(self) -> str:
        """The task's default model's name."""
        return self.model


@pytest.fixture
def toy(tiny_classifier: TextClassifier, monkeypatch: pytest.MonkeyPatch) -> FakeTask:
    """Fake registries, the tiny model, and a ``toy`` task (also standing in for ``sst2``)."""
    task = FakeTask(toy_dataset())

    def get_task(name: str) -> Any:
        return task if name in ("toy", "sst2") else get_real_task(name)

    patch_fakes(monkeypatch, load_model=lambda name: tiny_classifier, get_task=get_task)
    return task


def _compare(out: Path, *extra: str) -> list[str]:
    return [
        "compare", "--task", "toy", "--methods", "dls,ixg,random", "--limit", "5",
        "--out", str(out), "--batch-size", "2", "--no-progress", *extra,
    ]  # fmt: skip


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_compare_end_to_end_then_resume_and_rebuild_the_report(
    toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert cli.main(_compare(out)) == 0
    printed = capsys.readouterr().out
    assert (
        re.search(r"\| method +\|", printed) and "report:" in printed and "report.html" in printed
    )
    rows = load_rows(out)
    assert len(rows) == 5 * 3
    assert {r["method"] for r in rows} == {"dls", "input_x_gradient", "random"}  # alias resolved
    for name in ("summary.md", "summary.csv", "summary.json", "report.html", "aopc_curves.png"):
        assert (out / name).is_file(), name
    rows_before = (out / "rows.jsonl").read_bytes()

    # Rerunning resumes: nothing to do, nothing written twice.
    assert cli.main(_compare(out)) == 0
    assert (out / "rows.jsonl").read_bytes() == rows_before

    (out / "summary.md").unlink()
    assert cli.main(["report", "--out", str(out), "--reference", "ixg"]) == 0
    assert "input_x_gradient" in (out / "summary.md").read_text("utf-8")


def test_sharded_compare_then_merge(
    toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sharded"
    for rank in range(2):
        assert cli.main(_compare(out, "--shard", f"{rank}/2")) == 0
    assert "merge --out" in capsys.readouterr().out
    assert cli.main(["merge", "--out", str(out)]) == 0
    assert len(load_rows(out)) == 5 * 3 and not list(out.glob("rows.rank*.jsonl"))
    assert (out / "report.html").is_file()
    assert cli.main(_compare(out, "--shard", "2/2")) == 2
    assert "RANK < WORLD" in _error_line(capsys)


def test_demo_runs_the_fast_methods(
    toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--limit", "3", "--no-progress"]) == 0
    rows = load_rows(out)
    assert {r["method"] for r in rows} == set(cli.DEMO_METHODS)
    assert set(rows[0]["metrics"]) == set(cli.DEMO_METRICS)
    assert toy.loads[-1]["limit"] == 3
    assert "report:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "dls,nope"], "unknown method 'nope'"),
        (["--metrics", "comprehensiveness,nope"], "unknown metric"),
        (["--limit", "0"], "--limit"),
        (["--data-dir", "/nonexistent/data"], "does not exist"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    toy: FakeTask,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    argv = _compare(tmp_path / "out")
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert cli.main(argv) == 2
    assert message in _error_line(capsys)


def test_unknown_task(toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _compare(tmp_path / "out")
    argv[argv.index("toy")] = "sst3"
    assert cli.main(argv) == 2
    assert "unknown task 'sst3'" in _error_line(capsys)


def test_unwritable_out_dir(
    toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert cli.main(_compare(blocker / "out")) == 2
    assert "cannot write to output directory" in _error_line(capsys)


def test_empty_dataset(toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toy.dataset = toy_dataset([])
    assert cli.main(_compare(tmp_path / "out")) == 2
    assert "no examples" in _error_line(capsys)


def test_resuming_with_another_config_is_refused(
    toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(_compare(tmp_path / "out", "--metrics", "comprehensiveness")) == 0
    capsys.readouterr()
    assert (
        cli.main(_compare(tmp_path / "out", "--metrics", "comprehensiveness", "--seed", "3")) == 2
    )
    assert "different configuration" in _error_line(capsys)


def test_report_errors(toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--out", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in _error_line(capsys)
    assert cli.main(["report", "--out", str(tmp_path)]) == 2
    assert "no result rows" in _error_line(capsys)


def test_summarize_combines_runs_on_an_index_range(
    toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cheap run of every method plus an expensive one on a subset: one table, paired."""
    cheap, subset = tmp_path / "cheap", tmp_path / "subset"
    assert cli.main(_compare(cheap)) == 0
    args = ["compare", "--task", "toy", "--methods", "dls,random", "--limit", "3"]
    assert cli.main([*args, "--out", str(subset), "--batch-size", "2", "--no-progress"]) == 0
    capsys.readouterr()
    json_path = tmp_path / "combined" / "summary.json"
    # The toy rows have idx 100, 101, ...
    argv = ["summarize", str(cheap), str(subset), "--index-from", "101", "--json", str(json_path)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Rows combined from" in printed and "index in [101, end)" in printed
    saved = json.loads(json_path.read_text("utf-8"))
    methods = saved["summary"]["methods"]
    # Examples 101..104 of the cheap run; the subset's rows for the same keys are duplicates.
    assert {m: methods[m]["n"] for m in methods} == {
        "dls": 4,
        "input_x_gradient": 4,
        "random": 4,
    }
    assert saved["config"]["index_range"] == [101, None]
    assert cli.main(["summarize", str(cheap), "--methods", "ixg", "--index-to", "102"]) == 0
    assert re.search(r"\| input_x_gradient +\| 2 +\|", capsys.readouterr().out)


def test_summarize_errors(
    toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert cli.main(_compare(run)) == 0
    capsys.readouterr()
    assert cli.main(["summarize", str(tmp_path / "missing")]) == 2
    assert "not a comparison directory" in _error_line(capsys)
    assert cli.main(["summarize", str(run), "--index-from", "999"]) == 2
    assert "no rows left" in _error_line(capsys)
    assert cli.main(["summarize", str(run), "--methods", "nonsense"]) == 2
    assert "unknown method" in _error_line(capsys)
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((run / "run.json").read_text("utf-8"))
    (other / "run.json").write_text(json.dumps({**config, "model": "another"}), "utf-8")
    (other / "rows.jsonl").write_bytes((run / "rows.jsonl").read_bytes())
    assert cli.main(["summarize", str(run), str(other)]) == 2
    assert "differ in model" in _error_line(capsys)


def test_summarize_pools_slices_of_one_data_file_and_refuses_two_texts_under_one_index(
    toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs on two ``--data-file`` files pool (slices of one dataset, rows by their index);
    one index that is two different texts is refused, naming it."""
    run = tmp_path / "run"
    assert cli.main(_compare(run)) == 0
    capsys.readouterr()
    config = json.loads((run / "run.json").read_text("utf-8"))
    rows = [json.loads(line) for line in (run / "rows.jsonl").read_text("utf-8").splitlines()]
    indices = sorted({row["index"] for row in rows})
    first, second = tmp_path / "first", tmp_path / "second"
    for out, task, part in (
        (first, "file:a.jsonl", indices[:2]),
        (second, "file:b.jsonl", indices[2:]),
    ):
        out.mkdir()
        (out / "run.json").write_text(json.dumps({**config, "task": task}), "utf-8")
        kept = [json.dumps(row) for row in rows if row["index"] in part]
        (out / "rows.jsonl").write_text("\n".join(kept) + "\n", "utf-8")
    json_path = tmp_path / "pooled.json"
    assert cli.main(["summarize", str(first), str(second), "--json", str(json_path)]) == 0
    methods = json.loads(json_path.read_text("utf-8"))["summary"]["methods"]
    assert {m: methods[m]["n"] for m in methods} == {m: len(indices) for m in methods}
    clash = [dict(row) for row in rows if row["index"] == indices[0]]
    for row in clash:
        row["input_ids"] = [*row["input_ids"][:-1], row["input_ids"][-1] + 1]
    with (second / "rows.jsonl").open("a", encoding="utf-8") as sink:
        sink.write("".join(json.dumps(row) + "\n" for row in clash))
    capsys.readouterr()
    assert cli.main(["summarize", str(first), str(second)]) == 2
    assert f"example index {indices[0]} is not the same text" in _error_line(capsys)
    # Two different named tasks still do not pool.
    (second / "run.json").write_text(json.dumps({**config, "task": "sst2"}), "utf-8")
    assert cli.main(["summarize", str(first), str(second)]) == 2
    assert "differ in task" in _error_line(capsys)


def test_listings(toy: FakeTask, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list-methods"]) == 0
    out = capsys.readouterr().out
    assert "input_x_gradient" in out and "ixg" in out
    assert cli.main(["list-tasks"]) == 0  # the real task registry
    assert "sst2" in capsys.readouterr().out


def test_build_defaults_is_passed_through(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_build(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return {"dir": "/cache", "built": ["head"]}

    import captum_layer_saliency.zoo.build as build

    monkeypatch.setattr(build, "build_defaults", fake_build)
    assert cli.main(["build-defaults", "--fast"]) == 0
    assert (
        cli.main(["build-defaults", "--tasks", "sst2", "--cache-dir", "/c", "--threads", "2"]) == 0
    )
    assert calls == [
        {
            "tasks": list(build.TASKS),
            "force": False,
            "fast": True,
            "cache_dir": None,
            "num_threads": None,
            "backbone": "minilm",
        },
        {
            "tasks": ["sst2"],
            "force": False,
            "fast": False,
            "cache_dir": "/c",
            "num_threads": 2,
            "backbone": "minilm",
        },
    ]
    assert "/cache" in capsys.readouterr().out


def test_the_module_entry_point_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "captum_layer_saliency", "compare", "--task", "nope",
         "--methods", "dls", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: unknown task 'nope'") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_compare_on_the_real_sst2_rows(
    monkeypatch: pytest.MonkeyPatch, tiny_classifier: TextClassifier, tmp_path: Path
) -> None:
    """The real task registry and data (rationales mapped to tokens), with fake methods."""
    from captum_layer_saliency.data import resolve_data_dir

    if resolve_data_dir() is None:
        pytest.skip("no local data directory (../shared/data or $CAPTUM_LAYER_SALIENCY_DATA)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    patch_fakes(monkeypatch, load_model=lambda name: tiny_classifier)
    out = tmp_path / "sst2"
    argv = ["compare", "--task", "sst2", "--methods", "dls", "--limit", "3", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    rows = load_rows(out)
    assert len(rows) == 3 and all("overlap" in r["metrics"] for r in rows)
    assert all(len(r["rationale"]) == len(r["tokens"]) for r in rows)


def test_compare_under_the_edin_protocol_then_rebuild_the_report(
    toy: FakeTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "edin"
    assert cli.main(_compare(out, "--protocol", "edin")) == 0
    rows = load_rows(out)
    assert len(rows) == 5 * 3
    assert set(rows[0]["metrics"]) == {
        "comprehensiveness",
        "sufficiency",
        "naopc_comprehensiveness",
        "naopc_sufficiency",
    }
    assert json.loads((out / "run.json").read_text())["protocol"] == "edin"
    (out / "summary.md").unlink()
    assert cli.main(["report", "--out", str(out)]) == 0
    assert "naopc_comprehensiveness" in (out / "summary.md").read_text("utf-8")
    capsys.readouterr()
    assert cli.main(_compare(out, "--protocol", "ferret")) == 2
    assert "protocol must be one of ('eraser', 'edin')" in _error_line(capsys)
