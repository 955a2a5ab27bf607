"""The bad-input sweep: every kind of bad input gets a clear error and loses nothing.

Through the API a bad input raises a specific ``ValueError`` subclass before any row is computed;
through the CLI it ends with one ``error: ...`` line and exit code 2. Either way the files of an
earlier run in the same output directory are left byte for byte as they were.

:data:`KINDS` lists the kinds tried; ``test_every_kind_is_tried`` checks that each has a case here
or names the test elsewhere that covers it (DLS's own argument checks live in
``test_dls_behaviour.py``, the default-model cache in ``test_defaults.py``, the SIGKILL test in
``test_distributed.py``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from compare_fakes import FAKE_METHODS, patch_fakes, stable, toy_dataset, use_fakes
from conftest import VOCAB, tiny_bert_config
from torch import Tensor, nn
from transformers import BertForMaskedLM, BertTokenizer

from captum_layer_saliency.cli import app as cli
from captum_layer_saliency.cli.common import load_model
from captum_layer_saliency.compare import (
    CorruptResultsError,
    EmptyDatasetError,
    InvalidComparisonError,
    ModelOutputError,
    OutputDirError,
    load_rows,
    run_comparison,
)
from captum_layer_saliency.compare import results as results_mod
from captum_layer_saliency.data.jsonl import DataFileError, load_jsonl
from captum_layer_saliency.models.classifier import TextClassifier, TokenizerMismatchError

#: Every kind of bad input tried, and where (test names outside this module are in brackets).
KINDS = {
    "empty dataset": "api, cli",
    "missing text field": "api, cli",
    "wrong field type (text not a string, label not an int)": "api, cli",
    "malformed data file (a line that is not a JSON object)": "api, cli",
    "unknown method": "api, cli",
    "unknown task": "cli [test_tasks.py]",
    "unknown metric": "cli [test_cli.py]",
    "output directory that cannot be written": "api, cli",
    "corrupt default-model cache": "cli [test_defaults.py: detected and rebuilt]",
    "corrupt rows file (damaged before its last line)": "api, cli",
    "interrupted mid-write (torn last line; Ctrl-C; SIGKILL)": "api, cli [test_distributed.py]",
    "resuming with another configuration": "cli [test_compare.py, test_cli.py]",
    "tokenizer that does not match the model": "api, cli",
    "empty text": "api, cli",
    "overlong text (with --truncation error)": "api, cli",
    "token budget beyond the model's position embeddings": "api, cli",
    "NaN or inf in the logits": "api, cli [test_dls_behaviour.py]",
    "gold label outside the model's classes": "api, cli",
    "target out of range": "[test_dls_behaviour.py::test_bad_target]",
    "layer that is not in the model": "[test_dls_behaviour.py::test_layer_not_in_model]",
    "LM head whose vocabulary does not match": "cli [test_dls_behaviour.py, test_lm_heads.py]",
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _good_rows() -> list[dict[str, Any]]:
    return [dict(r) for r in toy_dataset(rationales=False)]


def _big_tokenizer() -> BertTokenizer:
    """A tokenizer with more tokens than the tiny model's embedding has rows."""
    extra = [f"word{i}" for i in range(20)]
    return BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB + extra)}, do_lower_case=True)


class NaNFor(nn.Module):
    """The tiny classifier, but with NaN logits for every text holding ``token_id``."""

    def __init__(self, inner: nn.Module, token_id: int) -> None:
        """Wrap ``inner``; texts holding ``token_id`` get NaN logits."""
        super().__init__()
        self.inner = inner
        self.token_id = token_id

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor]:
        """The inner logits, NaN for the texts holding the token."""
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits
        bad = (input_ids == self.token_id).any(-1, keepdim=True)
        return (torch.where(bad, torch.full_like(logits, float("nan")), logits),)


def _nan_classifier(clf: TextClassifier) -> TextClassifier:
    # "boring ." is the shortest text, so its batch comes last: earlier batches get written.
    return dataclasses.replace(clf, model=NaNFor(clf.model, VOCAB.index("boring")))


# --------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------


@pytest.fixture
def done_run(tiny_classifier: TextClassifier, tmp_path: Path) -> Path:
    """A finished comparison whose files every bad call below must leave alone."""
    out = tmp_path / "done"
    _api(tiny_classifier, toy_dataset(rationales=False), out)
    return out


def _api(clf: TextClassifier, data: Any, out: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("methods", list(FAKE_METHODS))
    with use_fakes():
        return run_comparison(
            clf, data, out_dir=out, batch_size=3, progress=False, report=False, task="toy", **kwargs
        )


def _rows_with(**change: Any) -> Callable[[], list[dict[str, Any]]]:
    def rows() -> list[dict[str, Any]]:
        out = _good_rows()
        out[3] = {k: v for k, v in {**out[3], **change}.items() if v is not ...}
        return out

    return rows


API_CASES: list[tuple[str, Callable[[], Any], dict[str, Any], type[Exception], str]] = [
    ("empty dataset", lambda: [], {}, EmptyDatasetError, "empty"),
    ("missing text field", _rows_with(text=...), {}, InvalidComparisonError, r"\['text'\]"),
    ("wrong field type", _rows_with(text=3), {}, InvalidComparisonError, "not a string"),
    ("wrong field type", _rows_with(label="pos"), {}, InvalidComparisonError, "not a class"),
    ("empty text", _rows_with(text="  "), {}, InvalidComparisonError, "empty or only whitespace"),
    ("gold label", _rows_with(label=5), {}, InvalidComparisonError, "different tasks"),
    ("unknown method", _good_rows, {"methods": ["dls", "nope"]}, ValueError, "unknown method"),
    (
        "overlong text",
        _rows_with(text="the movie was good " * 20),
        {"truncation": "error"},
        InvalidComparisonError,
        r"1 of 7 example\(s\) are longer than max_length=32 .*idx 103",
    ),
    (
        "token budget",
        _good_rows,
        {"max_length": 65},
        InvalidComparisonError,
        "exceeds the model's 64 position",
    ),
]


@pytest.mark.parametrize(
    ("kind", "data", "kwargs", "error", "message"), API_CASES, ids=[c[0] for c in API_CASES]
)
def test_api_refuses_bad_input_before_any_work(
    done_run: Path,
    tiny_classifier: TextClassifier,
    kind: str,
    data: Callable[[], Any],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    before = _snapshot(done_run)
    with pytest.raises(error, match=message):
        _api(tiny_classifier, data(), done_run, **kwargs)
    assert _snapshot(done_run) == before


def test_api_tokenizer_that_does_not_fit_the_model(
    done_run: Path, tiny_classifier: TextClassifier
) -> None:
    before = _snapshot(done_run)
    clf = dataclasses.replace(tiny_classifier, tokenizer=_big_tokenizer())
    with pytest.raises(
        TokenizerMismatchError, match=r"tokens but the model's input embedding has only \d+ rows"
    ):
        _api(clf, toy_dataset(rationales=False), done_run)
    assert _snapshot(done_run) == before


def test_api_unwritable_output_directory(tiny_classifier: TextClassifier, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with pytest.raises(OutputDirError, match="cannot write to output directory"):
        _api(tiny_classifier, toy_dataset(), blocker / "out")
    assert blocker.read_text() == "in the way"


def test_api_corrupt_rows_file_is_refused_untouched(
    done_run: Path, tiny_classifier: TextClassifier
) -> None:
    path = done_run / results_mod.ROWS_FILE
    lines = path.read_text("utf-8").splitlines()
    lines[2] = lines[2][:20]  # damage in the middle: not what an interruption leaves
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = _snapshot(done_run)
    with pytest.raises(CorruptResultsError, match="line 3"):
        _api(tiny_classifier, toy_dataset(rationales=False), done_run)
    assert _snapshot(done_run) == before


def test_api_nan_logits_stop_the_run_and_keep_the_rows_before(
    tiny_classifier: TextClassifier, tmp_path: Path
) -> None:
    out = tmp_path / "nan"
    with pytest.raises(ModelOutputError, match=r"NaN or inf for example\(s\) idx \[101\]"):
        _api(_nan_classifier(tiny_classifier), toy_dataset(rationales=False), out)
    kept = load_rows(out)
    assert len(kept) == 6 * len(FAKE_METHODS)  # the two batches before the bad one
    assert (out / results_mod.ROWS_FILE).read_text("utf-8").endswith("\n")  # no torn line


def test_api_overlong_text_is_truncated_with_one_warning_and_recorded(
    tiny_classifier: TextClassifier, tmp_path: Path
) -> None:
    rows = _good_rows()
    rows[0]["text"] = "the movie was good " * 20
    rows[4]["text"] = "it was fun " * 30
    with pytest.warns(UserWarning, match=r"2 of 7 example\(s\) are longer") as caught:
        _api(tiny_classifier, rows, tmp_path / "cut")
    assert len([w for w in caught if "longer than" in str(w.message)]) == 1  # warned once
    by_index = {r["index"]: r for r in load_rows(tmp_path / "cut") if r["method"] == "dls"}
    assert by_index[100]["truncated"] and by_index[100]["n_tokens_original"] == 82
    assert len(by_index[100]["tokens"]) == 32
    assert by_index[104]["truncated"] and not by_index[101]["truncated"]
    assert by_index[101]["n_tokens_original"] == len(by_index[101]["tokens"])
    config = json.loads((tmp_path / "cut" / "run.json").read_text("utf-8"))
    assert config["max_length"] == 32 and config["n_truncated"] == 2


def test_data_file_parse_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DataFileError, match="line 2 is not valid JSON"):
        load_jsonl(path)
    path.write_text('{"text": "a", "label": 0}\n\n["a list"]\n', encoding="utf-8")
    with pytest.raises(DataFileError, match="line 3 is a JSON list"):
        load_jsonl(path)
    with pytest.raises(DataFileError, match="cannot read"):
        load_jsonl(tmp_path / "missing.jsonl")
    assert len(load_jsonl(path, limit=1)) == 1


# --------------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_cli_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_classifier: TextClassifier
) -> Path:
    """One good CLI run (report included), made once and copied by :func:`cli_env`."""
    root = tmp_path_factory.mktemp("finished")
    env = {"data": _write_jsonl(root / "data.jsonl", _good_rows()), "out": root / "out"}
    with use_fakes(load_model=lambda name: tiny_classifier):
        assert cli.main(_cli_args(env)) == 0
    return root


@pytest.fixture
def cli_env(
    tiny_classifier: TextClassifier,
    tmp_path: Path,
    finished_cli_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """Fakes, the tiny model behind ``--model tiny``, a good data file and a finished run."""
    models = {"tiny": tiny_classifier}
    shutil.copytree(finished_cli_run, tmp_path, dirs_exist_ok=True)
    patch_fakes(monkeypatch, load_model=lambda name: models.get(name) or load_model(name))
    return {
        "models": models,
        "data": tmp_path / "data.jsonl",
        "out": tmp_path / "out",
        "tmp": tmp_path,
    }


def _cli_args(env: dict[str, Any], *extra: str, data: Path | None = None) -> list[str]:
    return [
        "compare", "--data-file", str(data or env["data"]), "--model", "tiny",
        "--methods", "dls,ixg,random", "--batch-size", "3", "--out", str(env["out"]),
        "--no-progress", "--device", "cpu", *extra,
    ]  # fmt: skip


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    lines = [x for x in err.splitlines() if not x.startswith(("Loading", "Writing"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _bad_data(rows: list[Any]) -> Callable[[dict[str, Any]], list[str]]:
    def argv(env: dict[str, Any]) -> list[str]:
        return _cli_args(env, data=_write_jsonl(env["tmp"] / "bad.jsonl", rows))

    return argv


def _with_rows(**change: Any) -> Callable[[dict[str, Any]], list[str]]:
    return _bad_data(_rows_with(**change)())


def _raw_data(text: str) -> Callable[[dict[str, Any]], list[str]]:
    def argv(env: dict[str, Any]) -> list[str]:
        path = env["tmp"] / "raw.jsonl"
        path.write_text(text, encoding="utf-8")
        return _cli_args(env, data=path)

    return argv


def _extra(*flags: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda env: _cli_args(env, *flags)


def _task(name: str) -> Callable[[dict[str, Any]], list[str]]:
    def argv(env: dict[str, Any]) -> list[str]:
        args = _cli_args(env)
        i = args.index("--data-file")
        args[i : i + 2] = ["--task", name]
        return args

    return argv


def _model(name: str, clf: Callable[[TextClassifier], TextClassifier]) -> Any:
    def argv(env: dict[str, Any]) -> list[str]:
        env["models"][name] = clf(env["models"]["tiny"])
        args = _cli_args(env)
        args[args.index("tiny")] = name
        return args

    return argv


def _lm_head_with_vocab(size: int) -> Callable[[dict[str, Any]], list[str]]:
    def argv(env: dict[str, Any]) -> list[str]:
        path = env["tmp"] / f"mlm{size}"
        BertForMaskedLM(tiny_bert_config(vocab_size=size)).save_pretrained(path)
        return _cli_args(env, "--lm-head", str(path))

    return argv


CLI_CASES: list[tuple[str, Callable[[dict[str, Any]], list[str]], str]] = [
    ("empty dataset", _bad_data([]), "has no examples"),
    ("missing text field", _with_rows(text=...), r"lacks the field(s) ['text']"),
    ("wrong field type", _with_rows(label=1.5), "is not a class index"),
    ("malformed data file", _raw_data('{"text": "a", "label": 0}\n{"text"\n'), "not valid JSON"),
    ("unknown method", _extra("--methods", "dls,nope"), "unknown method 'nope'"),
    ("unknown task", _task("sst3"), "unknown task 'sst3'"),
    ("empty text", _with_rows(text=""), "empty or only whitespace"),
    (
        "overlong text",
        _with_rows(text="good " * 40),
        "longer than max_length=32",
    ),
    ("token budget", _extra("--max-length", "100"), "exceeds the model's 64 position"),
    ("gold label", _with_rows(label=2), "has 2 classes"),
    (
        "tokenizer",
        _model("big-tok", lambda c: dataclasses.replace(c, tokenizer=_big_tokenizer())),
        "does not belong to the model",
    ),
    ("LM head", _lm_head_with_vocab(len(VOCAB) - 5), f"vocabulary of {len(VOCAB) - 5}"),
]


@pytest.mark.parametrize(("kind", "argv", "message"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_and_loses_nothing(
    cli_env: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    kind: str,
    argv: Callable[[dict[str, Any]], list[str]],
    message: str,
) -> None:
    args = argv(cli_env)
    if kind == "overlong text":
        args += ["--truncation", "error"]
    before = _snapshot(cli_env["out"])
    capsys.readouterr()
    assert cli.main(args) == 2
    assert message in _one_error_line(capsys)
    assert _snapshot(cli_env["out"]) == before


def test_cli_unwritable_output_directory(
    cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = cli_env["tmp"] / "a-file"
    blocker.write_text("in the way")
    cli_env["out"] = blocker / "out"
    capsys.readouterr()
    assert cli.main(_cli_args(cli_env)) == 2
    assert "cannot write to output directory" in _one_error_line(capsys)


def test_cli_corrupt_rows_file(cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path = cli_env["out"] / results_mod.ROWS_FILE
    lines = path.read_text("utf-8").splitlines()
    path.write_text("\n".join(lines[:2] + ["{broken"] + lines[2:]) + "\n", encoding="utf-8")
    before = _snapshot(cli_env["out"])
    capsys.readouterr()
    assert cli.main(_cli_args(cli_env)) == 2
    assert "line 3 is not a valid result row" in _one_error_line(capsys)
    assert _snapshot(cli_env["out"]) == before


def test_cli_corrupt_default_model_cache(
    cli_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import captum_layer_saliency.zoo.load as defaults

    def corrupt(task: str, cache_dir: Any = None) -> TextClassifier:
        raise defaults.ArtifactError("/cache/sst2.safetensors is corrupt: sha256 0123...")

    monkeypatch.setattr(defaults, "load_default", corrupt)
    args = _cli_args(cli_env)
    args[args.index("tiny")] = "sst2"
    before = _snapshot(cli_env["out"])
    capsys.readouterr()
    assert cli.main(args) == 2
    assert "default model 'sst2' unusable" in _one_error_line(capsys)
    assert _snapshot(cli_env["out"]) == before


def test_cli_nan_logits_keep_the_rows_before(
    cli_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env["out"] = cli_env["tmp"] / "nan"
    args = _model("nan", _nan_classifier)(cli_env)
    capsys.readouterr()
    assert cli.main(args) == 2
    assert "NaN or inf" in _one_error_line(capsys)
    assert len(load_rows(cli_env["out"])) == 6 * 3


def test_cli_interrupted_mid_run_keeps_its_rows_and_resumes(
    cli_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = [stable(r) for r in load_rows(cli_env["out"])]
    cli_env["out"] = cli_env["tmp"] / "interrupted"
    original, calls = results_mod.RowWriter.write, [0]

    def write(self: results_mod.RowWriter, row: dict[str, Any]) -> None:
        if calls[0] == 4:
            raise KeyboardInterrupt  # Ctrl-C between two rows
        calls[0] += 1
        original(self, row)

    monkeypatch.setattr(results_mod.RowWriter, "write", write)
    assert cli.main(_cli_args(cli_env)) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert len(load_rows(cli_env["out"])) == 4
    monkeypatch.setattr(results_mod.RowWriter, "write", original)
    assert cli.main(_cli_args(cli_env)) == 0
    assert [stable(r) for r in load_rows(cli_env["out"])] == reference


def test_every_kind_is_tried() -> None:
    tried = {c[0] for c in API_CASES} | {c[0] for c in CLI_CASES}
    for kind, where in KINDS.items():
        # A kind is tried here (a case's name starts it) or names the test module that tries it.
        assert any(kind.startswith(t) for t in tried) or "[" in where or "api" in where, kind
    assert len(KINDS) == 21
