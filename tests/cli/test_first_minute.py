"""A new user's first minute: fast ``--help``, one truncation default, label names, no torch.

``--help`` and ``list-methods`` must not import torch, transformers or Captum (checked in a
fresh interpreter's ``sys.modules``); ``explain`` and ``compare`` share one truncation default
and one wording of the option; a classifier built from a model takes its label names from the
model's config.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_bert_config
from transformers import BertForSequenceClassification

from captum_layer_saliency import explain
from captum_layer_saliency._options import DEFAULT_TRUNCATION
from captum_layer_saliency.cli import app as cli
from captum_layer_saliency.cli import common
from captum_layer_saliency.cli.method_table import METHOD_TABLE
from captum_layer_saliency.cli.parser import build_parser
from captum_layer_saliency.compare.methods import registry as method_registry
from captum_layer_saliency.compare.runner import run_comparison
from captum_layer_saliency.explaining import explain_batch
from captum_layer_saliency.models.classifier import TextClassifier, config_labels

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "captum", "datasets")

_PROBE = """
import json, runpy, sys
sys.argv = ["captum_layer_saliency", *json.loads(sys.argv[1])]
try:
    runpy.run_module("captum_layer_saliency", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted({m.split(".")[0] for m in sys.modules}
                  & set(json.loads(sys.argv[-1])))}))
"""


def _probe(argv: list[str]) -> dict[str, object]:
    """Run ``python -m captum_layer_saliency ARGV`` in a fresh interpreter; what it imported."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE.replace("sys.argv[-1]", repr(json.dumps(HEAVY))),
            json.dumps(argv),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1]
    return {**json.loads(last), "stdout": done.stdout}


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["list-methods"], ["explain", "--help"], ["compare", "--help"], ["--version"]],
    ids=" ".join,
)
def test_help_and_listings_import_no_heavy_library(argv: list[str]) -> None:
    result = _probe(argv)
    assert result["code"] in (0, None), result["stdout"]
    assert result["heavy"] == [], f"{' '.join(argv)} imported {result['heavy']}"


def test_importing_the_package_imports_no_torch() -> None:
    code = "import sys, captum_layer_saliency as c; print('torch' in sys.modules, c.__version__)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.split()[0] == "False"


def test_public_names_load_on_first_use() -> None:
    import captum_layer_saliency as package
    from captum_layer_saliency import _public

    exported = {n for n in vars(_public) if not n.startswith("_") and n != "annotations"}
    assert sorted(package.__all__) == sorted([*exported, "__version__"])
    for name in package.__all__:
        assert getattr(package, name) is not None
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = package.nothing_here


def test_list_methods_prints_the_registry() -> None:
    live = cli.registry_table(method_registry.METHODS, method_registry.ALIASES)
    assert live == METHOD_TABLE, (
        "captum_layer_saliency/cli/method_table.py is out of date; its table is now:\n"
        + "\n".join(f"    {row!r}," for row in live)
    )


def test_list_methods_output_is_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list-methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [row[0] for row in METHOD_TABLE]
    assert "(also: ig, lig)" in next(line for line in lines if line.startswith("integrated_"))


def _subparser(name: str) -> object:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]  # type: ignore[attr-defined]


def _option(command: str, flag: str) -> object:
    return next(a for a in _subparser(command)._actions if flag in a.option_strings)  # type: ignore[attr-defined]


def test_one_truncation_default_and_wording() -> None:
    for command in ("explain", "compare", "demo"):
        assert _option(command, "--truncation").default == DEFAULT_TRUNCATION  # type: ignore[attr-defined]
    for flag in ("--truncation", "--max-length"):
        helps = {_option(c, flag).help for c in ("explain", "compare", "demo")}  # type: ignore[attr-defined]
        assert len(helps) == 1, helps
    for function in (explain, explain_batch, run_comparison):
        assert inspect.signature(function).parameters["truncation"].default == DEFAULT_TRUNCATION


def test_explain_takes_an_ordinary_long_review_by_default(
    tiny_classifier: TextClassifier,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    review = " ".join(["the movie was very good but boring ."] * 20)  # 160 words, budget 32
    monkeypatch.setattr(common, "load_model", lambda name: tiny_classifier)
    with pytest.warns(UserWarning, match="truncated"):
        assert cli.main(["explain", review, "--method", "ixg"]) == 0
    assert "[0]" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="truncated"):
        [e] = explain(tiny_classifier, review, method="ixg")
    assert e.truncated
    with pytest.raises(ValueError, match="more than max_length=32"):
        explain(tiny_classifier, review, method="ixg", truncation="error")
    # refused on the command line, the error names the command line's option
    argv = ["explain", review, "--method", "ixg", "--truncation", "error"]
    assert cli.main(argv) == 2
    assert "--truncation truncate" in capsys.readouterr().err


def _model(id2label: dict[int, str]) -> BertForSequenceClassification:
    config = tiny_bert_config(num_labels=len(id2label))
    config.id2label = id2label
    config.label2id = {v: k for k, v in id2label.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return BertForSequenceClassification(config).eval()


def test_label_names_come_from_the_models_config(tiny_classifier: TextClassifier) -> None:
    model = _model({0: "sad", 1: "happy"})
    clf = TextClassifier(model=model, tokenizer=tiny_classifier.tokenizer, max_length=32)
    assert clf.labels == ["sad", "happy"]
    [e] = explain(clf, "the movie was very good", method="ixg")
    assert e.predicted_label in ("sad", "happy") and e.target_label == e.predicted_label
    assert clf.predict(["boring ."])[0] in ("sad", "happy")
    # explicit labels win; a config without names for every index gives none
    assert TextClassifier(model=model, tokenizer=None, labels=["n", "p"]).labels == ["n", "p"]
    assert config_labels(torch.nn.Linear(2, 2)) == []
    model.config.id2label = {0: "a", 2: "c"}
    assert config_labels(model) == []


def test_no_help_names_a_projects_own_data_folder() -> None:
    for command in ("compare", "demo", "explain", "build-defaults"):
        text = _subparser(command).format_help()  # type: ignore[attr-defined]
        assert "shared" not in text, command
