"""Issue 22's input and output rules, through the API: each bad input gets a clear error.

One input rule (user text never becomes special tokens, a text with no real token is refused,
masks are 0/1, targets are ints or integer arrays of the batch's length or label names, pairs
are a list of the texts' length, token ids inside the vocabulary), one output rule (NaN/inf in the
model's output or in the LM head is an error naming the example or the parameter), and the files
``load_explanations`` refuses. Each case failed (silently wrong, or an unclear error) before.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import nan_output_copy
from torch import Tensor, nn

from captum_layer_saliency import DecodedLayerSaliency, explain
from captum_layer_saliency.errors import CaptumLayerSaliencyError, ModelOutputError
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.viz.explanation import (
    ExplanationFileError,
    load_explanations,
    save_explanations,
)

TEXT = "the movie was very good"


def _ixg(clf: TextClassifier, texts: list[str], **kw: object) -> list:
    return explain(clf, texts, method="ixg", **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- targets


@pytest.mark.parametrize("target", [1.7, 1.0, np.float64(1.0), True])
def test_a_float_or_bool_target_is_refused(tiny_classifier: TextClassifier, target: object) -> None:
    with pytest.raises(ValueError, match="class index"):
        _ixg(tiny_classifier, [TEXT], target=target)


def test_numpy_integers_and_integer_arrays_are_targets(tiny_classifier: TextClassifier) -> None:
    texts = [TEXT, "boring ."]
    by_int = _ixg(tiny_classifier, texts, target=[0, 1])
    for target in (np.array([0, 1]), torch.tensor([0, 1]), [np.int64(0), np.int32(1)]):
        got = _ixg(tiny_classifier, texts, target=target)
        assert [e.target for e in got] == [0, 1]
        assert [e.scores for e in got] == [e.scores for e in by_int]
    [one] = _ixg(tiny_classifier, [TEXT], target=np.int64(1))
    assert one.target == 1


def test_numpy_targets_in_dls_and_the_registry(tiny_classifier: TextClassifier) -> None:
    """One target rule everywhere: DLS and the registry's methods take NumPy integers too."""
    from captum_layer_saliency.compare.methods.registry import get_method

    enc = tiny_classifier.encode([TEXT, "boring ."])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    dls = DecodedLayerSaliency.for_model(
        tiny_classifier.model, tiny_classifier.lm_head, tiny_classifier.tokenizer, layers=1
    )
    want = dls.attribute(ids, target=[0, 1], attention_mask=mask)
    for target in (np.array([0, 1]), [np.int64(0), np.int64(1)]):
        assert torch.equal(dls.attribute(ids, target=target, attention_mask=mask), want)
    ixg = get_method("ixg", tiny_classifier)
    assert torch.equal(ixg.attribute(ids, mask, np.int64(1)), ixg.attribute(ids, mask, 1))
    with pytest.raises(ValueError, match="float"):
        dls.attribute(ids, target=1.7, attention_mask=mask)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (np.array([0, 1, 1]), "3 targets for 2 texts"),
        (np.array([[0], [1]]), "shape"),
        (np.array([0.0, 1.0]), "float"),
    ],
)
def test_a_target_array_of_another_length_or_kind_is_refused(
    tiny_classifier: TextClassifier, target: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        _ixg(tiny_classifier, [TEXT, "boring ."], target=target)


def test_text_pairs_must_be_a_list_of_the_texts_length(tiny_classifier: TextClassifier) -> None:
    with pytest.raises(ValueError, match="text_pairs must be a list"):
        _ixg(tiny_classifier, ["a", "b", "c"], text_pairs="fun")
    with pytest.raises(ValueError, match="2 text pairs for 3 texts"):
        _ixg(tiny_classifier, ["a", "b", "c"], text_pairs=["x", "y"])


# ----------------------------------------------------------------------------- text


def test_special_tokens_written_in_a_text_stay_text(tiny_classifier: TextClassifier) -> None:
    [e] = _ixg(tiny_classifier, ["good [SEP] bad [PAD] [CLS]"])
    inner = e.tokens[1:-1]
    assert "[SEP]" not in inner and "[PAD]" not in inner and "[CLS]" not in inner
    assert e.tokens[0] == "[CLS]" and e.tokens[-1] == "[SEP]"
    # batched equals one at a time, and encode agrees with token_lengths
    enc = tiny_classifier.encode(["good [SEP] bad"])
    assert int(enc["attention_mask"].sum()) == tiny_classifier.token_lengths(["good [SEP] bad"])[0]


@pytest.mark.parametrize("text", ["\u200b\u200b", "\u200b \ufeff"])
def test_a_text_with_no_real_token_is_refused_like_an_empty_one(
    tiny_classifier: TextClassifier, text: str
) -> None:
    with pytest.raises(ValueError, match="nothing to explain"):
        _ixg(tiny_classifier, [TEXT, text])


# ----------------------------------------------------------------------------- tensors


def test_masks_must_be_zero_or_one(tiny_classifier: TextClassifier) -> None:
    enc = tiny_classifier.encode([TEXT])
    with pytest.raises(ValueError, match="only 0 .* and 1"):
        tiny_classifier.forward_func(enc["input_ids"], enc["attention_mask"] * 0.5)
    dls = DecodedLayerSaliency.for_model(
        tiny_classifier.model, tiny_classifier.lm_head, tiny_classifier.tokenizer, layers=1
    )
    with pytest.raises(ValueError, match="only 0 .* and 1"):
        dls.attribute(enc["input_ids"], target=1, attention_mask=enc["attention_mask"] * 0.5)


def test_token_ids_outside_the_vocabulary_name_the_id_and_the_size(
    tiny_classifier: TextClassifier,
) -> None:
    enc = tiny_classifier.encode([TEXT])
    ids = enc["input_ids"].clone()
    ids[0, 1] = 999
    size = tiny_classifier.model.get_input_embeddings().num_embeddings
    with pytest.raises(ValueError, match=f"token id 999 .* vocabulary of {size} ids"):
        tiny_classifier.forward_func(ids, enc["attention_mask"])
    dls = DecodedLayerSaliency.for_model(
        tiny_classifier.model, tiny_classifier.lm_head, tiny_classifier.tokenizer, layers=1
    )
    with pytest.raises(ValueError, match="token id 999"):
        dls.attribute(ids, target=1, attention_mask=enc["attention_mask"])


class _HiddenThenLogits(nn.Module):
    """A wrapper returning ``(hidden, logits)``: the logits are not first."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple:
        out = self.inner(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.hidden_states[-1], out.logits


def test_a_model_returning_hidden_then_logits_is_a_clear_output_error(
    tiny_classifier: TextClassifier,
) -> None:
    wrapped = TextClassifier(
        model=_HiddenThenLogits(tiny_classifier.model),
        tokenizer=tiny_classifier.tokenizer,
        labels=["negative", "positive"],
    )
    enc = wrapped.encode([TEXT])
    with pytest.raises(ModelOutputError, match=r"logits must come first.*\(batch, classes\)"):
        wrapped.forward_func(enc["input_ids"], enc["attention_mask"])


def test_for_model_without_a_head_is_a_clear_error(tiny_classifier: TextClassifier) -> None:
    with pytest.raises(TypeError, match="lm_head is None"):
        DecodedLayerSaliency.for_model(tiny_classifier.model, None, tiny_classifier.tokenizer)  # type: ignore[arg-type]


def test_dls_on_a_compiled_model(tiny_classifier: TextClassifier) -> None:
    """No truth test on the module (``len()`` of a compiled model raises), and the model runs
    through its own modules: DLS gives the uncompiled model's scores."""
    compiled = torch.compile(tiny_classifier.model)
    enc = tiny_classifier.encode([TEXT])
    args = (tiny_classifier.lm_head, tiny_classifier.tokenizer)
    plain = DecodedLayerSaliency.for_model(tiny_classifier.model, *args, layers=1)
    fast = DecodedLayerSaliency.for_model(compiled, *args, layers=1)
    kw = {"target": 1, "attention_mask": enc["attention_mask"]}
    torch.testing.assert_close(
        fast.attribute(enc["input_ids"], **kw), plain.attribute(enc["input_ids"], **kw)
    )
    # explain, DLS's automatic layer choice included: the compiled model's explanations
    compiled_clf = dataclasses.replace(tiny_classifier, model=compiled)
    texts = [TEXT, "boring ."]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny random head's calibration warnings
        got = explain(compiled_clf, texts, method="dls")
        want = explain(tiny_classifier, texts, method="dls")
    assert [e.scores for e in got] == [e.scores for e in want]


# ----------------------------------------------------------------------------- outputs


@pytest.fixture
def nan_classifier(tiny_classifier: TextClassifier) -> TextClassifier:
    return nan_output_copy(tiny_classifier)


@pytest.mark.parametrize("method", ["ixg", "gradient", "dls"])
def test_nan_logits_are_an_error_for_every_method(
    nan_classifier: TextClassifier, method: str
) -> None:
    with warnings.catch_warnings(), pytest.raises(ModelOutputError, match="NaN or inf"):
        warnings.simplefilter("ignore")  # DLS's calibration warns about the tiny random head
        explain(nan_classifier, [TEXT], method=method)


def test_an_inf_in_the_lm_head_names_the_parameter(tiny_classifier: TextClassifier) -> None:
    head = copy.deepcopy(tiny_classifier.lm_head)
    name, param = next(iter(head.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("inf")
    with pytest.raises(ModelOutputError, match=rf"LM head's parameter '[\w.]*{re.escape(name)}'"):
        DecodedLayerSaliency.for_model(
            tiny_classifier.model, head, tiny_classifier.tokenizer, layers=1
        )


# ----------------------------------------------------------------------------- files


def _line(tmp_path: Path, tiny_classifier: TextClassifier) -> dict:
    [e] = _ixg(tiny_classifier, [TEXT])
    save_explanations(tmp_path / "one.jsonl", [e])
    return json.loads((tmp_path / "one.jsonl").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tokens", "[CLS] the movie [SEP]"),
        ("tokens", [1, 2]),
        ("probability", "high"),
        ("scores", ["x"]),
        ("text", 3),
        ("truncated", "no"),
    ],
)
def test_load_explanations_checks_field_types(
    tmp_path: Path, tiny_classifier: TextClassifier, field: str, value: object
) -> None:
    data = _line(tmp_path, tiny_classifier)
    data[field] = value
    (tmp_path / "bad.jsonl").write_text(json.dumps(data) + "\n", encoding="utf-8")
    with pytest.raises(ExplanationFileError, match=f"line 1: field '{field}'"):
        load_explanations(tmp_path / "bad.jsonl")


def test_load_explanations_refuses_deep_nesting(tmp_path: Path) -> None:
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(ExplanationFileError, match="line 1"):
        load_explanations(tmp_path / "deep.jsonl")


def test_every_error_derives_from_the_one_base() -> None:
    from captum_layer_saliency.cli.common import CLIError
    from captum_layer_saliency.compare import InvalidComparisonError, OutputDirError
    from captum_layer_saliency.data.jsonl import DataFileError

    for kind in (CLIError, InvalidComparisonError, OutputDirError, DataFileError):
        assert issubclass(kind, CaptumLayerSaliencyError)
    assert issubclass(ModelOutputError, ValueError)  # ``except ValueError`` keeps working


def test_compare_refuses_a_text_with_no_real_token(
    tiny_classifier: TextClassifier, tmp_path: Path
) -> None:
    from compare_fakes import toy_dataset

    from captum_layer_saliency.compare import InvalidComparisonError, run_comparison

    data = toy_dataset([TEXT, "\u200b\u200b"], rationales=False)
    with pytest.raises(InvalidComparisonError, match=r"example 1 \(idx 101\).*no token"):
        run_comparison(tiny_classifier, data, ["ixg"], tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "rows.jsonl").exists()


def test_calibration_texts_never_become_special_tokens(tiny_classifier: TextClassifier) -> None:
    """DLS's calibration texts are user text too: a typed [SEP] or [CLS] stays text."""
    tok = tiny_classifier.tokenizer
    seen: list[Tensor] = []

    class Recording:
        def __getattr__(self, name: str) -> object:
            return getattr(tok, name)

        def __call__(self, *args: object, **kwargs: object) -> object:
            enc = tok(*args, **kwargs)
            seen.append(enc["input_ids"])
            return enc

    texts = ["good [SEP] bad [CLS] fun [PAD] film"] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DecodedLayerSaliency.for_model(
            tiny_classifier.model, tiny_classifier.lm_head, Recording(), calibration_texts=texts
        )
    assert seen, "the calibration texts were not tokenised through the tokenizer given"
    special = {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id}
    for ids in seen:
        inner = ids[:, 1:-1]  # one example length: no padding; [CLS] ... [SEP] around the text
        assert not any(int(i) in special for i in inner.flatten()), ids
