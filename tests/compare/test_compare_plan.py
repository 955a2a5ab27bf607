"""compare: the plan printed before any work, and CSV/TSV data files with label names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from compare_fakes import patch_fakes
from conftest import SENTENCES

from captum_layer_saliency.cli import app as cli
from captum_layer_saliency.compare.methods import get_method
from captum_layer_saliency.compare.plan import (
    dls_cost,
    dls_layers,
    format_plan,
    method_passes,
    metric_passes,
    plan_comparison,
)
from captum_layer_saliency.data.jsonl import DataFileError
from captum_layer_saliency.data.table import label_indices, read_table
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.passes import PassCounter


def test_method_passes_by_hand() -> None:
    assert method_passes("input_x_gradient", 10) == 1
    assert method_passes("integrated_gradients", 10) == 25
    assert method_passes("integrated_gradients", 10, {"n_steps": 50}) == 50
    assert method_passes("shapley_sampling", 10) == 25 * 10 + 1
    assert method_passes("occlusion", 10) == 1 + 8  # windows of 3 at stride 1, plus the input
    assert method_passes("dls_layer3", 10) == pytest.approx(2.0)  # 1 + 3/6 + 1 x 3/6
    assert method_passes("dls_gradient", 10) == 1
    assert method_passes("dls", 10) == pytest.approx(2.0)  # block 5 of 6, stated approximation
    assert method_passes("dls_ig", 10) == pytest.approx(1 + 5 / 6 + 2 / 6)
    assert method_passes("dls_ig", 10, {"n_steps": 4}) == pytest.approx(1 + 5 / 6 + 4 / 6)
    assert method_passes("dls", 10, {"layer_baseline": "zeros"}) == pytest.approx(1 + 1 / 6)
    assert method_passes("dls", 10, layer=(2, 4)) == pytest.approx(1 + 2 / 4 + 2 / 4)
    # Low in a deep model, the input's forward stops at the layer (compare names the class).
    assert method_passes("dls", 10, layer=(2, 30)) == pytest.approx(2 / 30 + 2 / 30 + 1)
    assert math.isnan(method_passes("my_own_method", 10))
    assert metric_passes("comprehensiveness", 10) == 5  # the five ERASER bins
    assert metric_passes("deletion_auc", 10) == 11
    assert metric_passes("token_f1", 10) == 0


@pytest.mark.filterwarnings("ignore:the LM head decodes")  # the tiny model's random head
@pytest.mark.parametrize("name", ["dls", "dls_gradient", "dls_ig", "dls_layer1"])
def test_the_dls_plan_is_the_measured_passes(tiny_classifier: TextClassifier, name: str) -> None:
    """Every DLS variant's planned forwards equal what PassCounter measures, per example."""
    clf = tiny_classifier
    attributor = get_method(name, clf, calibration=len(SENTENCES))
    attributor.prepare(SENTENCES)  # the one-off layer choice, as compare makes it first
    enc = clf.encode(SENTENCES)
    with torch.no_grad():  # the prediction is shared by every method, apart from its passes
        target = clf.forward_func(enc["input_ids"], enc["attention_mask"]).argmax(-1)
    with PassCounter(clf.model) as counter:
        attributor.attribute(enc["input_ids"], enc["attention_mask"], target)
    measured = counter.per_example(len(SENTENCES))
    layers = dls_layers(clf.model, [name])
    explainer = attributor.explainer
    if explainer.selection_ is not None:  # chosen by the calibration, so known to the plan now
        layers[name] = (explainer.selection_.layer, layers[name][1])
    plan = plan_comparison([name], [], [5] * len(SENTENCES), None, layers)
    assert plan.methods[name] / len(SENTENCES) == pytest.approx(measured["forwards"])
    assert explainer.last_cost_["forwards"] == pytest.approx(measured["forwards"])
    assert dls_cost(name, None, layers[name]) == pytest.approx(explainer.last_cost_)


def test_the_plan_adds_up_and_names_the_one_off_costs() -> None:
    metrics = ["comprehensiveness", "deletion_auc", "kendall_tau_loo"]
    plan = plan_comparison(["dls", "shapley_sampling"], metrics, [4, 6])
    assert plan.methods == {"dls": 4, "shapley_sampling": (25 * 4 + 1) + (25 * 6 + 1)}
    assert plan.metrics["comprehensiveness"] == 2 * 5 * 2  # examples x bins x methods
    assert plan.metrics["deletion_auc"] == (5 + 7) * 2
    assert plan.shared == 2 + 4 + 6  # predictions + leave-one-out, once for all methods
    assert plan.total == 4 + 252 + 20 + 24 + 12
    text = format_plan(plan, task="toy", model="tiny")
    lines = text.splitlines()
    assert lines[0] == "plan: 2 examples of toy (mean 5.0 scored tokens) with tiny"
    assert "shapley_sampling 252 · dls 4" in lines[1]  # most expensive first
    assert "total ≈ 312 forward passes" in text
    assert "one-off, dls: " in text
    own = plan_comparison(["mine"], [], [3], {"mine": {"one_off": "fits a thing once"}})
    assert "mine ?" in format_plan(own) and "one-off, mine: fits a thing once" in format_plan(own)


def test_tables_by_suffix(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text('text,label\n"hi, there",positive\n\n"x ""q""",0\n', encoding="utf-8")
    assert read_table(csv) == [
        {"text": "hi, there", "label": "positive"},
        {"text": 'x "q"', "label": "0"},
    ]
    tsv = tmp_path / "a.tsv"
    tsv.write_text("idx\ttext\tlabel\n7\tgood\tNegative\n", encoding="utf-8")
    rows = label_indices(read_table(tsv), ["negative", "positive"])
    assert rows == [{"idx": 7, "text": "good", "label": 0}]
    txt = tmp_path / "a.txt"
    txt.write_text("one\n\ntwo\n", encoding="utf-8")
    assert read_table(txt, limit=1) == [{"text": "one"}]
    with pytest.raises(DataFileError, match="neither a class index nor one of the model's"):
        label_indices([{"text": "x", "label": "neutral"}], ["negative", "positive"])
    (tmp_path / "e.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataFileError, match="no header row"):
        read_table(tmp_path / "e.csv")


def test_compare_takes_a_csv_with_label_names_and_prints_its_plan(
    tiny_classifier: TextClassifier,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    patch_fakes(monkeypatch, load_model=lambda name: tiny_classifier)
    data = tmp_path / "mine.csv"
    data.write_text(
        "text,label\nthe movie was very good,positive\nboring .,NEGATIVE\nfun !,1\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    args = ["compare", "--data-file", str(data), "--model", "tiny", "--methods", "ixg"]
    assert cli.main([*args, "--out", str(out), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "plan: 3 examples of file:mine.csv" in err
    config = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert config["n_examples"] == 3
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["label"] for r in rows) == [0, 1, 1]
    data.write_text("text,label\ngood,neutral\n", encoding="utf-8")
    assert cli.main([*args, "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "'neutral' is neither a class index" in capsys.readouterr().err
