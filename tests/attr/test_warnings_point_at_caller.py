"""Every user-facing warning names the user's line, not the package's, however deep the call:
DLS directly, through a registry method, through ``explain`` or a metric."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import SENTENCES
from tiny_models import ToyClassifier, toy_head

from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency._utils import user_stacklevel, warn_user
from captum_layer_saliency.compare.methods import get_method
from captum_layer_saliency.explaining import explain

IDS = torch.tensor([[0, 1, 2, 1]])  # [CLS] a b a


def _all_here(record: pytest.WarningsRecorder) -> None:
    assert len(record) > 0
    assert [(w.filename, str(w.message)[:40]) for w in record] == [
        (__file__, str(w.message)[:40]) for w in record
    ]


def test_a_random_head_warns_at_the_callers_line(tiny_classifier) -> None:
    clf = tiny_classifier
    with pytest.warns(UserWarning, match="decodes at most .* of the input tokens") as record:
        DecodedLayerSaliency.for_model(
            clf.model, clf.lm_head, clf.tokenizer, calibration_texts=SENTENCES * 3
        )
    _all_here(record)


def test_the_zero_baseline_fallback_warns_at_the_callers_line() -> None:
    model = ToyClassifier().eval()
    bare = DecodedLayerSaliency(model, model.emb, toy_head(), special_token_ids=[0])
    with pytest.warns(UserWarning, match="padding token id is unknown") as record:
        bare.attribute(IDS, target=0)
    _all_here(record)


def test_training_mode_warns_at_the_callers_line(tiny_classifier, tiny_batch) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    tiny_classifier.model.train()
    try:
        with pytest.warns(UserWarning, match="training mode: dropout") as record:
            get_method("saliency", tiny_classifier).attribute(ids, mask, 0)
        _all_here(record)
    finally:
        tiny_classifier.model.eval()


def test_warnings_inside_explain_point_at_its_caller(tiny_classifier) -> None:
    with pytest.warns(UserWarning, match="longer than 6 tokens were truncated") as record:
        explain(
            tiny_classifier,
            SENTENCES[:2],
            method="input_x_gradient",
            max_length=6,
            truncation="truncate",
        )
    _all_here(record)


def test_user_stacklevel_skips_only_the_package() -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warn_user("here")
    assert record[0].filename == __file__
    assert user_stacklevel() == 1  # called from the user's own code: its own frame
