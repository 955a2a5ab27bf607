"""The comparison harness: rows, resume, seeding, sharding, summary statistics and the report."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from compare_fakes import FAKE_METHODS, METRICS, stable, toy_dataset, use_fakes
from transformers import BertTokenizer

from captum_layer_saliency import metrics
from captum_layer_saliency.compare import (
    ConfigMismatchError,
    CorruptResultsError,
    bootstrap_ci,
    load_rows,
    merge_shards,
    read_rows,
    run_comparison,
    summarize,
    word_rationale_to_tokens,
    write_report,
)
from captum_layer_saliency.compare import results as results_mod
from captum_layer_saliency.compare.batches import batch_plan
from captum_layer_saliency.compare.methods import METHODS
from captum_layer_saliency.models.classifier import TextClassifier

HOSTILE = "<script>alert(1)</script>"


def _run(clf: TextClassifier, out: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("batch_size", 3)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("report", False)  # drawing the plots is slow; test_report_files covers it
    with use_fakes():
        return run_comparison(clf, toy_dataset(), list(FAKE_METHODS), out, task="toy", **kwargs)


def _lines(out: Path) -> list[str]:
    return (out / results_mod.ROWS_FILE).read_text(encoding="utf-8").splitlines()


def _stable_rows(out: Path) -> list[dict[str, Any]]:
    return [stable(r) for r in load_rows(out)]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, tiny_classifier: TextClassifier):
    """One uninterrupted run (with the report), shared by the tests that compare against it."""
    return _run(tiny_classifier, tmp_path_factory.mktemp("reference"), report=True)


def test_rows_have_the_documented_fields(reference_run: Path) -> None:
    rows = load_rows(reference_run)
    assert len(rows) == len(toy_dataset()) * len(FAKE_METHODS)
    row = rows[0]
    for field in (
        "index", "method", "input_ids", "tokens", "target", "label", "prediction",
        "attributions", "metrics", "seconds", "forwards", "backwards", "rationale", "curves",
    ):  # fmt: skip
        assert field in row, field
    assert row["index"] >= 100  # the dataset's idx, not the position
    assert len(row["tokens"]) == len(row["input_ids"]) == len(row["attributions"])
    assert row["target"] == row["prediction"]
    assert set(row["metrics"]) == set(METRICS)  # all of them: the toy data has rationales
    # Specials carry no attribution and are never part of a rationale.
    assert row["attributions"][0] == 0.0 and row["tokens"][0] == "[CLS]"
    assert row["rationale"][0] == 0 and row["rationale"][-1] == 0
    by_method = {r["method"]: r for r in rows if r["index"] == row["index"]}
    assert by_method["dls"]["backwards"] > 0 and by_method["dls"]["forwards"] > 0
    config = json.loads((reference_run / "run.json").read_text())
    assert config["task"] == "toy" and config["model"] == "tiny-bert" and config["seed"] == 0
    assert config["labels"] == ["negative", "positive"]


def test_resume_after_interruption_gives_exactly_the_uninterrupted_rows(
    tiny_classifier: TextClassifier,
    tmp_path: Path,
    reference_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = results_mod.RowWriter.write
    calls = {"n": 0}

    def crashing_write(self: results_mod.RowWriter, row: dict[str, Any]) -> None:
        # Die in the middle of a batch (batch 0 of 3 examples x 3 methods = 9 rows).
        if calls["n"] == 5:
            raise KeyboardInterrupt
        calls["n"] += 1
        original(self, row)

    monkeypatch.setattr(results_mod.RowWriter, "write", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_classifier, tmp_path)
    assert len(_lines(tmp_path)) == 5

    monkeypatch.setattr(results_mod.RowWriter, "write", original)
    _run(tiny_classifier, tmp_path)
    lines = _lines(tmp_path)
    keys = [results_mod.row_key(json.loads(line)) for line in lines]
    assert len(keys) == len(set(keys)) == len(toy_dataset()) * len(FAKE_METHODS)
    assert _stable_rows(tmp_path) == _stable_rows(reference_run)

    # A third run has nothing left to do and writes nothing.
    _run(tiny_classifier, tmp_path)
    assert _lines(tmp_path) == lines


def test_a_torn_last_line_is_repaired_and_its_row_recomputed(
    tiny_classifier: TextClassifier, tmp_path: Path, reference_run: Path
) -> None:
    _run(tiny_classifier, tmp_path)
    path = tmp_path / results_mod.ROWS_FILE
    lines = _lines(tmp_path)
    # Drop the last two rows and leave half of one of them, as a crash mid-write would.
    path.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][: len(lines[-2]) // 2], "utf-8")
    with pytest.warns(UserWarning, match="damaged last line"):
        _run(tiny_classifier, tmp_path)
    assert _stable_rows(tmp_path) == _stable_rows(reference_run)
    assert len(_lines(tmp_path)) == len(lines)


def test_read_rows_edge_cases(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    assert read_rows(path) == []
    # A complete last row without its newline is kept, and the newline added on repair.
    path.write_text('{"index": 1, "method": "a"}\n{"index": 2, "method": "a"}', "utf-8")
    assert [r["index"] for r in read_rows(path, repair=True)] == [1, 2]
    assert path.read_text("utf-8").endswith("}\n")
    # Damage before the last line is not guessed at.
    path.write_text('{"index": 1, "method": "a"}\nnot json\n{"index": 2, "method": "a"}\n')
    with pytest.raises(CorruptResultsError, match="line 2"):
        read_rows(path)
    # Without repair the file is left alone.
    path.write_text('{"index": 1, "method": "a"}\n{"index": 2, "me', "utf-8")
    with pytest.warns(UserWarning):
        assert len(read_rows(path)) == 1
    assert path.read_text("utf-8").endswith('"me')


def test_seeded_reruns_are_identical_and_the_seed_matters(
    tiny_classifier: TextClassifier, tmp_path: Path, reference_run: Path
) -> None:
    # Disturb the global RNGs: the runner must seed per (batch, method), not rely on them.
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    again = _run(tiny_classifier, tmp_path / "again")
    assert _stable_rows(again) == _stable_rows(reference_run)
    other = _run(tiny_classifier, tmp_path / "other", seed=1)
    rand = [r["attributions"] for r in load_rows(other) if r["method"] == "random"]
    ref = [r["attributions"] for r in load_rows(reference_run) if r["method"] == "random"]
    assert rand != ref


def test_a_different_config_is_refused(
    tiny_classifier: TextClassifier, reference_run: Path
) -> None:
    before = _lines(reference_run)
    with pytest.raises(ConfigMismatchError, match=r"seed: 0 -> 1.*another --out"):
        _run(tiny_classifier, reference_run, seed=1)
    with pytest.raises(ConfigMismatchError, match="limit"):
        _run(tiny_classifier, reference_run, limit=2)
    assert _lines(reference_run) == before


def test_sharded_runs_merge_into_the_unsharded_rows(
    tiny_classifier: TextClassifier, tmp_path: Path, reference_run: Path
) -> None:
    for rank in range(2):
        _run(tiny_classifier, tmp_path, shard=(rank, 2))
    assert (tmp_path / "rows.rank0.jsonl").is_file() and (tmp_path / "rows.rank1.jsonl").is_file()
    assert _stable_rows(tmp_path) == _stable_rows(reference_run)  # readable before merging
    merge_shards(tmp_path)
    assert not list(tmp_path.glob("rows.rank*.jsonl"))
    assert _stable_rows(tmp_path) == _stable_rows(reference_run)


def test_batch_plan_is_length_sorted_and_complete() -> None:
    texts = ["a", "abc", "ab", "abcd", "b"]
    plan = batch_plan(texts, 2)
    assert plan == [[3, 1], [2, 0], [4]]
    with pytest.raises(ValueError):
        batch_plan(texts, 0)


def test_word_rationales_map_onto_subword_tokens() -> None:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "fun", "##ny", "movie", "."]
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    text = "the funny movie."
    ids = tok(text)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "the", "fun", "##ny", "movie", ".", "[SEP]"]
    labels = word_rationale_to_tokens(tok, text, ["the", "funny", "movie."], [0, 1, 1], ids)
    assert labels == [0, 0, 1, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="rationale labels"):
        word_rationale_to_tokens(tok, text, ["the"], [0, 1], ids)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    values = np.random.default_rng(0).normal(1.0, 1.0, size=200)
    mean, low, high = bootstrap_ci(values, seed=3)
    assert low < mean < high and mean == pytest.approx(values.mean())
    assert bootstrap_ci(values, seed=3) == (mean, low, high)
    assert bootstrap_ci([2.0]) == (2.0, 2.0, 2.0)
    assert all(np.isnan(bootstrap_ci([float("nan")])))


def test_bootstrap_ci_by_hand() -> None:
    # Resampled means of [0, 1] are 0, 1/2 or 1 (with chances 1/4, 1/2, 1/4): the 95 % percentile
    # interval is [0, 1]; a constant sample has a zero-width one; non-finite values are dropped.
    assert bootstrap_ci([0.0, 1.0], n_boot=4000, seed=0) == (0.5, 0.0, 1.0)
    assert bootstrap_ci([3.0, 3.0, 3.0, float("inf")]) == (3.0, 3.0, 3.0)


def test_bootstrap_ci_keeps_the_numbers_of_the_hand_written_resampler() -> None:
    """scipy's percentile bootstrap, seeded alike, draws what the package's own loop drew."""
    values = np.random.default_rng(5).normal(size=1821)
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, values.size, size=(2000, values.size))].mean(axis=1)
    want = (values.mean(), *np.quantile(means, [0.025, 0.975]))
    assert bootstrap_ci(values, n_boot=2000, seed=3) == pytest.approx(want, rel=1e-12)


def test_summary_ignores_row_order(reference_run: Path) -> None:
    rows = load_rows(reference_run)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    a, b = summarize(rows), summarize(shuffled + rows[:3])  # duplicates are ignored too
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["reference"] == "dls"
    assert a["methods"]["input_x_gradient"]["cost_ratio"] == pytest.approx(1.0)
    assert a["higher_is_better"]["sufficiency"] is False
    assert set(a["paired"]) == {"input_x_gradient", "random"}
    diff = a["paired"]["random"]["comprehensiveness"]
    assert diff["low"] <= diff["mean"] <= diff["high"] and diff["n"] == len(toy_dataset())


def test_report_files(reference_run: Path) -> None:
    for name in (
        "summary.md", "summary.csv", "summary.json", "report.html",
        "aopc_curves.png", "cost_vs_faithfulness.png",
    ):  # fmt: skip
        assert (reference_run / name).is_file(), name
    md = (reference_run / "summary.md").read_text("utf-8")
    assert "comprehensiveness ↑" in md and "sufficiency ↓" in md and "Paired differences" in md
    header = (reference_run / "summary.csv").read_text("utf-8").splitlines()[0]
    assert "comprehensiveness_low" in header and "cost_ratio" in header
    summary = json.loads((reference_run / "summary.json").read_text("utf-8"))
    assert summary["config"]["task"] == "toy" and summary["n_boot"] == 1000


def test_the_report_escapes_hostile_text_and_labels(
    tiny_classifier: TextClassifier, tmp_path: Path
) -> None:
    clf = dataclasses.replace(tiny_classifier, labels=[HOSTILE, 'pos" onmouseover="x'])
    texts = [f"the movie {HOSTILE} was good", "boring ."]
    with use_fakes():
        run_comparison(
            clf, toy_dataset(texts), ["dls"], tmp_path, batch_size=2, progress=False, task=HOSTILE
        )
    page = (tmp_path / "report.html").read_text("utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'onmouseover="x' not in page
    assert "Content-Security-Policy" in page


def test_report_without_rows_is_a_clear_error(tmp_path: Path) -> None:
    from captum_layer_saliency.compare import NoResultsError

    with pytest.raises(NoResultsError, match="no result rows"):
        write_report(tmp_path)


@pytest.mark.slow
def test_against_the_real_registries(tiny_classifier: TextClassifier, tmp_path: Path) -> None:
    methods = [m for m in ("input_x_gradient", "random") if m in METHODS]
    if not methods:
        pytest.skip("neither input_x_gradient nor random is registered")
    data = toy_dataset(["the movie was very good", "boring .", "a great film"])
    run_comparison(tiny_classifier, data, methods, tmp_path / "a", batch_size=2, progress=False)
    run_comparison(tiny_classifier, data, methods, tmp_path / "b", batch_size=2, progress=False)
    rows = load_rows(tmp_path / "a")
    assert len(rows) == 3 * len(methods)
    assert [stable(r) for r in rows] == [stable(r) for r in load_rows(tmp_path / "b")]
    assert (tmp_path / "a" / "summary.md").is_file()


def test_aopc_metrics_are_the_mean_of_the_curves(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Any]
) -> None:
    """The runner takes comprehensiveness/sufficiency from the curves; they must agree."""
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    special = tiny_classifier.special_mask(ids)
    scores = torch.randn(ids.shape)
    args = (tiny_classifier.forward_func, ids, mask, scores, tiny_batch["target"], special)
    curves = metrics.aopc_curves(*args)
    for name in ("comprehensiveness", "sufficiency"):
        direct = metrics.METRICS[name].fn(*args)
        assert curves[name].mean(-1).tolist() == pytest.approx(direct.tolist())


def test_leave_one_out_is_computed_once_per_batch_and_shared_by_the_methods(
    tiny_classifier: TextClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kendall τ's leave-one-out does not depend on the method: one pass per batch, same τ."""
    calls = []
    original = metrics.leave_one_out

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(metrics, "leave_one_out", counting)
    data = toy_dataset(["the movie was very good", "boring .", "a great film"])
    methods = ["input_x_gradient", "saliency", "random"]
    run_comparison(
        tiny_classifier,
        data,
        methods,
        tmp_path,
        metrics=["kendall_tau_loo"],
        batch_size=2,
        progress=False,
        report=False,
    )
    assert sorted(calls) == [1, 2]  # two batches, whatever the number of methods
    rows = load_rows(tmp_path)
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        mask = torch.ones_like(ids)
        scores = torch.tensor([[0.0 if a is None else a for a in row["attributions"]]])
        tau = metrics.kendall_tau_loo(
            tiny_classifier.forward_func,
            ids,
            mask,
            scores,
            torch.tensor([row["target"]]),
            tiny_classifier.special_mask(ids),
        )
        expected = row["metrics"]["kendall_tau_loo"]
        if expected is None:
            assert torch.isnan(tau).all()
        else:
            assert tau.item() == pytest.approx(expected, abs=1e-6)
